"""Batch auditor: audit many published merges (``mergegate batch``), resumable and shardable.

Public API (imported lazily so ``import mergegate.batch`` stays cheap):

- :func:`run_batch` (list or read the merges, pin, lint, audit, check provenance, write outputs)
- :func:`collect` (merge the outputs of ``--shard i/n`` runs)
- :class:`AuditOptions`, :class:`BatchRecord` (one line of ``results.jsonl``)
- :func:`render_leaderboard` (the static HTML page)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mergegate.batch.leaderboard import render_leaderboard, write_leaderboard
    from mergegate.batch.records import BatchRecord, LintFlag, Provenance, ScoredModel, read_records
    from mergegate.batch.runner import AuditOptions, BatchSummary, collect, run_batch

_EXPORTS = {
    "run_batch": "runner", "collect": "runner", "AuditOptions": "runner", "BatchSummary": "runner",
    "BatchRecord": "records", "LintFlag": "records", "Provenance": "records", "ScoredModel": "records",
    "read_records": "records", "render_leaderboard": "leaderboard", "write_leaderboard": "leaderboard",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f"mergegate.batch.{module}"), name)
