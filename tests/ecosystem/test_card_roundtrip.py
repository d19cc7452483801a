"""Every card mergegate generates reads back, unchanged, through huggingface_hub's own parsers.

For each kind of card (pass, blocked, local constituents, local prompt files, license conflict, the
golden files) and the ``.eval_results`` file: ``metadata_load`` and ``ModelCard.load`` agree, the
card is already in the form ``ModelCard`` writes (parse, re-serialize: same bytes), ``ModelCardData``
accepts the metadata strictly, and the model-index / eval-results parse into the same results.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from _gate_fakes import synthetic_run_report
from huggingface_hub import (ModelCard, ModelCardData, eval_result_entries_to_yaml, metadata_load,
                             parse_eval_result_entries)
from huggingface_hub.repocard_data import model_index_to_eval_results

from mergegate.audit.results import DatasetRef
from mergegate.gate.card import write_card
from mergegate.gate.card_metadata import eval_results_yaml

GOLDEN = Path(__file__).resolve().parents[1] / "gate" / "golden"


def _local_constituents(report):
    return report.model_copy(update={"constituents": [
        c.model_copy(update={"hub_id": None, "model": f"./models/m{i}"}) for i, c in enumerate(report.constituents)]})


def _local_prompts(report):
    return report.model_copy(update={"prompts": DatasetRef(source="data/unsafe.jsonl", revision="c" * 64, n=80),
                                     "benign": None})


REPORTS = {
    "blocked": lambda: synthetic_run_report(62),
    "pass": lambda: synthetic_run_report(95),
    "local-constituents": lambda: _local_constituents(synthetic_run_report(95)),
    "local-prompts": lambda: _local_prompts(synthetic_run_report(62)),
    "license-conflict": lambda: synthetic_run_report(95, licenses=("apache-2.0", "llama3")),
    "license-unknown": lambda: synthetic_run_report(95, licenses=("apache-2.0", None)),
}


def _round_trip(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    meta = metadata_load(path)
    card = ModelCard.load(path)
    assert card.data.to_dict() == meta
    assert str(ModelCard(text)) == text  # already in the form huggingface_hub writes
    strict = ModelCardData(**meta, ignore_metadata_errors=False)
    assert strict.to_dict() == meta
    if "model-index" in meta:
        name, results = model_index_to_eval_results(meta["model-index"])
        assert name == meta.get("model_name", name) and results == card.data.eval_results
        for result in results:
            assert result.source_url and "/" in result.dataset_type
    assert meta["mergegate"]["verdict"] in meta["tags"][-1]
    return meta


@pytest.mark.parametrize("kind", sorted(REPORTS))
def test_generated_cards_round_trip(tmp_path: Path, kind: str) -> None:
    report = REPORTS[kind]()
    meta = _round_trip(write_card(report, tmp_path, plot=False))
    assert meta["mergegate"]["verdict"] == report.decision
    data = yaml.safe_load(eval_results_yaml(report))
    assert eval_result_entries_to_yaml(parse_eval_result_entries(data)) == data


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.md")), ids=lambda p: p.name)
def test_golden_cards_round_trip(path: Path) -> None:
    _round_trip(path)
