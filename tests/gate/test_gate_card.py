"""The model card: Hub metadata, golden rendering, license handling, chart, re-rendering.

Golden files live in ``tests/gate/golden/``. After an intended change to the template, regenerate
them with::

    MERGEGATE_REGEN_GOLDEN=1 .venv/bin/pytest tests/gate/test_gate_card.py

and review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _gate_fakes import EXPERT, MISTRAL, synthetic_run_report
from huggingface_hub import ModelCard

from mergegate.errors import InputError, MergegateError
from mergegate.gate.card import rerender_card, write_card
from mergegate.gate.report import ErrorInfo, RunReport, load_report, write_report

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("case, merged_safe", [("blocked", 62), ("pass", 95)])
def test_card_matches_golden(tmp_path: Path, case: str, merged_safe: int) -> None:
    path = write_card(synthetic_run_report(merged_safe), tmp_path, plot=False)
    text = path.read_text(encoding="utf-8")
    golden = GOLDEN / f"card_{case}.md"
    if os.environ.get("MERGEGATE_REGEN_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8"), (
        "card changed; if intended, regenerate with MERGEGATE_REGEN_GOLDEN=1 (see module docstring)")


def test_card_parses_back_with_hub_metadata(tmp_path: Path) -> None:
    path = write_card(synthetic_run_report(62), tmp_path, plot=False)
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["base_model"] == [MISTRAL, EXPERT]
    assert data["base_model_relation"] == "merge"
    assert data["tags"] == ["merge", "mergekit", "mergegate", "mergegate:blocked"]
    assert data["mergegate"]["verdict"] == "blocked"
    assert data["library_name"] == "transformers"
    assert data["license"] == "apache-2.0"
    assert "datasets" not in data  # evaluation sets are not training data (tests/gate/test_card_metadata.py)
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["safety_alignment"].metric_value == 62.0
    assert results["safety_alignment"].dataset_revision == "8401fe609d288129cc684a9b3be6a93e41cfe678"
    assert results["over_refusal"].metric_value == 6.0
    assert card.data.model_name == "my-merge"
    assert "⛔ **Blocked" in card.text and "31.0 pp lower" in card.text
    assert "[TIES](https://arxiv.org/abs/2306.01708)" in card.text
    assert "```yaml\nmerge_method: ties" in card.text


def test_local_models_are_not_base_models_and_unknown_license_is_flagged(tmp_path: Path) -> None:
    report = synthetic_run_report(95, licenses=("apache-2.0", None))
    constituents = [report.constituents[0],
                    report.constituents[1].model_copy(update={"hub_id": None, "model": "./models/expert"})]
    report = report.model_copy(update={"constituents": constituents})
    card = ModelCard.load(write_card(report, tmp_path, plot=False))
    assert card.data.base_model == [MISTRAL]
    assert card.data.license is None
    assert "License unknown" in card.text


def test_license_conflict_sets_none_and_says_so(tmp_path: Path) -> None:
    card = ModelCard.load(write_card(synthetic_run_report(95, licenses=("apache-2.0", "llama3")),
                                     tmp_path, plot=False))
    assert card.data.license is None
    assert "License conflict" in card.text and "`llama3`" in card.text and "`apache-2.0`" in card.text


def test_no_card_for_an_errored_run(tmp_path: Path) -> None:
    report = RunReport(name="m", decision="error", reasons=["audit failed: boom"],
                       error=ErrorInfo(type="AuditError", message="boom", stage="audit"))
    with pytest.raises(MergegateError):
        write_card(report, tmp_path)
    assert not (tmp_path / "README.md").exists()
    write_report(report, tmp_path / "report.json")
    with pytest.raises(InputError):
        rerender_card(tmp_path / "report.json", tmp_path)


def test_chart_is_a_png_and_deterministic(tmp_path: Path) -> None:
    report = synthetic_run_report(62)
    write_card(report, tmp_path / "a")
    write_card(report, tmp_path / "b")
    png = (tmp_path / "a" / "mergegate_alignment.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert png == (tmp_path / "b" / "mergegate_alignment.png").read_bytes()
    assert "](mergegate_alignment.png)" in (tmp_path / "a" / "README.md").read_text()


def test_rerender_from_report_updates_card_hash_only(tmp_path: Path) -> None:
    report = synthetic_run_report(95)
    write_report(report, tmp_path / "report.json")
    path = rerender_card(tmp_path, tmp_path, plot=True)
    assert path == tmp_path / "README.md"
    saved = load_report(tmp_path)
    assert set(saved.files) == {"config.json", "model.safetensors", "README.md", "mergegate_alignment.png"}
    assert saved.files["model.safetensors"] == report.files["model.safetensors"]
    # into another directory: the report is left alone
    rerender_card(tmp_path / "report.json", tmp_path / "elsewhere", plot=False)
    assert (tmp_path / "elsewhere" / "README.md").read_text() == path.read_text()
    assert load_report(tmp_path) == saved


def test_card_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mergegate.cli.main import main

    write_report(synthetic_run_report(95), tmp_path / "report.json")
    assert main(["card", str(tmp_path / "report.json"), "--out", str(tmp_path / "card"), "--no-plot"]) == 0
    assert (tmp_path / "card" / "README.md").is_file()
    assert main(["card", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2
