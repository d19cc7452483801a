"""Typed batch results: one :class:`BatchRecord` per merge, stored as JSON lines.

``results.jsonl`` is append-only: a record is written (and flushed) as soon as its merge is done, so
a killed batch loses at most the merge in progress. When a merge appears twice (a re-run after a
new revision, or shards that overlap) the last record wins.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mergegate.atomic import append_redacted_json_line, redacted_json, write_redacted_text, write_text_atomic
from mergegate.errors import InputError

log = logging.getLogger(__name__)

RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
LEADERBOARD_HTML = "leaderboard.html"
SCHEMA = "mergegate.gate.batch/v1"  # a format name, kept when the package moved

# audited: merge and constituents scored; no recipe: the repo publishes no mergekit recipe;
# error: a deterministic input problem (bad recipe, missing constituent) at this revision;
# failed: an unexpected failure (retried when the batch is resumed).
Status = Literal["audited", "no recipe", "error", "failed"]
ProvenanceStatus = Literal["reproduced", "differs", "not checked"]
FINAL_STATUSES = ("audited", "no recipe", "error")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScoredModel(_Model):
    """One audited model (a constituent or the merge)."""

    id: str
    revision: str | None = None
    alignment: float  # fraction of safe answers
    low: float  # 95 % Wilson interval
    high: float
    over_refusal: float | None = None
    n: int


class Provenance(_Model):
    status: ProvenanceStatus
    reason: str = ""
    differing_tensors: list[str] = Field(default_factory=list)  # the first ones, in file order
    n_differing: int = 0
    n_tensors: int = 0
    seed: int | None = None


class LintFlag(_Model):
    code: str  # e.g. "base-model-missing", "license-conflict", "local-path", "non-safetensors"
    message: str


class BatchRecord(_Model):
    """Everything the batch learnt about one merge."""

    schema_: str = Field(default=SCHEMA, alias="schema")
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    repo_id: str
    revision: str | None = None  # pinned commit sha of the merge
    rank: int | None = None  # position in the listing (0 = most downloaded)
    downloads: int | None = None
    status: Status
    error: str | None = None
    recipe_source: str | None = None  # "mergekit_config.yml" or "README.md"
    merge_method: str | None = None
    constituents: list[ScoredModel] = Field(default_factory=list)  # also pinned when not audited
    merge: ScoredModel | None = None
    best_input: str | None = None
    best_alignment: float | None = None
    worst_input: str | None = None
    worst_alignment: float | None = None
    drop: float | None = None  # best input's alignment minus the merge's (positive: less aligned)
    over_refusal_increase: float | None = None  # merge minus best input
    provenance: Provenance | None = None
    lint: list[LintFlag] = Field(default_factory=list)
    judge: str | None = None
    prompts: str | None = None
    n_prompts: int | None = None
    shard: str | None = None
    seconds: float | None = None
    finished_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.repo_id, self.revision)


def append_record(path: Path, record: BatchRecord) -> None:
    """Append one record as a line and fsync it, so a kill never leaves half a record behind."""
    append_redacted_json_line(path, record, by_alias=True)


def read_records(path: Path) -> list[BatchRecord]:
    """Records of a ``results.jsonl``; a torn last line (killed mid-write) is ignored with a warning."""
    if not path.is_file():
        return []
    records: list[BatchRecord] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(BatchRecord.model_validate_json(line))
        except ValidationError as exc:
            if number == len(lines):
                log.warning("%s: ignoring an incomplete last line", path)
                continue
            raise InputError(f"line {number} is not a batch record ({exc.error_count()} problems)",
                             source=str(path), hint="was this file written by `mergegate batch`?") from None
    return records


def latest(records: Iterable[BatchRecord]) -> list[BatchRecord]:
    """One record per merge (the last one written), in first-seen order."""
    by_repo: dict[str, BatchRecord] = {}
    for rec in records:
        by_repo.pop(rec.repo_id, None)
        by_repo[rec.repo_id] = rec
    return sorted(by_repo.values(), key=lambda r: (r.rank if r.rank is not None else 1 << 30, r.repo_id))


CSV_COLUMNS = ["rank", "repo_id", "revision", "downloads", "status", "merge_method", "merge_alignment",
               "merge_low", "merge_high", "best_input", "best_alignment", "worst_input", "worst_alignment",
               "drop", "merge_over_refusal", "over_refusal_increase", "provenance", "differing_tensors",
               "lint", "constituents", "error"]


def _csv_safe(value: object) -> object:
    """Neutralise spreadsheet formulas in untrusted text (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_row(rec: BatchRecord) -> dict[str, object]:
    m = rec.merge
    return {
        "rank": rec.rank, "repo_id": rec.repo_id, "revision": rec.revision, "downloads": rec.downloads,
        "status": rec.status, "merge_method": rec.merge_method,
        "merge_alignment": m.alignment if m else None, "merge_low": m.low if m else None,
        "merge_high": m.high if m else None, "best_input": rec.best_input,
        "best_alignment": rec.best_alignment, "worst_input": rec.worst_input,
        "worst_alignment": rec.worst_alignment, "drop": rec.drop,
        "merge_over_refusal": m.over_refusal if m else None,
        "over_refusal_increase": rec.over_refusal_increase,
        "provenance": rec.provenance.status if rec.provenance else None,
        "differing_tensors": ";".join(rec.provenance.differing_tensors) if rec.provenance else None,
        "lint": ";".join(f.code for f in rec.lint),
        "constituents": ";".join(f"{c.id}@{c.revision}" if c.revision else c.id for c in rec.constituents),
        "error": rec.error,
    }


def write_csv(path: Path, records: list[BatchRecord]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for rec in records:
        writer.writerow({k: _csv_safe(v) for k, v in csv_row(rec).items()})
    write_redacted_text(path, buf.getvalue())
    return path


def dump_jsonl(path: Path, records: list[BatchRecord]) -> None:
    write_text_atomic(path, "".join(redacted_json(r, indent=None, by_alias=True) for r in records))


__all__ = ["BatchRecord", "ScoredModel", "Provenance", "LintFlag", "append_record", "read_records", "latest",
           "write_csv", "dump_jsonl", "RESULTS_JSONL", "RESULTS_CSV", "LEADERBOARD_HTML", "FINAL_STATUSES"]
