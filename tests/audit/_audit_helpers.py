"""Shared helpers for the audit tests (imported as a plain module, like tests/gate/_gate_fakes.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TOY_MAX_NEW_TOKENS = 48


def toy_kwargs(fleet: Path, **overrides: Any) -> dict[str, Any]:
    """``audit_models`` keyword arguments for an audit of the toy fleet with its own guard."""
    kwargs: dict[str, Any] = dict(
        prompts=str(fleet / "prompts" / "unsafe.jsonl"), benign=str(fleet / "prompts" / "benign.jsonl"),
        judge=str(fleet / "guard"), max_new_tokens=TOY_MAX_NEW_TOKENS, batch_size=64, progress=False)
    kwargs.update(overrides)
    return kwargs
