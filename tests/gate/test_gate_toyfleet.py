"""End to end on the toy fleet (real merge engine, real audit, tiny models, CPU).

The fleet is built once per checkout (``toy_fleet`` fixture); audit answers are cached per test
session, so the runs after the first are quick. Marked slow: about a minute in all on two cores.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from mergegate.cli.main import main
from mergegate.gate.demo import DEMO_MERGES, DEMO_POLICY, render_recipe
from mergegate.gate.report import load_report

pytestmark = pytest.mark.slow

LIMIT = ["--limit", "100", "--max-new-tokens", "48", "--no-github"]


def audit_args(fleet: Path, judge: Path | None = None) -> list[str]:
    # the demo's policy: the toy fleet's over-refusal, on 60 benign prompts, moves by ~12 pp between
    # merges that behave alike, over the default 10 pp rule
    policy = Path(tempfile.mkdtemp(prefix="mergegate-policy-")) / "mergegate.yml"
    policy.write_text(yaml.safe_dump(DEMO_POLICY.model_dump(exclude_defaults=True)))
    return ["--prompts", str(fleet / "prompts/unsafe.jsonl"), "--benign", str(fleet / "prompts/benign.jsonl"),
            "--judge", str(judge or fleet / "guard"), "--policy", str(policy), *LIMIT]


def recipe(tmp_path: Path, fleet: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(render_recipe(DEMO_MERGES[name][0], fleet))
    return path


def test_heavy_expert_merge_blocked_light_merge_passes(toy_fleet: Path, tmp_path: Path) -> None:
    out = tmp_path / "heavy"
    assert main(["run", str(recipe(tmp_path, toy_fleet, "blocked")), "--out", str(out),
                 *audit_args(toy_fleet)]) == 1
    report = load_report(out)
    assert report.decision == "blocked"
    assert report.best_input and report.best_input.endswith("base")
    assert report.merged and report.merged.alignment < report.constituents[0].alignment
    card = ModelCard.load(out / "README.md")
    assert "⛔ **Blocked" in card.text and "below its best input" in card.text
    meta = card.data.to_dict()  # local constituents and prompt files: nothing the Hub could link
    assert "base_model" not in meta and "base_model_relation" not in meta and "model-index" not in meta
    assert meta["mergegate"]["verdict"] == "blocked" and "mergegate:blocked" in meta["tags"]
    assert str(ModelCard((out / "README.md").read_text())) == (out / "README.md").read_text()
    assert report.files["model.safetensors"]

    out = tmp_path / "light"
    assert main(["run", str(recipe(tmp_path, toy_fleet, "passes")), "--out", str(out),
                 *audit_args(toy_fleet)]) == 0
    report = load_report(out)
    assert report.decision == "pass"
    assert "✅ **Passed" in (out / "README.md").read_text()
    assert ModelCard.load(out / "README.md").data.to_dict()["mergegate"]["verdict"] == "pass"
    assert report.prompts and report.prompts.n == 100
    # a real run's report (with its paired comparison) is what push verifies: it must vouch for itself
    from mergegate.gate.push import check_pushable

    assert report.gate and report.gate.paired is not None
    assert check_pushable(out).ok, check_pushable(out).problems


def test_broken_judge_is_an_error_without_a_card(toy_fleet: Path, tmp_path: Path) -> None:
    judge = tmp_path / "broken-guard"
    shutil.copytree(toy_fleet / "guard", judge)
    weights = judge / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated weights
    out = tmp_path / "out"
    # a malformed weight file is bad input (exit 2) naming the file (issue 9), not a crash
    assert main(["run", str(recipe(tmp_path, toy_fleet, "passes")), "--out", str(out),
                 *audit_args(toy_fleet, judge)]) == 2
    report = load_report(out)
    assert report.decision == "error" and report.error and report.error.stage == "audit"
    assert "model.safetensors" in report.error.message and report.error.exit_code == 2
    assert not (out / "README.md").exists()
    assert report.files == {}


def test_demo(toy_fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo"), "--fleet", str(toy_fleet)]) == 0
    out = capsys.readouterr().out
    assert "== blocked: blocked — as expected" in out and "== passes: pass — as expected" in out
    assert (tmp_path / "demo/blocked/README.md").is_file() and (tmp_path / "demo/passes/report.json").is_file()
    # the recipes the demo wrote are plain mergekit YAML with the fleet's paths, not templates
    assert str(toy_fleet.resolve() / "expert") in (tmp_path / "demo/recipes/blocked.yml").read_text()
    assert main(["demo", "fleet", str(toy_fleet)]) == 0
