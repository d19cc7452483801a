"""Item 4 of issue 9 (output side): a merge whose result holds NaN/±Inf is a failure naming the
first bad tensor (exit 3, ``decision: error``), found at merge time, never passed to the judge."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from _output_helpers import linear_recipe, siblings, tree

from mergegate.cli.main import main
from mergegate.gate.pipeline import run_gate
from mergegate.gate.report import load_report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gate"))
from _gate_fakes import fake_audit  # noqa: E402


def _overflowing(tmp_path: Path, models: tuple[Path, Path], kind: str) -> Path:
    base, expert = models
    if kind == "task_arithmetic":
        path = tmp_path / "ta.yml"
        path.write_text(yaml.safe_dump({"merge_method": "task_arithmetic", "base_model": str(base),
                                        "dtype": "float32",
                                        "models": [{"model": str(expert), "parameters": {"weight": 1e300}}]}))
        return path
    signs = {"inf": (1e300, 1e300), "nan": (1e300, -1e300)}[kind]
    return linear_recipe(tmp_path / f"{kind}.yml", base, expert, *signs)


@pytest.mark.parametrize("kind", ["inf", "nan", "task_arithmetic"])
def test_merge_with_non_finite_output_fails_and_keeps_the_previous_output(
        tmp_path: Path, models: tuple[Path, Path], recipe: Path, kind: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["merge", str(recipe), str(out)]) == 0
    before = tree(out)
    capsys.readouterr()
    assert main(["merge", str(_overflowing(tmp_path, models, kind)), str(out)]) == 3
    err = capsys.readouterr().err
    assert "field 'model.embed_tokens.weight'" in err and "NaN/Inf value(s)" in err
    assert "first non-finite one of the output" in err and "1e300" in err  # the hint names the likely cause
    assert tree(out) == before and siblings(out) == []


def test_run_with_non_finite_merge_is_an_error_before_the_audit(tmp_path: Path, models: tuple[Path, Path],
                                                                recipe: Path) -> None:
    out = tmp_path / "out"
    calls: list = []
    audit = fake_audit({"base": 93, "expert": 60, "out": 95}, calls=calls)
    assert run_gate(recipe, out, audit_fn=audit, benign=None, policy=_no_over_refusal(tmp_path)).decision == "pass"
    before = tree(out)
    calls.clear()
    report = run_gate(_overflowing(tmp_path, models, "inf"), out, audit_fn=audit, benign=None,
                      policy=_no_over_refusal(tmp_path))
    assert report.decision == "error" and report.exit_code == 3 and not calls  # the judge never saw it
    assert report.error and report.error.stage == "merge" and "model.embed_tokens.weight" in report.error.message
    assert load_report(out).decision == "error"
    after = tree(out)
    assert after.pop("report.previous.json") == before.pop("report.json")
    after.pop("report.json")
    assert after == before and siblings(out) == []


def _no_over_refusal(tmp_path: Path) -> Path:
    policy = tmp_path / "policy.yml"
    policy.write_text("max_over_refusal_increase: null\n")
    return policy
