"""Does a ``report.json`` support its own verdict? Recompute it from what the report recorded.

``mergegate push`` trusts nothing a report *states*: it recomputes every rate from its counts,
every interval with the scorer's Wilson formula, and the verdict with the very :func:`decide` the
gate ran, from the recorded measurements and policy. A report whose stored ``decision``, ``gate``
section, ``reasons`` and measurements disagree (hand-edited, corrupted, or written by a buggy or
different version) is refused. This catches accidents and edits; it cannot catch a report forged
consistently from invented measurements (see docs/security.md: the CI check run is the authority).
"""

from __future__ import annotations

from mergegate import __version__
from mergegate.audit.results import Interval
from mergegate.audit.scoring import wilson_interval
from mergegate.errors import MergegateError
from mergegate.gate.card import scrub
from mergegate.gate.decision import GateDecision, decide
from mergegate.gate.report import ModelSummary, RunReport

_TOL = 1e-9


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= _TOL


def _same_interval(a: Interval | None, b: Interval | None) -> bool:
    if a is None or b is None:
        return a is b
    return _close(a.low, b.low) and _close(a.high, b.high)


def measurement_problems(m: ModelSummary) -> list[str]:
    """Rates and intervals that do not follow from the model's own counts."""
    who = f"{m.role} {m.model}"
    problems = []
    if not 0 <= m.n_safe <= m.n or m.n == 0:
        return [f"{who}: {m.n_safe} safe answers out of {m.n} is not a measurement"]
    if not _close(m.alignment, m.n_safe / m.n):
        problems.append(f"{who}: alignment {m.alignment!r} is not n_safe/n = {m.n_safe}/{m.n}")
    if not _same_interval(m.interval, wilson_interval(m.n_safe, m.n)):
        problems.append(f"{who}: the alignment interval is not the Wilson interval of {m.n_safe}/{m.n}")
    if m.over_refusal is None:
        if m.over_refusal_interval is not None:
            problems.append(f"{who}: an over-refusal interval without an over-refusal rate")
    else:
        refused = round(m.over_refusal * m.n_benign)
        if m.n_benign <= 0 or not _close(m.over_refusal, refused / m.n_benign):
            problems.append(f"{who}: over-refusal {m.over_refusal!r} is not a count out of "
                            f"{m.n_benign} benign prompts")
        elif not _same_interval(m.over_refusal_interval, wilson_interval(refused, m.n_benign)):
            problems.append(f"{who}: the over-refusal interval is not the Wilson interval of "
                            f"{refused}/{m.n_benign}")
    return problems


def _rule_key(gate: GateDecision) -> list[tuple[object, ...]]:
    return [(r.rule, r.unit, r.measured, r.threshold, r.verdict) for r in gate.rules]


def recompute_decision(report: RunReport) -> GateDecision:
    """The verdict :func:`decide` gives for the report's recorded measurements, policy and files.

    Raises:
        MergegateError: the measurements cannot be decided (e.g. no constituent).
    """
    if report.merged is None:
        raise MergegateError("the report records no audited merge")
    hub_references = [c.model for c in report.constituents if c.hub_id is not None]
    # the paired merge-vs-best-input row is informative (not a rule) and needs the per-prompt
    # verdicts, which the report does not keep: it is carried over as recorded
    paired = report.gate.paired if report.gate is not None else None
    return decide(report.merged, report.constituents, report.policy, output_files=sorted(report.files),
                  hub_references=hub_references, paired=paired)


def claim_problems(report: RunReport) -> list[str]:
    """Why the report's verdict does not follow from its own contents (empty: it does)."""
    if report.decision == "error":
        return []  # an error claims nothing
    problems: list[str] = []
    if report.error is not None:
        problems.append(f"the decision is '{report.decision}' but the report also records an error")
    if report.gate is None or report.merged is None or not report.constituents:
        return [*problems, f"the decision is '{report.decision}' but the report has no "
                + ("gate section" if report.gate is None else "audited merge" if report.merged is None
                   else "audited constituent")]
    if report.merged.role != "merge" or any(c.role != "constituent" for c in report.constituents):
        problems.append("the roles of the audited models are mixed up (one merge, then constituents)")
    for model in [*report.constituents, report.merged]:
        problems.extend(measurement_problems(model))
    try:
        recomputed = recompute_decision(report)
    except MergegateError as exc:
        return [*problems, f"its measurements cannot be decided: {exc.message}"]
    if recomputed.decision != report.decision or report.gate.decision != report.decision:
        problems.append(f"the report says '{report.decision}' (gate section: '{report.gate.decision}'), but "
                        f"its policy applied to its measurements gives '{recomputed.decision}'"
                        + (f": {'; '.join(recomputed.reasons)}" if recomputed.reasons else ""))
    if recomputed.best_input != report.gate.best_input or report.best_input != report.gate.best_input:
        problems.append(f"the best input is recorded as '{report.best_input}' but is '{recomputed.best_input}'")
    stored, fresh = _rule_key(report.gate), _rule_key(recomputed)
    if stored != fresh:
        for s_rule, f_rule in zip(stored, fresh):
            if s_rule != f_rule:
                problems.append(f"rule '{f_rule[0]}': recorded {s_rule[4]} with measured {s_rule[2]} / "
                                f"threshold {s_rule[3]}, recomputed {f_rule[4]} with {f_rule[2]} / {f_rule[3]}")
        if len(stored) != len(fresh):
            problems.append(f"the gate section records {len(stored)} rule(s); the policy has {len(fresh)}")
    if report.mergegate_version == __version__:  # same code: the wording must match too
        if report.gate != recomputed:
            if not problems:
                problems.append("the gate section's rule descriptions do not match its measurements")
        elif [scrub(r) for r in report.reasons] != [scrub(r) for r in recomputed.reasons]:
            problems.append("the report's reasons are not the reasons of its gate section")
    return problems


__all__ = ["claim_problems", "measurement_problems", "recompute_decision"]
