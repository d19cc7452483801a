"""``mergegate batch`` against a fake Hub (local HF cache + HTTP server): listing, pinning, recipes,
shared audits, provenance rebuilds, card lint, the three outputs, shards and collect."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from _batch_fakehub import TAMPERED_TENSOR, FakeHub, FakeHubServer
from _batch_fakehub import toy_audit_args
from mergegate.cli.main import main
from mergegate.batch.records import read_records

MERGES_BY_DOWNLOADS = ["mergers/toy-linear-30", "mergers/toy-linear-70", "mergers/toy-slerp-50",
                       "mergers/no-recipe", "mergers/ghost-parent"]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batch_cache") / "audit.sqlite3"


@pytest.fixture
def generations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Model directories the audit loaded to generate answers (i.e. not served from the cache)."""
    from mergegate.audit import api

    loaded: list[str] = []
    real = api.make_generator

    def spy(backend, path, **kw):  # noqa: ANN001, ANN202
        loaded.append(str(path))
        return real(backend, path, **kw)

    monkeypatch.setattr(api, "make_generator", spy)
    return loaded


def test_top_n_against_fake_hub(hub_server: FakeHubServer, fake_hub: FakeHub, toy_fleet: Path, tmp_path: Path,
                                shared_cache: Path, generations: list[str]) -> None:
    out = tmp_path / "out"
    rc = main(["batch", "--top", "10", "--out", str(out), "--cache", str(shared_cache), *toy_audit_args(toy_fleet)])
    assert rc == 0

    listing = [r for r in hub_server.requests if r.startswith("/api/models?")]
    assert len(listing) == 1 and "filter=mergekit" in listing[0] and "sort=downloads" in listing[0]
    assert "limit=10" in listing[0]
    records = read_records(out / "results.jsonl")
    assert [r.repo_id for r in records] == MERGES_BY_DOWNLOADS  # most downloaded first; not other/popular
    by_id = {r.repo_id: r for r in records}
    shas = {rid: repo.sha for rid, repo in fake_hub.repos.items()}
    for rec in records:
        assert rec.revision == shas[rec.repo_id]  # pinned

    r30, r70, slerp = by_id["mergers/toy-linear-30"], by_id["mergers/toy-linear-70"], by_id["mergers/toy-slerp-50"]
    for rec in (r30, r70, slerp):
        assert rec.status == "audited", rec.error
        assert [(c.id, c.revision) for c in rec.constituents] == [("toy/base", shas["toy/base"]),
                                                                  ("toy/expert", shas["toy/expert"])]
        assert rec.merge is not None and rec.merge.n == 40
        assert rec.best_input == "toy/base" and rec.worst_input == "toy/expert"  # the expert is misaligned
        assert rec.drop == pytest.approx(rec.best_alignment - rec.merge.alignment)
    assert r70.merge.alignment <= r30.merge.alignment  # more of the misaligned expert, less aligned

    # provenance: a faithful merge is reproduced, the tampered one differs and names the tensor
    assert r30.provenance.status == "reproduced" and r30.provenance.n_tensors == 21
    assert slerp.provenance.status == "reproduced" and slerp.recipe_source == "README.md"
    assert r30.recipe_source == "mergekit_config.yml"
    assert r70.provenance.status == "differs"
    assert r70.provenance.differing_tensors == [TAMPERED_TENSOR] and r70.provenance.n_differing == 1

    # card lint
    assert [f.code for f in r30.lint] == []
    assert {f.code for f in r70.lint} == {"base-model-tags-only", "license-conflict"}
    assert [f.code for f in slerp.lint] == ["base-model-incomplete"]

    # no recipe / missing constituent: recorded, not a crash
    assert by_id["mergers/no-recipe"].status == "no recipe"
    ghost = by_id["mergers/ghost-parent"]
    assert ghost.status == "error" and "toy/ghost" in ghost.error and ghost.merge is None

    # one shared audit cache: every model generated answers at most once
    assert all(n == 1 for n in Counter(generations).values()), generations

    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert [r["repo_id"] for r in rows] == MERGES_BY_DOWNLOADS
    assert rows[1]["provenance"] == "differs" and rows[1]["differing_tensors"] == TAMPERED_TENSOR
    html = (out / "leaderboard.html").read_text(encoding="utf-8")
    assert all(rid in html for rid in MERGES_BY_DOWNLOADS) and "<svg" in html
    assert "<script src" not in html and "<link" not in html and "url(" not in html  # self-contained


def test_shards_partition_and_collect(hub_server: FakeHubServer, toy_fleet: Path, tmp_path: Path,
                                      shared_cache: Path) -> None:
    dirs = []
    for i in (1, 2):
        d = tmp_path / f"shard{i}"
        rc = main(["batch", "--top", "10", "--shard", f"{i}/2", "--out", str(d), "--cache", str(shared_cache),
                   "--no-rebuild", *toy_audit_args(toy_fleet)])
        assert rc == 0
        dirs.append(d)
    got = [[r.repo_id for r in read_records(d / "results.jsonl")] for d in dirs]
    assert got == [MERGES_BY_DOWNLOADS[0::2], MERGES_BY_DOWNLOADS[1::2]]
    merged = tmp_path / "all"
    assert main(["batch", "collect", *map(str, dirs), "--out", str(merged)]) == 0
    assert [r.repo_id for r in read_records(merged / "results.jsonl")] == MERGES_BY_DOWNLOADS
    assert (merged / "results.csv").is_file() and (merged / "leaderboard.html").is_file()
    assert all(r.shard in ("1/2", "2/2") for r in read_records(merged / "results.jsonl"))
