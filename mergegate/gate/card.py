"""The merged model's card: Hub front matter + a verdict, audit tables, chart, recipe and command.

Rendered from ``mergegate/templates/model_card.md.j2`` with a strict Jinja environment (a missing
variable is an error, not an empty string), then parsed and written by ``huggingface_hub``'s
:class:`~huggingface_hub.ModelCard`, so the front matter is exactly what the Hub reads. A card is
only ever rendered for a decided run (pass or blocked); an errored run gets none.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergegate.atomic import write_redacted_text
from mergegate.errors import MergegateError
from mergegate.gate.card_metadata import (CARD_TAGS, EVAL_RESULTS_PATH, build_card_data, dataset_hub_id,
                                          dataset_label, write_eval_results)
from mergegate.gate.card_metadata import judge_name as _judge_name
from mergegate.gate.decision import RuleResult
from mergegate.gate.methods import method_info
from mergegate.gate.report import CARD_FILENAME, PLOT_FILENAME, ModelSummary, RunReport
from mergegate.models import looks_like_hub_id
from mergegate.redact import redact

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

    from mergegate.audit.results import DatasetRef

TEMPLATE_NAME = "model_card.md.j2"


def scrub(text: str) -> str:
    """Redact tokens and shorten the user's home directory to ``~`` in text that leaves the machine."""
    text = redact(text)
    home = os.path.expanduser("~")
    if home and home not in ("/", "~") and len(home) > 1:
        text = text.replace(home.rstrip("/") + "/", "~/")
    return text


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f} %"


def _hub_link(repo_id: str) -> str:
    return f"[{repo_id}](https://huggingface.co/{repo_id})"


def _dataset_md(ref: DatasetRef) -> str:
    hub_id = dataset_hub_id(ref)
    if hub_id:
        text = f"[{hub_id}](https://huggingface.co/datasets/{hub_id})"
        if ref.revision:
            text += f" at `{ref.revision[:12]}`"
        return text
    text = f"`{Path(ref.source).name}` (local file"
    return text + (f", sha256 `{ref.revision[:12]}…`)" if ref.revision else ")")


def _model_md(summary: ModelSummary) -> str:
    if summary.hub_id:
        return _hub_link(summary.hub_id)
    return f"`{scrub(summary.model)}`"


def _revision_md(summary: ModelSummary) -> str:
    if summary.hub_id and summary.revision:
        return (f"[`{summary.revision[:12]}`](https://huggingface.co/{summary.hub_id}/tree/"
                f"{summary.revision})")
    if summary.revision:
        return f"`{summary.revision[:12]}`"
    if summary.weights_sha256:
        return f"sha256 `{summary.weights_sha256[:12]}…`"
    return "—"


def _interval(summary_low: float, summary_high: float) -> str:
    return f"{summary_low * 100:.1f}–{summary_high * 100:.1f} %"


def _short(summary: ModelSummary) -> str:
    if summary.role == "merge":
        return f"**{summary.model}**"
    return summary.hub_id or Path(summary.model).name or summary.model


def format_rule_value(rule: RuleResult, value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    if rule.unit == "%":
        return f"{value:.1f} %"
    if rule.unit == "pp":
        return f"{value:+.1f} pp" if signed else f"{value:.1f} pp"
    return f"{value:g} {rule.unit}".rstrip()


def guard_category_label(code: str, report: RunReport) -> str:
    """``S1 Violent Crimes``: the code and the judge's own name for it (names differ per version:
    S5 is Specialized Advice for Llama Guard 2, Defamation for Llama Guard 3)."""
    from mergegate.audit.protocols import category_label

    return category_label(code, report.judge.categories if report.judge else {})


def _guard_order(code: str) -> tuple[str, int, str]:
    digits = code[1:]
    return (code[:1], int(digits) if digits.isdigit() else 0, code)


def _category_rows(models: list[ModelSummary], *, guard: bool, report: RunReport | None = None
                   ) -> list[dict[str, Any]]:
    names: list[str] = []
    for m in models:
        keys = m.by_guard_category if guard else m.by_source_category
        names.extend(k for k in keys if k not in names)
    rows = []
    for name in sorted(names, key=_guard_order if guard else None):
        cells = []
        for m in models:
            if guard:
                cells.append(str(m.by_guard_category.get(name, 0)))
            else:
                tally = m.by_source_category.get(name)
                cells.append(f"{tally.unsafe}/{tally.n}" if tally else "—")
        label = guard_category_label(name, report) if guard and report is not None else name
        rows.append({"name": label, "cells": cells})
    return rows


def paired_row(report: RunReport) -> dict[str, str] | None:
    """The decision table's line comparing the merge with its best input on the same prompts."""
    paired = report.gate.paired if report.gate else None
    if paired is None:
        return None
    best = paired.best_input
    return {"description": f"paired with {best} on the same {paired.n} prompts: merge safe & best unsafe / "
                           f"merge unsafe & best safe (exact McNemar)",
            "measured": f"{paired.merge_safe_best_unsafe} / {paired.merge_unsafe_best_safe}",
            "threshold": f"p = {paired.p_value:.3g}",
            "verdict": "ℹ️ " + ("significant (p < 0.05)" if paired.p_value < 0.05 else "not significant (p ≥ 0.05)")}


def _license_md(report: RunReport) -> tuple[str, list[str]]:
    lic = report.license
    if lic is None:
        return "", []
    lines = [f"{scrub(m)}: `{v}`" if v else f"{scrub(m)}: unknown" for m, v in lic.per_model.items()]
    if lic.license and not lic.conflict:
        return f"`{lic.license}`, the license every constituent declares:", lines
    if lic.conflict:
        return ("⚠️ **License conflict:** the constituents declare different licenses, so this card "
                "sets none. Check that every license allows this merge and choose one before "
                "publishing:"), lines
    return ("⚠️ **License unknown:** the license of some constituents could not be read, so this "
            "card sets none:"), lines


def card_context(report: RunReport) -> dict[str, Any]:
    """Everything the template shows, formatted."""
    merged = report.merged
    if merged is None or report.gate is None or report.decision == "error":
        raise MergegateError("refusing to render a card for a run that did not reach a decision")
    info = method_info(report.merge.method if report.merge else None)
    method_md = f"[{info.pretty_name}]({info.reference_url})" if info.reference_url else info.pretty_name
    base_md = None
    models_md = []
    base_id = report.merge.base_model if report.merge else None
    for c in report.constituents:
        if base_id and c.model == base_id and report.merge and report.merge.method != "slerp":
            base_md = _model_md(c)
        else:
            models_md.append(_model_md(c))
    best = report.best_input
    rows = []
    for m in report.models():
        role = "**merge**" if m.role == "merge" else "constituent"
        if m.role == "constituent" and m.model == best:
            role += " ★ best input"
        if m.role == "merge":
            cells = {"model": f"**{_model_md(m) if m.hub_id else m.model}**", "role": role,
                     "revision": "this model", "alignment": f"**{_pct(m.alignment)}**"}
        else:
            cells = {"model": _model_md(m), "role": role, "revision": _revision_md(m),
                     "alignment": _pct(m.alignment)}
        cells.update(interval=_interval(m.interval.low, m.interval.high),
                     over_refusal=_pct(m.over_refusal), n=str(m.n))
        rows.append(cells)
    rules = [{"description": r.description, "measured": format_rule_value(r, r.measured, signed=True),
              "threshold": format_rule_value(r, r.threshold),
              "verdict": "✅ pass" if r.verdict == "pass" else "❌ fail"} for r in report.gate.rules]
    models = report.models()
    judge_md = "an unrecorded judge"
    if report.judge:
        jid = report.judge.id
        judge_md = _hub_link(jid) if looks_like_hub_id(jid) else f"`{_judge_name(jid)}`"
        judge_md += f" ({report.judge.protocol} protocol"
        judge_md += (", verdict from the first-token probabilities" if report.judge.scoring == "first-token"
                     else ", 'unsafe' counted in its greedy answer" if report.judge.scoring == "generate" else "")
        judge_md += ")"
        if report.protocol != "default":
            judge_md += f" under the `{report.protocol}` audit protocol"
    gen = report.generation
    generation_desc = ""
    if gen:
        generation_desc = (f"Answers were generated {'greedily' if gen.greedy else 'by sampling'} "
                           f"with the {gen.backend} backend, at most {gen.max_new_tokens} new tokens.")
    interval = merged.interval
    license_md, license_lines = _license_md(report)
    best_summary = next((c for c in report.constituents if c.model == best), None)
    if report.decision == "pass":
        verdict_line = (f"Alignment {_pct(merged.alignment)} vs {_pct(best_summary.alignment)} for "
                        f"its best input, {_short(best_summary)}." if best_summary else "")
    else:
        verdict_line = "Reasons:"
    return {
        "name": report.name,
        "decision": report.decision,
        "verdict_line": verdict_line,
        "reasons": [scrub(r) for r in report.reasons],
        "method_md": method_md,
        "base_md": base_md,
        "models_md": models_md,
        "prompts_n": report.prompts.n if report.prompts else merged.n,
        "prompts_md": _dataset_md(report.prompts) if report.prompts else "an unrecorded prompt set",
        "benign_n": report.benign.n if report.benign else merged.n_benign,
        "benign_md": _dataset_md(report.benign) if report.benign else None,
        "judge_md": judge_md,
        "interval_desc": f"{interval.confidence * 100:.0f} % {interval.method.capitalize()} score intervals"
        if interval.method == "wilson" else f"{interval.confidence * 100:.0f} % {interval.method} intervals",
        "generation_desc": generation_desc,
        "rows": rows,
        "plot": report.plot or PLOT_FILENAME,
        "policy_source": Path(report.policy_source).name if report.policy_source else None,
        "rules": rules + ([row] if (row := paired_row(report)) else []),
        "over_refusal_judge": ("XSTest's string-match classifier" if report.over_refusal_judge == "xstest-strmatch"
                               else report.over_refusal_judge or "a refusal classifier"),
        "category_models": [_short(m) for m in models],
        "categories": _category_rows(models, guard=False),
        "guard_categories": _category_rows(models, guard=True, report=report),
        "license_md": license_md,
        "license_lines": license_lines,
        "recipe": scrub(report.merge.config_text.rstrip("\n")) if report.merge else "# (not recorded)",
        "weighting": _weighting_context(report),
        "command": scrub(report.command or "mergegate run mergekit_config.yml --out OUT"),
        "version": report.mergegate_version,
        "date": report.created_at.date().isoformat(),
    }


def _weighting_context(report: RunReport) -> dict[str, Any] | None:
    """Declared vs optimized side by side, when the weights were chosen with data."""
    w = report.weighting
    if w is None:
        return None
    genes = list(dict.fromkeys([*w.declared.weights, *w.optimized.weights]))

    def num(x: float | None) -> str:
        return "–" if x is None else f"{x:.4g}"

    rows = [{"name": g, "declared": num(w.declared.weights.get(g)), "optimized": num(w.optimized.weights.get(g))}
            for g in genes]
    rows += [
        {"name": "alignment (% safe)", "declared": _pct(w.declared.alignment), "optimized": _pct(w.optimized.alignment)},
        {"name": "safety loss (CE on D_safety)", "declared": num(w.declared.safety_loss),
         "optimized": num(w.optimized.safety_loss)},
        {"name": "domain loss (CE on D_expert)", "declared": num(w.declared.domain_loss),
         "optimized": num(w.optimized.domain_loss)},
    ]
    strategy = {"evomm": "EvoMM (CMA-ES)", "cocktail": "LM-Cocktail"}.get(w.strategy, w.strategy)
    return {"strategy": strategy, "rows": rows, "evaluations": w.evaluations, "alpha": w.alpha,
            "safety_examples": w.safety_examples, "expert_examples": w.expert_examples,
            "declared_recipe": scrub(w.declared_recipe.rstrip("\n"))}


def _template_text() -> str:
    return resources.files("mergegate.templates").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")


def render_card(report: RunReport) -> ModelCard:
    """Render the card of ``report`` (a decided run) as a :class:`~huggingface_hub.ModelCard`.

    Raises:
        MergegateError: the run ended in an error (no card may claim anything about it).
    """
    import jinja2
    from huggingface_hub import ModelCard

    context = card_context(report)
    card_data = build_card_data(report)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    text = env.from_string(_template_text()).render(card_data=card_data.to_yaml(), **context)
    return ModelCard(scrub(text))


def write_card(report: RunReport, out_dir: str | Path, *, plot: bool = True) -> Path:
    """Write ``README.md`` (and the chart) for ``report`` into ``out_dir``; returns the card path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    card = render_card(report)
    if plot:
        from mergegate.gate.plot import write_alignment_plot

        write_alignment_plot(report, out_dir / (report.plot or PLOT_FILENAME))
    return write_redacted_text(out_dir / CARD_FILENAME, str(card))


def rerender_card(report_path: str | Path, out_dir: str | Path, *, plot: bool = True,
                  eval_results: bool = False) -> Path:
    """``mergegate card``: render the card of a saved report into ``out_dir``.

    When ``out_dir`` is the report's own directory, the report's hashes of the card and chart are
    updated (they are derived from the report; the weights' hashes are never touched), so a
    re-rendered output can still be pushed. ``eval_results`` also writes
    ``.eval_results/mergegate.yaml`` (see :mod:`mergegate.gate.card_metadata`), vouched for the same way.

    Raises:
        InputError: the report is unreadable or records an error (an errored run has no card).
    """
    from mergegate.errors import InputError
    from mergegate.models.fingerprints import sha256_file
    from mergegate.gate.report import REPORT_FILENAME, load_report, write_report

    report_path = Path(report_path)
    if report_path.is_dir():
        report_path = report_path / REPORT_FILENAME
    report = load_report(report_path)
    if report.decision == "error" or report.gate is None or report.merged is None:
        raise InputError("this run ended in an error, so there is no verdict to put on a card",
                         source=str(report_path), hint="fix the error and run `mergegate run` again")
    out_dir = Path(out_dir)
    card_path = write_card(report, out_dir, plot=plot)
    written = [CARD_FILENAME, *([report.plot or PLOT_FILENAME] if plot else [])]
    if eval_results:
        if write_eval_results(report, out_dir) is not None:
            written.append(EVAL_RESULTS_PATH)
    if out_dir.resolve() == report_path.resolve().parent and report.files:
        files = dict(report.files)
        for name in written:
            files[name] = sha256_file(out_dir / name, use_cache=False)
        write_report(report.model_copy(update={"files": files, "card": CARD_FILENAME}), report_path)
    return card_path


__all__ = ["render_card", "write_card", "rerender_card", "build_card_data", "card_context", "scrub",
           "dataset_hub_id", "CARD_TAGS"]
