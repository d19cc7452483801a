"""``run_batch``: audit many published merges, one record per merge, resumable and shardable.

For each merge (most downloaded first, or as listed in a models file):

1. pin the merge to a commit and download its card and recipe (``mergekit_config.yml``, else the
   YAML block of its README); no recipe -> a ``no recipe`` record, nothing else downloaded;
2. pin every constituent the recipe names; a missing one -> an ``error`` record;
3. lint the card (base_model, license, local paths, pickled weights);
4. audit the constituents and the merge in one ``audit_models`` call over a shared SQLite cache,
   so a constituent used by many merges (or a merge seen by a killed run) costs one audit;
5. rebuild the recipe (seeded) and compare tensor hashes with the published weights;
6. append the record to ``results.jsonl``; at the end (or when interrupted) write ``results.csv``
   and ``leaderboard.html`` from every record in the directory.

A re-run with the same ``--out`` skips merges whose record has the same pinned revision.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergegate.audit.prompt_limits import DEFAULT_MAX_PROMPT_TOKENS
from mergegate.batch import hub
from mergegate.batch.records import (
    FINAL_STATUSES,
    LEADERBOARD_HTML,
    RESULTS_CSV,
    RESULTS_JSONL,
    BatchRecord,
    ScoredModel,
    append_record,
    dump_jsonl,
    latest,
    read_records,
    write_csv,
)
from mergegate.errors import ConfigError, InputError, MergegateError
from mergegate.outdir import BATCH_OUTPUT, check_output_dir

log = logging.getLogger(__name__)

DEFAULT_CACHE_NAME = "audit-cache.sqlite3"


@dataclass
class AuditOptions:
    """What ``audit_models`` is called with (the CLI's audit options)."""

    prompts: str = "beavertails"
    benign: str | None = "xstest"
    judge: str = "meta-llama/Llama-Guard-3-8B"
    backend: str = "transformers"
    device: str = "cpu"
    limit: int | None = None
    seed: int = 0
    max_new_tokens: int = 512
    max_prompt_tokens: int | None = DEFAULT_MAX_PROMPT_TOKENS
    batch_size: int | None = None
    cache: str | Path | None = None
    progress: bool = False

    def kwargs(self) -> dict[str, Any]:
        benign = None if self.benign is None or self.benign.lower() == "none" else self.benign
        return dict(prompts=self.prompts, benign=benign, judge=self.judge, backend=self.backend,
                    device=self.device, limit=self.limit, seed=self.seed, max_new_tokens=self.max_new_tokens,
                    max_prompt_tokens=self.max_prompt_tokens, batch_size=self.batch_size, cache=self.cache,
                    progress=self.progress, keep_items=False)


@dataclass
class BatchSummary:
    out_dir: Path
    processed: list[BatchRecord] = field(default_factory=list)  # records written by this run
    skipped: list[str] = field(default_factory=list)  # merges already done (same revision)
    records: list[BatchRecord] = field(default_factory=list)  # everything in the directory, deduplicated

    @property
    def failed(self) -> list[BatchRecord]:
        return [r for r in self.processed if r.status == "failed"]


def _scored(score: Any, spec: str) -> ScoredModel:
    repo_id, _, rev = spec.partition("@")
    return ScoredModel(id=repo_id, revision=rev or score.model.revision, alignment=score.alignment,
                       low=score.interval.low, high=score.interval.high, over_refusal=score.over_refusal,
                       n=score.n)


def _best(models: Sequence[ScoredModel]) -> ScoredModel:
    """The most aligned input (ties: less over-refusal, then recipe order), as the gate decides."""
    return min(enumerate(models), key=lambda im: (-im[1].alignment, im[1].over_refusal
                                                  if im[1].over_refusal is not None else 1.0, im[0]))[1]


def _worst(models: Sequence[ScoredModel]) -> ScoredModel:
    return min(enumerate(models), key=lambda im: (im[1].alignment, im[0]))[1]


def _find_recipe(snapshot: Path) -> tuple[str, str] | None:
    from mergegate.merging.config import extract_recipe_from_readme
    from mergegate.safe_yaml import MAX_CARD_BYTES, MAX_YAML_BYTES

    def head(path: Path, limit: int) -> str:  # a hostile repo's file is read only this far
        with open(path, "rb") as handle:
            return handle.read(limit + 1).decode("utf-8", errors="replace")

    for name in hub.RECIPE_FILES:
        path = snapshot / name
        if path.is_file():
            return head(path, MAX_YAML_BYTES), name  # over the limit: parse_recipe refuses it
    readme = snapshot / "README.md"
    if readme.is_file():
        block = extract_recipe_from_readme(head(readme, MAX_CARD_BYTES))
        if block is not None:
            return block, "README.md"
    return None


class _Context:
    def __init__(self, out_dir: Path, options: AuditOptions, *, rebuild: bool, max_rebuild_bytes: int | None,
                 shard: str | None, token: str | bool | None) -> None:
        self.out_dir = out_dir
        self.options = options
        self.rebuild = rebuild
        self.max_rebuild_bytes = max_rebuild_bytes
        self.shard = shard
        self.token = token
        self.pins: dict[tuple[str, str | None], hub.PinnedRepo] = {}
        self.licenses: dict[str, Any] = {}

    def pin(self, repo_id: str, revision: str | None) -> hub.PinnedRepo:
        key = (repo_id, revision)
        if key not in self.pins:
            self.pins[key] = hub.pin(repo_id, revision, token=self.token)
        return self.pins[key]

    def license_of(self, repo: hub.PinnedRepo) -> Any:
        from mergegate.gate.licenses import read_local_license

        if repo.spec not in self.licenses:
            try:
                self.licenses[repo.spec] = read_local_license(hub.fetch_metadata(repo, token=self.token))
            except InputError:
                self.licenses[repo.spec] = None
        return self.licenses[repo.spec]


def process_merge(target: hub.Target, repo: hub.PinnedRepo, ctx: _Context) -> BatchRecord:
    """Audit one pinned merge. Input problems become an ``error`` record; other errors propagate."""
    from mergegate.audit.api import audit_models
    from mergegate.batch.lint import card_metadata, lint_card
    from mergegate.batch.provenance import check_provenance, recorded_seed
    from mergegate.merging.recipe import summarize_recipe

    started = time.perf_counter()
    base: dict[str, Any] = dict(repo_id=target.repo_id, revision=repo.sha, rank=target.rank,
                                downloads=target.downloads, shard=ctx.shard)

    def done(**fields: Any) -> BatchRecord:
        return BatchRecord(**base, **fields, seconds=round(time.perf_counter() - started, 3))

    snapshot = hub.fetch_metadata(repo, token=ctx.token)
    meta = card_metadata(snapshot / "README.md")
    found = _find_recipe(snapshot)
    if found is None:
        flags = lint_card(meta, hub_constituents=[], local_paths=[], files=repo.files, constituent_licenses={})
        return done(status="no recipe", error="no mergekit_config.yml and no ```yaml recipe in the README",
                    lint=flags)
    text, source = found
    base["recipe_source"] = source
    try:
        recipe = summarize_recipe(text, name=source)
    except MergegateError as exc:
        return done(status="error", error=f"unreadable recipe: {exc.message}")
    base["merge_method"] = recipe.method
    local_paths = [r.raw for r in recipe.models if not r.is_hub]
    constituents: list[hub.PinnedRepo] = []
    for ref in recipe.models:
        if not ref.is_hub:
            continue
        try:
            constituents.append(ctx.pin(ref.path, ref.revision))
        except InputError as exc:
            return done(status="error", error=f"constituent '{ref.raw}': {exc.message}")
    licenses = {c.repo_id: ctx.license_of(c) for c in constituents}
    flags = lint_card(meta, hub_constituents=[c.repo_id for c in constituents], local_paths=local_paths,
                      files=repo.files, constituent_licenses=licenses)
    if not any(f.lower().endswith(".safetensors") for f in repo.files) and repo.files:
        return done(status="error", error="the merge publishes no safetensors weights (pickled weights are "
                    "not loaded)", lint=flags)

    specs = [c.spec for c in constituents] + [repo.spec]
    report = audit_models(specs, **ctx.options.kwargs())
    scores = [_scored(s, spec) for s, spec in zip(report.scores, specs)]
    inputs, merge = scores[:-1], scores[-1]
    fields: dict[str, Any] = dict(status="audited", constituents=inputs, merge=merge, lint=flags,
                                  judge=report.judge.id, prompts=report.prompts.source, n_prompts=report.prompts.n)
    if inputs:
        best, worst = _best(inputs), _worst(inputs)
        fields.update(best_input=best.id, best_alignment=best.alignment, worst_input=worst.id,
                      worst_alignment=worst.alignment, drop=round(best.alignment - merge.alignment, 6))
        if merge.over_refusal is not None and best.over_refusal is not None:
            fields["over_refusal_increase"] = round(merge.over_refusal - best.over_refusal, 6)

    if ctx.rebuild:
        from mergegate.batch.records import Provenance
        from mergegate.safe_yaml import load_yaml

        merge_dir = Path(report.scores[-1].model.local_path or snapshot)
        try:
            data = load_yaml(text)
        except ConfigError:  # parse_recipe accepted it, so this does not happen
            data = None
        if isinstance(data, dict):
            fields["provenance"] = check_provenance(
                data, text, merge_dir, pins={c.repo_id: c.sha for c in constituents},
                seed=recorded_seed(meta, merge_dir), max_rebuild_bytes=ctx.max_rebuild_bytes,
                work_dir=ctx.out_dir / ".rebuild", local_paths=local_paths)
        else:
            fields["provenance"] = Provenance(status="not checked", reason="the recipe is not a mapping")
    return done(**fields)


def _targets(top: int | None, models_file: str | Path | None, filter: str | list[str],
             token: str | bool | None) -> list[hub.Target]:
    if (top is None) == (models_file is None):
        raise InputError("give exactly one of --top N and --models FILE", field="top",
                         hint="mergegate batch --top 20 --out DIR, or --models merges.txt --out DIR")
    if models_file is not None:
        return hub.read_models_file(models_file)
    return hub.list_merges(int(top or 0), filter=filter, token=token)


def run_batch(out_dir: str | Path, *, top: int | None = None, models_file: str | Path | None = None,
              filter: str | list[str] = "mergekit", shard: str | None = None,
              options: AuditOptions | None = None, rebuild: bool = True, max_rebuild_gb: float | None = 20.0,
              token: str | bool | None = None,
              on_record: Callable[[BatchRecord], None] | None = None) -> BatchSummary:
    """Audit the listed merges into ``out_dir`` (see the module docstring).

    Raises:
        InputError: bad ``shard``, missing models file, listing impossible (exit 2).
    """
    shard_t = hub.parse_shard(shard)
    # new, empty or a previous batch output (added to, never emptied); one batch per directory at a time
    target = check_output_dir(out_dir, kinds=(BATCH_OUTPUT,), replace=False, option="--out")
    with target.claim() as claim:
        return _run_batch(claim.path, top=top, models_file=models_file, filter=filter, shard=shard,
                          shard_t=shard_t, options=options, rebuild=rebuild, max_rebuild_gb=max_rebuild_gb,
                          token=token, on_record=on_record)


def _run_batch(out: Path, *, top: int | None, models_file: str | Path | None, filter: str | list[str],
               shard: str | None, shard_t: tuple[int, int] | None, options: AuditOptions | None, rebuild: bool,
               max_rebuild_gb: float | None, token: str | bool | None,
               on_record: Callable[[BatchRecord], None] | None) -> BatchSummary:
    options = options or AuditOptions()
    if options.cache is None:
        options.cache = out / DEFAULT_CACHE_NAME
    targets = hub.take_shard(_targets(top, models_file, filter, token), shard_t)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / RESULTS_JSONL
    done = {r.key for r in latest(read_records(jsonl)) if r.status in FINAL_STATUSES}
    ctx = _Context(out, options, rebuild=rebuild,
                   max_rebuild_bytes=int(max_rebuild_gb * 1e9) if max_rebuild_gb is not None else None,
                   shard=shard, token=token)
    summary = BatchSummary(out_dir=out)
    try:
        for target in targets:
            started = time.perf_counter()
            try:
                repo = ctx.pin(target.repo_id, target.revision)
            except InputError as exc:
                record = BatchRecord(repo_id=target.repo_id, rank=target.rank, downloads=target.downloads,
                                     status="error", error=exc.message, shard=shard)
            else:
                if (target.repo_id, repo.sha) in done:
                    log.info("%s@%s: already in %s, skipped", target.repo_id, repo.sha[:12], jsonl)
                    summary.skipped.append(target.repo_id)
                    continue
                try:
                    record = process_merge(target, repo, ctx)
                except InputError as exc:
                    record = BatchRecord(repo_id=target.repo_id, revision=repo.sha, rank=target.rank,
                                         downloads=target.downloads, status="error", error=exc.render(),
                                         shard=shard, seconds=round(time.perf_counter() - started, 3))
                except Exception as exc:  # noqa: BLE001 - one broken merge must not stop the batch
                    log.exception("%s failed", target.repo_id)
                    message = exc.render() if isinstance(exc, MergegateError) else f"{type(exc).__name__}: {exc}"
                    record = BatchRecord(repo_id=target.repo_id, revision=repo.sha, rank=target.rank,
                                         downloads=target.downloads, status="failed", error=message,
                                         shard=shard, seconds=round(time.perf_counter() - started, 3))
            append_record(jsonl, record)
            summary.processed.append(record)
            if on_record is not None:
                on_record(record)
    finally:
        summary.records = write_outputs(out)
    return summary


def write_outputs(out: Path, records: list[BatchRecord] | None = None) -> list[BatchRecord]:
    """(Re)write ``results.csv`` and ``leaderboard.html`` from ``results.jsonl`` (or ``records``)."""
    from mergegate.batch.leaderboard import write_leaderboard

    recs = latest(records if records is not None else read_records(out / RESULTS_JSONL))
    write_csv(out / RESULTS_CSV, recs)
    write_leaderboard(out / LEADERBOARD_HTML, recs)
    return recs


def collect(shard_dirs: Sequence[str | Path], out_dir: str | Path) -> list[BatchRecord]:
    """Merge the outputs of several shards into ``out_dir`` (records deduplicated per merge:
    a finished record beats a failed one, then the newest wins)."""
    if not shard_dirs:
        raise InputError("give at least one shard directory to collect", field="dirs")
    everything: list[BatchRecord] = []
    for d in shard_dirs:
        path = Path(d) / RESULTS_JSONL
        if not path.is_file():
            raise InputError(f"no {RESULTS_JSONL} in this directory", source=str(d),
                             hint="pass the --out directories of `mergegate batch` runs (one per shard)")
        everything.extend(read_records(path))
    everything.sort(key=lambda r: (r.status in FINAL_STATUSES, r.finished_at))
    merged = latest(everything)
    target = check_output_dir(out_dir, kinds=(BATCH_OUTPUT,), replace=False, option="--out")
    with target.claim() as claim:
        out = claim.ensure_dir()
        dump_jsonl(out / RESULTS_JSONL, merged)
        return write_outputs(out, merged)


__all__ = ["run_batch", "collect", "process_merge", "write_outputs", "AuditOptions", "BatchSummary"]
