"""Card metadata as the Hub reads it: read back with huggingface_hub's own parsers.

- evaluation prompt sets never appear in ``datasets`` (on the Hub: training data);
- ``base_model_relation: merge`` only beside a ``base_model``;
- a machine-readable verdict (tag + ``mergegate`` field) that differs between blocked and pass;
- ``model-index``: ``dataset.type`` a Hub dataset id, ``dataset.revision`` a git commit (never a
  file sha256), a ``source`` on every result; local prompt files get no model-index result;
- ``.eval_results/mergegate.yaml`` round-trips through ``parse_eval_result_entries``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from _gate_fakes import MISTRAL, synthetic_run_report
from huggingface_hub import ModelCard, metadata_load, parse_eval_result_entries
from huggingface_hub.repocard_data import model_index_to_eval_results

from mergegate.audit.results import DatasetRef
from mergegate.cli.main import main
from mergegate.gate.card import rerender_card, write_card
from mergegate.gate.card_metadata import EVAL_RESULTS_PATH, PROJECT_URL, eval_results_yaml
from mergegate.gate.push import check_pushable
from mergegate.gate.report import write_report

LOCAL_SHA256 = "c" * 64


def _card(tmp_path: Path, report) -> ModelCard:
    return ModelCard.load(write_card(report, tmp_path, plot=False))


def _local_prompts(report):
    return report.model_copy(update={
        "prompts": DatasetRef(source="prompts/unsafe.jsonl", revision=LOCAL_SHA256, n=100),
        "benign": DatasetRef(source="prompts/benign.jsonl", revision="d" * 64, n=50)})


@pytest.mark.parametrize("merged_safe", [62, 95])
def test_no_evaluation_set_in_datasets(tmp_path: Path, merged_safe: int) -> None:
    meta = metadata_load(write_card(synthetic_run_report(merged_safe), tmp_path, plot=False))
    assert "datasets" not in meta
    assert {r["dataset"]["type"] for r in meta["model-index"][0]["results"]} == {
        "PKU-Alignment/BeaverTails", "walledai/XSTest"}


def test_blocked_and_passing_cards_differ_in_the_verdict(tmp_path: Path) -> None:
    blocked = metadata_load(write_card(synthetic_run_report(62), tmp_path / "b", plot=False))
    passing = metadata_load(write_card(synthetic_run_report(95), tmp_path / "p", plot=False))
    assert blocked["mergegate"]["verdict"] == "blocked" and passing["mergegate"]["verdict"] == "pass"
    assert "mergegate:blocked" in blocked["tags"] and "mergegate:pass" not in blocked["tags"]
    assert "mergegate:pass" in passing["tags"] and "mergegate:blocked" not in passing["tags"]
    assert blocked["mergegate"]["alignment"] == 0.62 and passing["mergegate"]["alignment"] == 0.95
    assert blocked["mergegate"]["best_input"] == MISTRAL
    assert blocked["mergegate"]["best_input_alignment"] == 0.93
    assert blocked["mergegate"]["judge"] == "meta-llama/Llama-Guard-3-8B"


def test_base_model_relation_only_with_base_model(tmp_path: Path) -> None:
    report = synthetic_run_report(95)
    local = [c.model_copy(update={"hub_id": None, "model": f"./models/{i}"})
             for i, c in enumerate(report.constituents)]
    meta = metadata_load(write_card(report.model_copy(update={"constituents": local}), tmp_path, plot=False))
    assert "base_model" not in meta and "base_model_relation" not in meta
    meta = metadata_load(write_card(report, tmp_path / "hub", plot=False))
    assert meta["base_model_relation"] == "merge" and meta["base_model"]


def test_model_index_uses_hub_ids_git_revisions_and_a_source(tmp_path: Path) -> None:
    path = write_card(synthetic_run_report(62), tmp_path, plot=False)
    card = ModelCard.load(path)
    results = {r.metric_type: r for r in card.data.eval_results}
    alignment = results["safety_alignment"]
    assert alignment.dataset_type == "PKU-Alignment/BeaverTails"
    assert alignment.dataset_revision == "8401fe609d288129cc684a9b3be6a93e41cfe678"
    assert alignment.dataset_split == "30k_test"
    for result in results.values():
        assert result.source_url == PROJECT_URL and result.source_name.startswith("mergegate ")
    name, parsed = model_index_to_eval_results(metadata_load(path)["model-index"])
    assert name == "my-merge" and [r.metric_type for r in parsed] == ["safety_alignment", "over_refusal"]


def test_local_prompt_files_get_no_model_index_and_no_file_hash_as_revision(tmp_path: Path) -> None:
    path = write_card(_local_prompts(synthetic_run_report(62)), tmp_path, plot=False)
    meta = metadata_load(path)
    assert "model-index" not in meta
    assert LOCAL_SHA256 not in yaml.safe_dump(meta)
    assert meta["mergegate"]["verdict"] == "blocked" and meta["mergegate"]["alignment"] == 0.62


def test_a_non_commit_revision_is_left_out(tmp_path: Path) -> None:
    report = synthetic_run_report(95)
    report = report.model_copy(update={"prompts": report.prompts.model_copy(update={"revision": "main"})})
    results = {r.metric_type: r for r in _card(tmp_path, report).data.eval_results}
    assert results["safety_alignment"].dataset_revision is None


def test_hub_source_config_is_the_dataset_config(tmp_path: Path) -> None:
    report = synthetic_run_report(95)
    ref = DatasetRef(source="hub:org/unsafe-set@" + "e" * 40 + ":harmful:test", revision="e" * 40,
                     split="test", n=100)
    card = _card(tmp_path, report.model_copy(update={"prompts": ref}))
    alignment = {r.metric_type: r for r in card.data.eval_results}["safety_alignment"]
    assert (alignment.dataset_type, alignment.dataset_config, alignment.dataset_revision) == (
        "org/unsafe-set", "harmful", "e" * 40)
    entries = parse_eval_result_entries(yaml.safe_load(eval_results_yaml(report.model_copy(update={"prompts": ref}))))
    assert entries[0].dataset_id == "org/unsafe-set" and entries[0].task_id == "harmful"


def test_eval_results_round_trip(tmp_path: Path) -> None:
    report = synthetic_run_report(62)
    entries = parse_eval_result_entries(yaml.safe_load(eval_results_yaml(report)))
    by_id = {e.dataset_id: e for e in entries}
    assert set(by_id) == {"PKU-Alignment/BeaverTails", "walledai/XSTest"}
    beaver = by_id["PKU-Alignment/BeaverTails"]
    assert beaver.value == 62.0 and beaver.task_id == "default"
    assert beaver.dataset_revision == "8401fe609d288129cc684a9b3be6a93e41cfe678"
    assert beaver.source_url == PROJECT_URL and "blocked" in beaver.notes
    assert beaver.date.startswith("2026-01-02")
    # local prompt files: nothing the Hub could list
    assert yaml.safe_load(eval_results_yaml(_local_prompts(report))) == []


def test_card_cli_writes_eval_results_and_vouches_for_them(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    report = synthetic_run_report(95)
    for name, text in (("config.json", "{}"), ("model.safetensors", "weights")):
        (out / name).write_text(text)
    from mergegate.models.fingerprints import sha256_file

    report = report.model_copy(update={"files": {n: sha256_file(out / n, use_cache=False)
                                                 for n in ("config.json", "model.safetensors")}})
    write_report(report, out / "report.json")
    assert main(["card", str(out), "--out", str(out), "--no-plot", "--eval-results"]) == 0
    entries = parse_eval_result_entries(yaml.safe_load((out / EVAL_RESULTS_PATH).read_text()))
    assert {e.dataset_id for e in entries} == {"PKU-Alignment/BeaverTails", "walledai/XSTest"}
    recorded = json.loads((out / "report.json").read_text())["files"]
    assert EVAL_RESULTS_PATH in recorded and "README.md" in recorded
    assert check_pushable(out).ok, check_pushable(out).problems
    # without the flag nothing is written
    other = tmp_path / "other"
    rerender_card(out / "report.json", other, plot=False)
    assert not (other / ".eval_results").exists()
