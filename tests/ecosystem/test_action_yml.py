"""The Action and the workflows follow GitHub's rules (fast checks; the linters are in test_validators.py).

- every output the gate writes is declared (a composite action exposes only declared outputs);
- every `uses:` is a full commit SHA with its version in a comment, on node24 majors;
- no expression is interpolated into a script (inputs travel through env);
- the example workflow never filters `pull_request` by paths (a required check would stay pending);
- no example names a tag that does not exist; placeholders say they are placeholders;
- the `args` pass-through splits like a shell and executes nothing.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted([*(ROOT / ".github/workflows").glob("*.yml"), *(ROOT / "examples/workflows").glob("*.yml")])
PLACEHOLDER_SHA = "0" * 40
# The node24 majors these files may use (checked against each action's own action.yml: `using: node24`).
NODE24_MAJORS = {"actions/checkout": 7, "actions/setup-python": 7, "actions/upload-artifact": 7}
USES_RE = re.compile(r"^\s*(?:-\s*)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")


def _action() -> dict:
    return yaml.safe_load((ROOT / "action.yml").read_text())


def _uses_lines(path: Path) -> list[tuple[int, str, str]]:
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = USES_RE.match(line)
        if match:
            out.append((number, match.group("ref"), match.group("rest")))
    return out


def test_every_written_output_is_declared() -> None:
    from _gate_fakes import synthetic_run_report

    from mergegate.gate.github import step_outputs

    outputs = _action()["outputs"]
    written = set(step_outputs(synthetic_run_report(), report_path="r.json"))
    from_gate = {name for name, o in outputs.items() if "steps.gate.outputs." in o["value"]}
    assert from_gate == written  # best-input included
    for name, output in outputs.items():
        step, key = re.fullmatch(r"\$\{\{ steps\.(\w+)\.outputs\.([\w-]+) \}\}", output["value"]).groups()
        assert key == name and output["description"]
        assert step in {"gate", "install"}
    install_writes = set(re.findall(r'echo "(\w+)=', (ROOT / "scripts/action-install.sh").read_text()))
    assert {n for n, o in outputs.items() if "steps.install." in o["value"]} <= install_writes


def test_scripts_get_inputs_through_env_only() -> None:
    steps = _action()["runs"]["steps"]
    for step in steps:
        assert step["shell"] == "bash"
        assert "${{" not in step["run"], step["name"]
        assert step["run"].startswith('bash "$GITHUB_ACTION_PATH/scripts/action-')
    gate = next(s for s in steps if s["id"] == "gate")
    assert gate["env"]["ARGS"] == "${{ inputs.args }}"
    assert gate["env"]["MERGEGATE_GITHUB_TOKEN"] == "${{ inputs.token }}"
    for script in (ROOT / "scripts").glob("action-*.sh"):
        assert os.access(script, os.X_OK) or script.stat().st_mode & stat.S_IXUSR
    for workflow in WORKFLOWS:
        for job in yaml.safe_load(workflow.read_text())["jobs"].values():
            for step in job.get("steps", []):
                assert "${{" not in step.get("run", ""), (workflow.name, step.get("name"))


def test_inputs_are_documented() -> None:
    inputs = _action()["inputs"]
    for name, spec in inputs.items():
        assert spec["description"] and spec["required"] is False and "default" in spec, name
    assert inputs["token"]["default"] == "${{ github.token }}"


def test_torch_defaults_never_pull_a_cuda_build() -> None:
    inputs = _action()["inputs"]
    assert inputs["torch-index-url"]["default"] == "https://download.pytorch.org/whl/cpu"
    assert {"torch-spec", "system-site-packages", "python", "args", "gate"} <= set(inputs)


@pytest.mark.parametrize("path", [ROOT / "action.yml", *WORKFLOWS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_actions_are_pinned_by_sha_with_a_version_comment(path: Path) -> None:
    for number, ref, rest in _uses_lines(path):
        if ref.startswith("./"):
            continue
        name, _, sha = ref.partition("@")
        assert re.fullmatch(r"[0-9a-f]{40}", sha), f"{path.name}:{number}: {ref} is not pinned by SHA"
        if sha == PLACEHOLDER_SHA:  # mergegate itself, which has no release to pin yet
            assert name == "mergegate/mergegate"
            previous = path.read_text().splitlines()[number - 2]
            assert "PLACEHOLDER" in previous, f"{path.name}:{number}: say it is a placeholder"
            continue
        version = re.fullmatch(r"\s*#\s*v(\d+)\.\d+\.\d+\s*", rest)
        assert version, f"{path.name}:{number}: add the version as a comment (# vX.Y.Z)"
        assert int(version.group(1)) >= NODE24_MAJORS.get(name, 0), f"{path.name}:{number}: {name} is on node20"


def test_example_workflow_runs_on_every_pull_request() -> None:
    workflow = yaml.safe_load((ROOT / "examples/workflows/mergegate.yml").read_text())
    on = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as True
    pull_request = on["pull_request"] or {}
    assert "paths" not in pull_request and "paths-ignore" not in pull_request
    job = workflow["jobs"]["gate"]
    first = job["steps"][0]
    assert first["id"] == "changed"  # the in-job filter: skip fast when no recipe changed
    gate = next(s for s in job["steps"] if s.get("id") == "gate")
    assert gate["if"] == "steps.changed.outputs.gate == 'true'"
    assert set(gate["with"]) <= set(_action()["inputs"])
    publish = job["steps"][-1]
    assert "push mergegate-out" in publish["run"] and publish["env"]["MERGEGATE"] == "${{ steps.gate.outputs.mergegate }}"
    assert {"checks", "pull-requests"} <= set(job["permissions"])


def test_no_example_names_a_tag_that_does_not_exist() -> None:
    files = [ROOT / "README.md", ROOT / ".pre-commit-hooks.yaml", *WORKFLOWS,
             *(ROOT / "examples").glob("*.yaml"), *(ROOT / "examples").glob("*.yml")]
    for path in files:
        text = path.read_text()
        assert not re.search(r"mergegate@v\d", text), path.name
        assert not re.search(r"rev:\s*v\d", text), path.name
    config = yaml.safe_load((ROOT / "examples/pre-commit-config.yaml").read_text())
    assert config["repos"][0]["rev"] == PLACEHOLDER_SHA


def test_self_test_workflow_runs_the_action_on_itself() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/self-test.yml").read_text())
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    assert not any("setup-python" in s.get("uses", "") for s in steps)  # the system Python is enough
    local = [s for s in steps if s.get("uses") == "./"]
    assert [s["id"] for s in local] == ["install", "passes", "blocked"]
    action_inputs = set(_action()["inputs"])
    for step in local:
        assert set(step.get("with", {})) <= action_inputs
    for name in ("passes", "blocked"):
        recipe = yaml.safe_load((ROOT / f".github/self-test/{name}.yml").read_text())
        from mergegate.gate.demo import DEMO_MERGES, render_recipe

        demo = yaml.safe_load(render_recipe(DEMO_MERGES[name][0], Path("toy-fleet")))
        assert [m["parameters"] for m in recipe["models"]] == [m["parameters"] for m in demo["models"]]
        assert [m["model"] for m in recipe["models"]] == ["./toy-fleet/base", "./toy-fleet/expert"]


def _stand_in_mergegate(tmp_path: Path) -> tuple[Path, Path]:
    """A `mergegate` that records its argv as JSON (and a `python` beside it, as in a venv)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "argv.json"
    exe = bindir / "mergegate"
    exe.write_text(f"#!{sys.executable}\nimport json, sys\n"
                   f"open({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\nsys.exit(1)\n")
    exe.chmod(0o755)
    (bindir / "python").symlink_to(sys.executable)
    return exe, record


def _run_gate_step(tmp_path: Path, args: str) -> tuple[subprocess.CompletedProcess, Path]:
    exe, record = _stand_in_mergegate(tmp_path)
    env = {"PATH": os.environ["PATH"], "MERGEGATE": str(exe), "CONFIG": "mergekit_config.yml",
           "OUT": "out dir", "LIMIT": "200", "CHECK_RUN": "false", "ARGS": args, "HF_TOKEN": ""}
    proc = subprocess.run(["bash", str(ROOT / "scripts/action-run.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    return proc, record


def test_args_pass_through_splits_like_a_shell_and_executes_nothing(tmp_path: Path) -> None:
    args = "--seed 7 --name 'my merge (v2)' --weighting \"evomm\" $(touch pwned) `touch pwned2`; rm -rf x *"
    proc, record = _run_gate_step(tmp_path, args)
    assert proc.returncode == 1  # mergegate's exit code is the step's (1: blocked)
    argv = json.loads(record.read_text())
    assert argv[:3] == ["run", "mergekit_config.yml", "--out"] and argv[3] == "out dir"
    assert "--no-check-run" in argv and argv[argv.index("--limit") + 1] == "200"
    tail = argv[argv.index("--no-check-run") + 1:]
    assert tail == ["--seed", "7", "--name", "my merge (v2)", "--weighting", "evomm", "$(touch", "pwned)",
                    "`touch", "pwned2`;", "rm", "-rf", "x", "*"]
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_args_with_an_unclosed_quote_is_bad_input(tmp_path: Path) -> None:
    proc, record = _run_gate_step(tmp_path, "--name 'unclosed")
    assert proc.returncode == 2 and "not shell-quoted correctly" in proc.stderr
    assert not record.exists()
