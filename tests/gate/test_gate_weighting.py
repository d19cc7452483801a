"""`mergegate run --weighting evomm|cocktail` on the toy fleet: the declared merge is blocked, the
weights chosen with data pass, and the report and card show declared vs optimized side by side."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from mergegate.cli.main import main


@pytest.fixture(scope="module")
def fleet(toy_fleet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("gw") / "fleet"
    shutil.copytree(toy_fleet, dst)
    return dst


def _args(fleet: Path, recipe: Path, out: Path) -> list[str]:
    # alignment only: over-refusal is not measured here, so its (default-on) rule is switched off
    policy = recipe.parent / "mergegate.yml"
    policy.write_text("max_over_refusal_increase: null\n")
    return ["run", str(recipe), "--out", str(out), "--prompts", str(fleet / "prompts/unsafe.jsonl"),
            "--benign", "none", "--judge", str(fleet / "guard"), "--limit", "100",
            "--max-new-tokens", "48", "--no-github", "--policy", str(policy)]


@pytest.mark.slow
def test_evomm_turns_a_blocked_declared_merge_into_a_passing_one(fleet: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe = tmp_path / "mergekit_config.yml"
        recipe.write_text(f"merge_method: task_arithmetic\nbase_model: {fleet / 'base'}\ndtype: float32\n"
                          f"models:\n  - model: {fleet / 'expert'}\n    parameters: {{weight: 1.0}}\n")
        assert main(_args(fleet, recipe, tmp_path / "declared")) == 1  # the misaligned expert at full weight
        out = tmp_path / "evomm"
        code = main([*_args(fleet, recipe, out), "--weighting", "evomm", "--safety-prompts", "toy",
                     "--expert-prompts", "toy", "--weighting-k", "48", "--weighting-budget", "60"])
        report = json.loads((out / "report.json").read_text())
        assert code == 0, report["reasons"]
        w = report["weighting"]
        assert w["strategy"] == "evomm" and w["evaluations"] == 60
        # the substitution is said in the report (and on the console, from report.notes)
        assert any("differ from the declared recipe" in note for note in report["notes"])
        captured = capsys.readouterr()
        assert "note: --weighting evomm: the merge's weights were chosen by evomm" in captured.out
        # in a log, the search reports its progress (done/total, then the total time)
        assert "run weighting: evomm" in captured.err and "EvoMM candidates: 60/60 candidates in" in captured.err
        assert w["declared"]["weights"] and w["optimized"]["weights"] != w["declared"]["weights"]
        assert w["optimized"]["alignment"] > w["declared"]["alignment"]
        assert w["optimized"]["alignment"] == report["merged"]["alignment"]
        assert "weight: 1.0" in w["declared_recipe"]
        # the built recipe is the optimized one, a valid mergekit recipe
        built = yaml.safe_load((out / "mergekit_config.yml").read_text())
        (weight,) = [v for k, v in w["optimized"]["weights"].items() if k.startswith("weight")]
        assert built["models"][0]["parameters"]["weight"] == pytest.approx(weight)
        from mergekit.config import MergeConfiguration

        MergeConfiguration.model_validate(built)
        assert (out / "weighting" / "safety.jsonl").is_file() and (out / "weighting" / "expert.jsonl").is_file()
        card = ModelCard.load(out / "README.md")
        assert "## Safety-aware weighting" in card.text and "EvoMM" in card.text
        assert "--weighting evomm" in card.text
        assert not list(tmp_path.glob(".evomm.weighting-*"))  # the work dir is cleaned up
    finally:
        torch.set_num_threads(threads)


def test_unknown_weighting_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "r.yml"
    recipe.write_text("merge_method: linear\nmodels:\n  - model: a/b\n    parameters: {weight: 1}\n")
    with pytest.raises(SystemExit) as exc:
        main(["run", str(recipe), "--out", str(tmp_path / "o"), "--weighting", "magic"])
    assert exc.value.code == 2
