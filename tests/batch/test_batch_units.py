"""Pure parts of the batch auditor: shards, card lint, records, CSV, leaderboard rendering, collect."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _batch_records import HOSTILE, record, sample_records
from mergegate.batch.hub import Target, take_shard
from mergegate.batch.leaderboard import render_leaderboard
from mergegate.batch.lint import card_metadata, lint_card
from mergegate.batch.provenance import _pin_recipe, recorded_seed
from mergegate.batch.records import append_record, read_records, write_csv
from mergegate.batch.runner import collect
from mergegate.gate.licenses import DeclaredLicense
from mergegate.errors import InputError


@given(n_targets=st.integers(0, 40), n=st.integers(1, 7))
def test_shards_partition_the_list_in_order(n_targets: int, n: int) -> None:
    targets = [Target(f"org/m{i}", rank=i) for i in range(n_targets)]
    shards = [take_shard(targets, (i, n)) for i in range(1, n + 1)]
    assert sorted((t.rank for s in shards for t in s)) == list(range(n_targets))  # each once
    for s in shards:
        assert [t.rank for t in s] == sorted(t.rank for t in s)  # stable order
        assert len(s) in (n_targets // n, n_targets // n + 1)  # balanced


APACHE = DeclaredLicense("apache-2.0")


def _codes(meta: dict, **kw) -> list[str]:  # noqa: ANN003
    args = dict(hub_constituents=["org/a", "org/b"], local_paths=[], files=["model.safetensors"],
                constituent_licenses={"org/a": APACHE, "org/b": APACHE})
    args.update(kw)
    return [f.code for f in lint_card(meta, **args)]


def test_lint_clean_card() -> None:
    assert _codes({"base_model": ["org/a", "org/b"], "license": "apache-2.0"}) == []
    assert _codes({"base_model": ["org/A@main", "org/b"], "license": ["Apache-2.0"]}) == []


def test_lint_base_model() -> None:
    assert _codes({"license": "apache-2.0"}) == ["base-model-missing"]
    assert _codes({"license": "apache-2.0", "tags": ["merge", "org/a", "base_model:org/b"]}) == ["base-model-tags-only"]
    assert _codes({"license": "apache-2.0", "base_model": "org/a"}) == ["base-model-incomplete"]


def test_lint_license() -> None:
    base = {"base_model": ["org/a", "org/b"]}
    assert _codes(base) == ["license-missing"]
    assert _codes({**base, "license": "mit"}) == ["license-conflict"]
    mixed = {"org/a": APACHE, "org/b": DeclaredLicense("llama3")}
    assert _codes({**base, "license": "apache-2.0"}, constituent_licenses=mixed) == ["license-conflict"]
    unknown = {"org/a": None, "org/b": None}
    assert _codes({**base, "license": "apache-2.0"}, constituent_licenses=unknown) == []


def test_lint_local_paths_and_pickles() -> None:
    meta = {"base_model": ["org/a", "org/b"], "license": "apache-2.0"}
    assert _codes(meta, local_paths=["./out", "G:/7B/x"]) == ["local-path"]
    assert _codes(meta, files=["pytorch_model.bin", "config.json"]) == ["non-safetensors"]
    assert _codes(meta, files=["model.safetensors", "consolidated.pt"]) == ["non-safetensors"]
    assert _codes(meta, files=["config.json"]) == ["non-safetensors"]
    assert _codes(meta, files=["model.safetensors", "training_args.bin"]) == []


def test_card_metadata(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("---\nlicense: mit\nbase_model: [a/b]\n---\n# x\n")
    assert card_metadata(readme) == {"license": "mit", "base_model": ["a/b"]}
    readme.write_text("---\n: [bad\n---\n")
    assert card_metadata(readme) == {}
    assert card_metadata(tmp_path / "missing.md") == {}


def test_seed_and_pinning(tmp_path: Path) -> None:
    assert recorded_seed({"merge_seed": 7}, tmp_path) == 7
    assert recorded_seed({"seed": True}, tmp_path) is None
    (tmp_path / "mergegate_provenance.json").write_text(json.dumps({"seed": 11}))
    assert recorded_seed({"merge_seed": 7}, tmp_path) == 11
    data = {"base_model": "a/b", "models": [{"model": "a/b@main"}, {"model": "./local"}],
            "slices": [{"sources": [{"model": "c/d", "layer_range": [0, 2]}]}]}
    assert _pin_recipe(data, {"a/b": "1" * 40, "c/d": "2" * 40}) == {
        "base_model": "a/b@" + "1" * 40, "models": [{"model": "a/b@" + "1" * 40}, {"model": "./local"}],
        "slices": [{"sources": [{"model": "c/d@" + "2" * 40, "layer_range": [0, 2]}]}]}


def test_records_roundtrip_and_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    recs = sample_records()
    for r in recs:
        append_record(path, r)
    with path.open("a") as fh:
        fh.write('{"repo_id": "org/half", "sta')  # killed mid-write
    assert read_records(path) == recs
    path.write_text("garbage\n" + path.read_text())
    with pytest.raises(InputError, match="line 1"):
        read_records(path)


def test_csv_neutralises_formulas(tmp_path: Path) -> None:
    recs = [record("=HYPERLINK(\"http://x\")", 0.5), record("org/ok", 0.6, rank=1)]
    rows = list(csv.DictReader(write_csv(tmp_path / "r.csv", recs).open(encoding="utf-8")))
    assert rows[0]["repo_id"].startswith("'=") and rows[1]["repo_id"] == "org/ok"
    assert rows[0]["drop"] == "0.4" and rows[0]["provenance"] == "reproduced"


def test_leaderboard_escapes_untrusted_names() -> None:
    html = render_leaderboard(sample_records())
    assert HOSTILE not in html and "<script>window.__pwned" not in html and "<img src=x" not in html
    assert "&lt;img src=x onerror=" in html
    assert "<b>org/" not in html and "&lt;b&gt;org/merge-a&lt;/b&gt;" in html  # lint messages are escaped too
    assert html.count("<tr data-model=") == 5 and html.count('class="chart-row"') == 4
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # no external resource
    assert html.count("<script>") == 1  # only the page's own sorter


def test_leaderboard_without_audits() -> None:
    html = render_leaderboard([record("org/no-recipe", None)])
    assert "<svg" not in html and "org/no-recipe" in html
    assert "<tbody>" in render_leaderboard([])


def test_collect_dedups_and_prefers_finished(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    done = record("org/x", 0.8, rank=1)
    failed = done.model_copy(update={"status": "failed", "merge": None, "error": "boom",
                                     "finished_at": done.finished_at.replace(year=done.finished_at.year + 1)})
    append_record(a / "results.jsonl", done)
    append_record(a / "results.jsonl", record("org/y", 0.5, rank=0))
    append_record(b / "results.jsonl", failed)
    merged = collect([a, b], tmp_path / "out")
    assert [(r.repo_id, r.status) for r in merged] == [("org/y", "audited"), ("org/x", "audited")]
    assert len(read_records(tmp_path / "out" / "results.jsonl")) == 2
    with pytest.raises(InputError, match="at least one"):
        collect([], tmp_path / "out")


def test_provenance_random_recipes_need_a_seed_and_a_budget(toy_fleet: Path, tmp_path: Path) -> None:
    """A seeded DARE merge is reproduced with its recorded seed, not checked without one, and a
    recipe over the size budget is not rebuilt at all."""
    from mergegate.batch.provenance import check_provenance
    from mergegate.merging.api import run_merge

    recipe = {"merge_method": "dare_linear", "base_model": str(toy_fleet / "base"), "dtype": "float32",
              "models": [{"model": str(toy_fleet / "expert"), "parameters": {"weight": 1.0, "density": 0.5}}]}
    published = run_merge(recipe, tmp_path / "published", seed=3).out_dir
    kw = dict(pins={}, max_rebuild_bytes=None, work_dir=tmp_path / "work")
    assert check_provenance(recipe, "", published, seed=3, **kw).status == "reproduced"
    unseeded = check_provenance(recipe, "", published, seed=None, **kw)
    assert unseeded.status == "not checked" and "random" in unseeded.reason and "seed" in unseeded.reason
    wrong = check_provenance(recipe, "", published, seed=4, **kw)
    assert wrong.status == "differs" and wrong.n_differing > 0
    over = check_provenance(recipe, "", published, seed=3, **{**kw, "max_rebuild_bytes": 1000})
    assert over.status == "not checked" and "budget" in over.reason
    local = check_provenance(recipe, "", published, seed=3, local_paths=["./x"], **kw)
    assert local.status == "not checked" and "local" in local.reason
    assert not any((tmp_path / "work").iterdir())  # rebuilds are cleaned up
