"""The pre-push hook (``mergegate pre-push``): seconds when report.json vouches for the files,
a refusal naming the fix when it does not."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _gate_fakes import fake_audit, fake_merge, write_recipe

import mergegate.gate.pipeline as pipeline
from mergegate.cli.main import main
from mergegate.gate.pipeline import run_gate

HOOK = ["pre-push", "mergekit_config.yml", "--out", ".mergegate/out"]
ROOT = Path(__file__).resolve().parents[2]


def hub_repo(tmp_path: Path, merged_safe: int) -> Path:
    """A clone of a Hub model repository published with `mergegate push`: the gate output plus git's files."""
    out = tmp_path / "out"
    run_gate(write_recipe(tmp_path), out, merge_fn=fake_merge(),
             audit_fn=fake_audit({"base": 93, "expert": 41, "out": merged_safe}))
    repo = tmp_path / "repo"
    shutil.copytree(out, repo)
    (repo / ".git").mkdir()
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    (repo / ".pre-commit-config.yaml").write_text("repos: []\n")
    return repo


@pytest.fixture
def gate_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every rebuild the hook starts, done with the fake merge and audit (merge passes at 95/100)."""
    calls: list[dict] = []
    real = functools.partial(run_gate, merge_fn=fake_merge(),
                             audit_fn=fake_audit({"base": 93, "expert": 41, "out": 95}))

    def recording(config, out, **kwargs):
        calls.append({"config": str(config), "out": str(out)})
        return real(config, out, **kwargs)

    monkeypatch.setattr(pipeline, "run_gate", recording)
    return calls


def test_verified_repository_passes_at_once_without_loading_a_model(tmp_path: Path) -> None:
    repo = hub_repo(tmp_path, 95)
    script = (
        "import sys, time\n"
        "from mergegate.cli.main import main\n"
        "t = time.perf_counter(); rc = main(sys.argv[1:]); dt = time.perf_counter() - t\n"
        "print('RESULT', rc, round(dt, 3), 'torch' in sys.modules, 'mergegate.merging.api' in sys.modules,"
        " 'mergegate.audit.api' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script, *HOOK], cwd=repo, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "pass; report.json vouches for every file being pushed (nothing rebuilt)" in proc.stdout
    result = proc.stdout.split("RESULT ")[1].split()
    rc, seconds, torch_loaded, merging_loaded, audit_loaded = result
    assert rc == "0" and float(seconds) < 5.0
    # no merge engine, no audit, not even torch: no model can have been loaded
    assert (torch_loaded, merging_loaded, audit_loaded) == ("False", "False", "False")
    assert not (repo / ".mergegate").exists()


def test_tampered_weights_are_rebuilt_then_refused_until_the_output_is_copied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        gate_calls: list[dict]) -> None:
    repo = hub_repo(tmp_path, 95)
    (repo / "model.safetensors").write_bytes(b"swapped weights")
    monkeypatch.chdir(repo)
    assert main(HOOK) == 1
    err = capsys.readouterr().err
    assert "model.safetensors: changed after the audit" in err  # why it rebuilt
    assert len(gate_calls) == 1 and gate_calls[0]["out"] == ".mergegate/out"
    assert "refusing the push: the rebuild passed, but the files being pushed are not its output" in err
    assert "fix: cp -R .mergegate/out/. ., then commit and push again" in err
    # the fix the message names works: the next push takes the fast path
    subprocess.run(["cp", "-R", ".mergegate/out/.", "."], check=True)
    assert main(HOOK) == 0
    assert len(gate_calls) == 1
    assert "nothing rebuilt" in capsys.readouterr().out


def test_blocked_report_is_refused_with_the_fix_and_not_rebuilt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        gate_calls: list[dict]) -> None:
    repo = hub_repo(tmp_path, 50)
    monkeypatch.chdir(repo)
    assert main(HOOK) == 1
    err = capsys.readouterr().err
    assert gate_calls == []
    assert "refusing the push: the gate blocked the merge these files hold" in err
    assert ("fix: change mergekit_config.yml (e.g. lower the weight of the least aligned model), or let "
            "mergegate choose safer weights: mergegate run mergekit_config.yml --out .mergegate/out "
            "--weighting evomm && cp -R .mergegate/out/. .; then commit and push again") in err


def test_edited_verdict_or_other_policy_is_not_the_fast_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        gate_calls: list[dict]) -> None:
    repo = hub_repo(tmp_path, 50)
    data = json.loads((repo / "report.json").read_text())
    data["decision"] = "pass"  # a hand-edited verdict: its measurements say blocked
    (repo / "report.json").write_text(json.dumps(data))
    monkeypatch.chdir(repo)
    assert main(HOOK) == 1  # rebuilt (passes at 95) but the files are not that output
    err = capsys.readouterr().err
    assert "the report does not support its verdict" in err and len(gate_calls) == 1

    repo2 = hub_repo(tmp_path / "second", 95)
    (repo2 / "mergegate.yml").write_text("tolerance: 0.5\n")
    monkeypatch.chdir(repo2)
    assert main(HOOK) == 1
    err = capsys.readouterr().err
    assert "the policy in force (" in err and "is not the one report.json was decided with" in err
    assert "mergegate.yml: added" not in err  # configuration, checked on its own, not model content
    assert len(gate_calls) == 2


def test_recipe_only_repository_is_gated_by_the_rebuild(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        gate_calls: list[dict]) -> None:
    write_recipe(tmp_path, name="repo/mergekit_config.yml")  # the models live outside the repository
    monkeypatch.chdir(tmp_path / "repo")
    assert main(HOOK) == 0  # no weights, no report: the declared merge passed, as before
    assert len(gate_calls) == 1
    assert "no report.json vouches for the files" in capsys.readouterr().err


def test_recipe_only_repository_blocked_names_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(pipeline, "run_gate", functools.partial(
        run_gate, merge_fn=fake_merge(), audit_fn=fake_audit({"base": 93, "expert": 41, "out": 50})))
    write_recipe(tmp_path, name="repo/mergekit_config.yml")  # the models live outside the repository
    monkeypatch.chdir(tmp_path / "repo")
    assert main(HOOK) == 1
    err = capsys.readouterr().err
    assert "refusing the push: the rebuilt merge is blocked by the gate" in err
    assert "--weighting evomm" in err


def test_hook_entry_parses_with_run_options() -> None:
    import yaml

    from mergegate.cli.main import build_parser

    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["entry"] == "mergegate " + " ".join(HOOK)
    args = build_parser().parse_args([*hook["entry"].split()[1:], "--limit", "200", "--device", "auto"])
    assert args.command == "pre-push" and args.config == "mergekit_config.yml" and args.limit == 200
    assert args.repo == "."
