"""The package as pip users get it: sdist and wheel, `twine check`, installed into a clean venv.

Offline and fast: `python -m build --no-isolation` uses the setuptools of this environment, and the
clean venv sees only mergegate's runtime dependency closure (linked from this environment, torch
included: no second copy of the CPU torch, no download), never the test extra. pip then installs
the wheel there with `--no-index`, `pip check` verifies the wheel's requirements against that
closure, and every mergegate module is imported in it (a test-only import would fail).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import mergegate

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
TEST_ONLY = ("mergekit", "pytest", "hypothesis", "zizmor", "twine")

pytestmark = pytest.mark.slow


def _run(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                               "PYTHONDONTWRITEBYTECODE": "1", **(env or {})})
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdist, then the wheel built from the sdist (what `python -m build` does), from a copy of the tree."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "mergegate", src / "mergegate", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src))
    return out


def _only(folder: Path, pattern: str) -> Path:
    (path,) = folder.glob(pattern)
    return path


def test_twine_check_passes(dist: Path) -> None:
    twine = Path(sys.executable).with_name("twine")
    proc = _run(str(twine), "check", "--strict", *map(str, sorted(dist.iterdir())))
    assert proc.stdout.count("PASSED") == 2


def test_metadata_license_version_and_package_data(dist: Path) -> None:
    wheel = zipfile.ZipFile(_only(dist, "*.whl"))
    names = set(wheel.namelist())
    version = mergegate.__version__
    meta = wheel.read(f"mergegate-{version}.dist-info/METADATA").decode()
    assert f"\nVersion: {version}\n" in meta
    assert "\nLicense-Expression: Apache-2.0\n" in meta and "License :: " not in meta
    assert f"mergegate-{version}.dist-info/licenses/LICENSE" in names
    assert "Project-URL: Homepage, https://github.com/mergegate/mergegate" in meta
    assert meta.count("\nClassifier: ") >= 10
    # every package-data glob matches a real file, and the wheel ships it
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for glob in pyproject["tool"]["setuptools"]["package-data"]["mergegate"]:
        matches = sorted((ROOT / "mergegate").glob(glob))
        assert matches, f"package-data glob '{glob}' matches nothing"
        for match in matches:
            assert f"mergegate/{match.relative_to(ROOT / 'mergegate').as_posix()}" in names
    # the version is written once: pyproject reads it from mergegate/__init__.py
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    sdist = tarfile.open(_only(dist, "*.tar.gz"))
    assert {f"mergegate-{version}/LICENSE", f"mergegate-{version}/README.md"} <= set(sdist.getnames())


def _requirements(dist_name: str, extras: frozenset[str]) -> list[tuple[str, frozenset[str]]]:
    """What ``dist_name`` (with ``extras``) requires on this platform."""
    from packaging.requirements import Requirement

    environments = [{"extra": e} for e in sorted(extras)] or [{"extra": ""}]
    out = []
    for text in metadata.requires(dist_name) or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate(env) for env in environments):
            out.append((req.name, frozenset(req.extras)))
    return out


def _runtime_closure(wheel_meta: str) -> set[str]:
    """The distributions mergegate's wheel needs at run time (no extras), found in this environment."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    todo = []
    for line in wheel_meta.splitlines():
        if line.startswith("Requires-Dist: "):
            req = Requirement(line.removeprefix("Requires-Dist: "))
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append((req.name, frozenset(req.extras)))
    seen: set[str] = set()
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if (key, extras) in seen:
            continue
        seen.add((key, extras))
        todo.extend(_requirements(name, extras))
    return {k for k, _ in seen}


def _link_closure(names: set[str], site: Path) -> None:
    """Symlink each distribution's top-level files (and its metadata) into ``site``."""
    for name in sorted(names):
        dist = metadata.distribution(name)
        tops: set[str] = set()
        for file in dist.files or []:
            parts = Path(file).parts
            if parts and parts[0] not in ("..", "__pycache__"):
                tops.add(parts[0])
        if not tops:  # no RECORD: the import names and the metadata folder
            tops = set((dist.read_text("top_level.txt") or "").split()) | {Path(dist._path).name}  # noqa: SLF001
        for top in tops:
            source = Path(dist.locate_file(top))
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)


def test_wheel_installs_into_a_clean_venv(dist: Path, tmp_path: Path) -> None:
    wheel = _only(dist, "*.whl")
    meta = zipfile.ZipFile(wheel).read(f"mergegate-{mergegate.__version__}.dist-info/METADATA").decode()
    closure = _runtime_closure(meta)
    assert "torch" in closure and not closure & set(TEST_ONLY)
    venv = tmp_path / "clean"
    _run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    site_packages = Path(_run(str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
    runtime = tmp_path / "runtime-site"
    runtime.mkdir()
    _link_closure(closure, runtime)
    (site_packages / "mergegate-runtime-deps.pth").write_text(f"{runtime}\n")

    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    _run(*pip, "install", "--no-index", "--find-links", str(dist), f"mergegate=={mergegate.__version__}")
    _run(*pip, "check")
    from packaging.utils import canonicalize_name

    installed = {canonicalize_name(p["name"]) for p in json.loads(_run(*pip, "list", "--format", "json").stdout)}
    assert installed >= {"mergegate", "torch", "transformers", "huggingface-hub"}
    assert not installed & set(TEST_ONLY)

    exe = venv / "bin" / "mergegate"
    help_text = _run(str(exe), "--help", cwd=tmp_path).stdout
    assert all(cmd in help_text for cmd in ("merge", "audit", "run", "card", "push", "batch", "demo"))
    assert _run(str(exe), "--version", cwd=tmp_path).stdout.strip() == f"mergegate {mergegate.__version__}"
    # every module imports from the installed wheel, with no test-only package around
    check = ("import importlib, pkgutil, mergegate\n"
             "assert '/site-packages/' in mergegate.__file__, mergegate.__file__\n"
             "for m in pkgutil.walk_packages(mergegate.__path__, 'mergegate.'):\n"
             "    importlib.import_module(m.name)\n"
             f"for name in {TEST_ONLY!r}:\n"
             "    assert importlib.util.find_spec(name) is None, name\n"
             "from importlib import resources\n"
             "assert resources.files('mergegate.templates').joinpath('model_card.md.j2').is_file()\n"
             "print('ok')")
    assert _run(str(python), "-c", check, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"}).stdout.strip() == "ok"
