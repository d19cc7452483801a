"""The Action's install step (scripts/action-install.sh) on an externally managed Python (PEP 668).

A Debian/Ubuntu system Python refuses `pip install` ("externally-managed-environment"), so the
Action must work without actions/setup-python by creating a venv of its own. Run offline: pip sees
only a folder of two tiny stand-in wheels (`torch` and `mergegate`), never an index.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "scripts" / "action-install.sh"
DEBIAN_PYTHON = Path("/usr/bin/python3")

pytestmark = pytest.mark.slow


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(folder: Path, name: str, version: str, files: dict[str, str], entry_points: str = "") -> Path:
    """A minimal, valid pure-Python wheel."""
    dist_info = f"{name}-{version}.dist-info"
    contents = {**files,
                f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    if entry_points:
        contents[f"{dist_info}/entry_points.txt"] = entry_points
    record = [_record_line(n, t.encode()) for n, t in contents.items()] + [f"{dist_info}/RECORD,,"]
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for n, text in contents.items():
            wheel.writestr(n, text)
        wheel.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return path


@pytest.fixture
def wheelhouse(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "wheels"
    folder.mkdir()
    make_wheel(folder, "torch", "2.13.0", {"torch/__init__.py": "__version__ = '2.13.0'\n"})
    mergegate = make_wheel(folder, "mergegate", "0.0.1", {
        "mergegate/__init__.py": "def main():\n    print('mergegate 0.0.1 (stand-in)')\n"},
        entry_points="[console_scripts]\nmergegate = mergegate:main\n")
    return folder, mergegate


def _externally_managed(python: Path) -> bool:
    if not python.is_file():
        return False
    probe = subprocess.run([str(python), "-c", "import ensurepip, sysconfig, venv, pathlib; "
                            "print(pathlib.Path(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED').is_file())"],
                           capture_output=True, text=True)
    return probe.returncode == 0 and probe.stdout.strip() == "True"


def _run_install(python: str, action_path: Path, wheels: Path, spec: Path, extra_env: dict | None = None
                 ) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    output = action_path.parent / "github_output"
    output.write_text("")
    env = {"PATH": os.environ["PATH"], "HOME": str(action_path.parent), "PY": python,
           "GITHUB_ACTION_PATH": str(action_path), "GITHUB_OUTPUT": str(output), "SPEC": str(spec),
           "TORCH_SPEC": "torch==2.13.0", "TORCH_INDEX": "",
           # offline: no index, no pip configuration of this machine, only the stand-in wheels
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels), "PIP_CONFIG_FILE": os.devnull,
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1", **(extra_env or {})}
    proc = subprocess.run(["bash", str(INSTALL)], env=env, capture_output=True, text=True, timeout=300)
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return proc, outputs


def _check_installed_in_own_venv(proc: subprocess.CompletedProcess, outputs: dict[str, str],
                                 action_path: Path, base_python: str) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    venv = action_path / ".mergegate-venv"
    assert outputs == {"python": str(venv / "bin" / "python"), "mergegate": str(venv / "bin" / "mergegate"),
                       "venv": str(venv)}
    assert "mergegate 0.0.1 (stand-in)" in proc.stdout
    import_both = [outputs["python"], "-c", "import torch, mergegate; print(torch.__version__)"]
    assert subprocess.run(import_both, capture_output=True, text=True).stdout.strip() == "2.13.0"
    # nothing went into the interpreter the venv was made from
    probe = ("from importlib import metadata\ntry:\n    print(metadata.version('mergegate'))\n"
             "except metadata.PackageNotFoundError:\n    print('absent')")
    base = subprocess.run([base_python, "-c", probe], capture_output=True, text=True, cwd=action_path.parent)
    assert base.stdout.strip() != "0.0.1"
    assert (venv / "mergegate-constraints.txt").read_text() == "torch==2.13.0\n"


def _guarded(base: Path, folder: Path) -> Path:
    """``base`` behind a wrapper that refuses ``-m pip`` the way PEP 668 does, so the test fails if
    the script ever runs pip on the interpreter it was given (Debian's pip would refuse anyway)."""
    wrapper = folder / "python3"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "${1:-}" = "-m" ] && [ "${2:-}" = "pip" ]; then\n'
        '  echo "error: externally-managed-environment (pip on the base interpreter)" >&2; exit 1\n'
        "fi\n"
        f'exec "{base}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_install_on_an_externally_managed_python_creates_its_own_venv(tmp_path: Path, wheelhouse) -> None:
    """Debian's system python3 (EXTERNALLY-MANAGED in its stdlib) where there is one, as on a runner
    without actions/setup-python; elsewhere this interpreter, behind the same pip-refusing wrapper."""
    wheels, spec = wheelhouse
    base = DEBIAN_PYTHON if _externally_managed(DEBIAN_PYTHON) else Path(sys.executable)
    if base == DEBIAN_PYTHON:  # the premise: this interpreter refuses a plain pip install (PEP 668)
        refused = subprocess.run([str(base), "-m", "pip", "install", "--no-index", "--find-links", str(wheels),
                                  "torch"], capture_output=True, text=True,
                                 env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
        if "No module named pip" not in refused.stderr:
            assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr
    python = _guarded(base, tmp_path)
    action_path = tmp_path / "action"
    action_path.mkdir()
    proc, outputs = _run_install(str(python), action_path, wheels, spec)
    _check_installed_in_own_venv(proc, outputs, action_path, str(base))
    assert "externally-managed-environment" not in proc.stderr
    # a second use of the Action in the same job reuses the venv (torch is not installed again)
    again, outputs_again = _run_install(str(python), action_path, wheels, spec)
    assert again.returncode == 0 and "reusing" in again.stdout and "installing torch" not in again.stdout
    assert outputs_again == outputs


def test_install_fails_clearly_without_a_usable_python(tmp_path: Path, wheelhouse) -> None:
    wheels, spec = wheelhouse
    action_path = tmp_path / "action"
    action_path.mkdir()
    proc, outputs = _run_install(str(tmp_path / "no-such-python"), action_path, wheels, spec)
    assert proc.returncode == 3 and "::error title=mergegate install::" in proc.stderr
    assert "setup-python" in proc.stderr and outputs == {}
