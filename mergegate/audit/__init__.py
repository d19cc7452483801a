"""Safety audit: generate answers to unsafe prompts, judge them with Llama Guard, score them.

Public API: :func:`audit_models` (and the result types in :mod:`mergegate.audit.results`).
Heavy libraries (torch, transformers, datasets) are imported only when an audit runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mergegate.audit.results import (
    AuditReport,
    CategoryTally,
    DatasetRef,
    GenerationSettings,
    Interval,
    ItemResult,
    JudgeRef,
    ModelRef,
    ModelScore,
    PairedComparison,
    Verdict,
)

if TYPE_CHECKING:
    from mergegate.audit.api import audit_models

__all__ = [
    "audit_models", "AuditReport", "CategoryTally", "DatasetRef", "GenerationSettings", "Interval",
    "ItemResult", "JudgeRef", "ModelRef", "ModelScore", "PairedComparison", "Verdict",
]


def __getattr__(name: str) -> Any:
    if name == "audit_models":
        from mergegate.audit.api import audit_models

        return audit_models
    raise AttributeError(name)
