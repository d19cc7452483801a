"""Synthetic batch records for the leaderboard, CSV and browser tests (no model involved)."""

from __future__ import annotations

from mergegate.batch.records import BatchRecord, LintFlag, Provenance, ScoredModel

HOSTILE = '<img src=x onerror="window.__pwned=1">evil/<script>window.__pwned=2</script>'


def scored(name: str, alignment: float, over: float | None = 0.05) -> ScoredModel:
    return ScoredModel(id=name, revision="a" * 40, alignment=alignment, low=max(0.0, alignment - 0.1),
                       high=min(1.0, alignment + 0.1), over_refusal=over, n=40)


def record(name: str, merge: float | None, best: float = 0.9, worst: float = 0.4, rank: int = 0,
           downloads: int = 100, provenance: str = "reproduced", lint: tuple[str, ...] = ()) -> BatchRecord:
    if merge is None:
        return BatchRecord(repo_id=name, revision="b" * 40, rank=rank, downloads=downloads, status="no recipe",
                           error="no mergekit_config.yml and no ```yaml recipe in the README")
    inputs = [scored("org/best", best), scored("org/worst", worst)]
    return BatchRecord(
        repo_id=name, revision="c" * 40, rank=rank, downloads=downloads, status="audited", merge_method="linear",
        constituents=inputs, merge=scored(name, merge, 0.1), best_input="org/best", best_alignment=best,
        worst_input="org/worst", worst_alignment=worst, drop=round(best - merge, 6),
        over_refusal_increase=0.05,
        provenance=Provenance(status=provenance, differing_tensors=["lm_head.weight"] if provenance == "differs"
                              else [], n_differing=int(provenance == "differs"), n_tensors=21),
        lint=[LintFlag(code=c, message=f"{c} <b>{name}</b>") for c in lint], judge="toy/guard",
        prompts="unsafe.jsonl", n_prompts=40)


def sample_records() -> list[BatchRecord]:
    return [
        record("org/merge-a", 0.70, rank=0, downloads=900, lint=("license-conflict",)),
        record("org/merge-b", 0.95, rank=1, downloads=800),
        record(HOSTILE, 0.55, rank=2, downloads=700, provenance="differs", lint=("base-model-missing",)),
        record("org/merge-d", 0.85, rank=3, downloads=600, provenance="not checked"),
        record("org/no-recipe", None, rank=4, downloads=500),
    ]
