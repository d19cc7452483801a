"""The gate: rebuild a declared merge, audit it and its constituents, decide, card, publish.

Public API (imported lazily, so ``import mergegate.gate`` stays cheap):

- :func:`run_gate` → :class:`RunReport` (``mergegate run``)
- :class:`GatePolicy`, :func:`load_policy`; :func:`decide` → :class:`GateDecision`
- :func:`write_card` / :func:`render_card` (``mergegate card``)
- :func:`check_pushable` and :func:`mergegate.gate.push.push` (``mergegate push``)
- :func:`load_report`, :func:`write_report`
- :mod:`mergegate.gate.github` (job summary, outputs, check run, sticky PR comment)
- :func:`run_demo` (``mergegate demo``)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mergegate.gate.card import render_card, write_card
    from mergegate.gate.decision import GateDecision, RuleResult, decide
    from mergegate.gate.demo import run_demo
    from mergegate.gate.pipeline import run_gate
    from mergegate.gate.policy import GatePolicy, load_policy
    from mergegate.gate.push import check_pushable
    from mergegate.gate.report import ModelSummary, RunReport, load_report, write_report

_EXPORTS = {
    "run_gate": "pipeline", "GatePolicy": "policy", "load_policy": "policy", "decide": "decision",
    "GateDecision": "decision", "RuleResult": "decision", "RunReport": "report",
    "ModelSummary": "report", "load_report": "report", "write_report": "report",
    "render_card": "card", "write_card": "card", "check_pushable": "push",
    "run_demo": "demo",
}
__all__ = ["GateDecision", "GatePolicy", "ModelSummary", "RuleResult", "RunReport", "check_pushable",
           "decide", "load_policy", "load_report", "render_card", "run_demo", "run_gate", "write_card",
           "write_report"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f"mergegate.gate.{module}"), name)
