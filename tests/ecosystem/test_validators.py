"""The ecosystems' own validators on the files users meet, offline, every one pinned in the test extra.

- check-jsonschema with its vendored GitHub schemas: every workflow and action.yml;
- zizmor (``--offline``, ``.github/zizmor.yml`` holds each ignore and its reason);
- actionlint (the kjanat/actionlint build from PyPI, see pyproject) with shellcheck on ``run:``
  scripts (``.github/actionlint.yaml``), and shellcheck on the shell scripts themselves;
- ``pre-commit validate-manifest`` / ``validate-config``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the test extra installs the tools beside this interpreter
WORKFLOWS = sorted(str(p.relative_to(ROOT)) for p in
                   [*(ROOT / ".github/workflows").glob("*.yml"), *(ROOT / "examples/workflows").glob("*.yml")])

pytestmark = pytest.mark.slow


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"'{name}' is not installed: run ./dev setup (it comes with the test extra)")
    return found


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "NO_COLOR": "1", "PRE_COMMIT_HOME": str(ROOT / ".pytest_cache" / "pre-commit-home")}
    env.pop("GH_TOKEN", None)
    env.pop("GITHUB_TOKEN", None)
    proc = subprocess.run(list(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_workflows_match_githubs_schema() -> None:
    run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *WORKFLOWS)


def test_action_matches_githubs_schema() -> None:
    run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", "action.yml")


def test_zizmor_finds_nothing() -> None:
    proc = run(tool("zizmor"), "--offline", "--config", ".github/zizmor.yml", "--format", "plain",
               "action.yml", ".github/workflows/", *[w for w in WORKFLOWS if w.startswith("examples/")])
    assert "No findings to report" in proc.stdout + proc.stderr


def test_actionlint_with_shellcheck_finds_nothing() -> None:
    tool("shellcheck")  # actionlint runs it on every `run:` script when it is on PATH
    run(tool("actionlint"), "-config-file", ".github/actionlint.yaml", *WORKFLOWS)


def test_shell_scripts_pass_shellcheck() -> None:
    run(tool("shellcheck"), *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "scripts").glob("*.sh")),
        "dev", ".ci/run")


def test_pre_commit_manifest_and_example_configs_are_valid() -> None:
    run(tool("pre-commit"), "validate-manifest", ".pre-commit-hooks.yaml")
    run(tool("pre-commit"), "validate-config", "examples/pre-commit-config.yaml",
        "examples/pre-commit-config-local.yaml")
