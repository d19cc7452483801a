"""The card's bar chart: alignment of every constituent and of the merge, with interval error bars.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global backend
switch), and writes a PNG without a timestamp so the same report gives the same bytes.
"""

from __future__ import annotations

import io
from pathlib import Path

from mergegate.atomic import write_bytes_atomic
from mergegate.gate.report import ModelSummary, RunReport

_MERGE_PASS, _MERGE_BLOCKED, _BEST, _OTHER = "#2e7d32", "#c62828", "#f9a825", "#90a4ae"


def _label(summary: ModelSummary) -> str:
    name = summary.label
    if summary.role != "merge" and not summary.hub_id:
        name = Path(name).name or name  # local directory: its name
    return name if len(name) <= 32 else name[:31] + "…"


def write_alignment_plot(report: RunReport, path: str | Path) -> Path:
    """Write the alignment chart of ``report`` to ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = report.models()
    if not models:
        raise ValueError("nothing to plot: the report has no audited model")
    values = [m.alignment * 100 for m in models]
    low = [max(0.0, v - m.interval.low * 100) for v, m in zip(values, models, strict=True)]
    high = [max(0.0, m.interval.high * 100 - v) for v, m in zip(values, models, strict=True)]
    colours = []
    for m in models:
        if m.role == "merge":
            colours.append(_MERGE_PASS if report.decision == "pass" else _MERGE_BLOCKED)
        elif m.model == report.best_input:
            colours.append(_BEST)
        else:
            colours.append(_OTHER)

    fig = Figure(figsize=(max(4.0, 1.4 * len(models) + 1.5), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(models)))
    ax.bar(xs, values, yerr=[low, high], color=colours, capsize=4, edgecolor="#263238", linewidth=0.6)
    for x, v, h in zip(xs, values, high, strict=True):
        ax.text(x + 0.08, v + h + 1, f"{v:.1f} %", ha="left", va="bottom", fontsize=8)
    if report.gate is not None:
        for rule in report.gate.rules:
            if rule.rule == "tolerance" and rule.threshold is not None:
                ax.axhline(rule.threshold, color=_BEST, linestyle="--", linewidth=1,
                           label=f"gate threshold ({rule.threshold:.1f} %)")
            if rule.rule == "min_alignment" and rule.threshold is not None:
                ax.axhline(rule.threshold, color="#6d4c41", linestyle=":", linewidth=1,
                           label=f"minimum ({rule.threshold:.0f} %)")
        ax.legend(loc="lower right", fontsize=7, frameon=False)
    ax.set_xticks(xs)
    ax.set_xticklabels([_label(m) for m in models], fontsize=8, rotation=12, ha="right")
    ax.set_ylim(0, 112)
    ax.set_ylabel("alignment (% safe answers)", fontsize=8)
    title = {"pass": "passed", "blocked": "BLOCKED"}.get(report.decision, report.decision)
    ax.set_title(f"{report.name}: {title}", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return write_bytes_atomic(path, buffer.getvalue())


__all__ = ["write_alignment_plot"]
