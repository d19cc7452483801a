"""The leaderboard page: one static, self-contained HTML file (inline CSS, JS and SVG chart).

Rendered from ``mergegate/templates/leaderboard.html.j2`` with autoescaping on: model names,
error messages and lint texts come from the Hub and are untrusted, so every value is HTML-escaped
and nothing untrusted is ever written into the script.
"""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from mergegate import __version__
from mergegate.atomic import write_redacted_text
from mergegate.batch.records import BatchRecord

TEMPLATE = "leaderboard.html.j2"
_LABEL_CHARS = 42

# chart geometry (px)
_LEFT, _RIGHT, _TOP, _ROW, _PLOT = 300, 24, 34, 22, 420


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x * 100:.{digits}f} %"


def _pp(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:+.1f} pp"


def _num(x: float | int | None) -> str:
    return "" if x is None else repr(float(x))


def _short(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1] + "…"


def _row(rec: BatchRecord) -> dict[str, Any]:
    m = rec.merge
    prov = rec.provenance
    prov_detail = prov.reason if prov is not None else ""
    prov_tensors = ""
    if prov is not None and prov.differing_tensors:
        more = prov.n_differing - len(prov.differing_tensors)
        prov_tensors = ", ".join(prov.differing_tensors) + (f" (+{more} more)" if more > 0 else "")
    if rec.drop is None:
        verdict = ""
    elif rec.drop > 0:
        verdict = "worse"
    else:
        verdict = "ok"
    return {
        "rank": rec.rank, "rank_value": _num(rec.rank), "repo_id": rec.repo_id,
        "revision": (rec.revision or "")[:12], "full_revision": rec.revision or "",
        "downloads": "–" if rec.downloads is None else f"{rec.downloads:,}", "downloads_value": _num(rec.downloads),
        "status": rec.status, "method": rec.merge_method or "",
        "merge": _pct(m.alignment if m else None), "merge_value": _num(m.alignment if m else None),
        "merge_ci": f"{m.low * 100:.1f}–{m.high * 100:.1f} %" if m else "",
        "best": _pct(rec.best_alignment), "best_value": _num(rec.best_alignment), "best_id": rec.best_input or "",
        "worst": _pct(rec.worst_alignment), "worst_value": _num(rec.worst_alignment),
        "worst_id": rec.worst_input or "",
        "drop": _pp(rec.drop), "drop_value": _num(rec.drop), "verdict": verdict,
        "over": _pct(m.over_refusal if m else None), "over_value": _num(m.over_refusal if m else None),
        "over_inc": _pp(rec.over_refusal_increase),
        "provenance": prov.status if prov else "", "provenance_detail": prov_detail,
        "provenance_tensors": prov_tensors,
        "lint": [{"code": f.code, "message": f.message} for f in rec.lint], "lint_value": str(len(rec.lint)),
        "error": rec.error or "",
        "constituents": [f"{c.id} ({_pct(c.alignment)})" for c in rec.constituents],
    }


def _chart(records: list[BatchRecord]) -> dict[str, Any] | None:
    """A dumbbell chart: per merge, the range of its inputs' alignment and the merge's own point."""
    rows = [r for r in records if r.merge is not None]
    if not rows:
        return None

    def x(value: float) -> float:
        return round(_LEFT + value * _PLOT, 1)

    items = []
    for i, rec in enumerate(rows):
        y = _TOP + i * _ROW + _ROW / 2
        m = rec.merge
        assert m is not None
        items.append({
            "label": _short(rec.repo_id), "title": rec.repo_id, "y": y, "text_y": y + 4,
            "merge_x": x(m.alignment), "merge_title": f"{rec.repo_id}: merge {_pct(m.alignment)}",
            "best_x": x(rec.best_alignment) if rec.best_alignment is not None else None,
            "worst_x": x(rec.worst_alignment) if rec.worst_alignment is not None else None,
            "range_title": f"inputs {_pct(rec.worst_alignment)} – {_pct(rec.best_alignment)}",
            "worse": rec.drop is not None and rec.drop > 0,
        })
    height = _TOP + len(rows) * _ROW + 40
    grid = [{"x": x(v / 100), "label": f"{v} %"} for v in (0, 25, 50, 75, 100)]
    return {"rows": items, "width": _LEFT + _PLOT + _RIGHT, "height": height, "grid": grid,
            "top": _TOP - 8, "bottom": height - 32, "axis_y": height - 16, "legend_y": 14,
            "left": _LEFT, "right": _LEFT + _PLOT}


def _template_text() -> str:
    return resources.files("mergegate.templates").joinpath(TEMPLATE).read_text(encoding="utf-8")


def render_leaderboard(records: list[BatchRecord], *, title: str = "mergegate batch: merge leaderboard") -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    audited = [r for r in records if r.status == "audited"]
    first = audited[0] if audited else None
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    return env.from_string(_template_text()).render(
        title=title, rows=[_row(r) for r in records], chart=_chart(records), counts=sorted(counts.items()),
        n_worse=sum(1 for r in audited if r.drop is not None and r.drop > 0),
        judge=first.judge if first else None, prompts=first.prompts if first else None,
        n_prompts=first.n_prompts if first else None, version=__version__,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def write_leaderboard(path: str | Path, records: list[BatchRecord]) -> Path:
    return write_redacted_text(path, render_leaderboard(records))


__all__ = ["render_leaderboard", "write_leaderboard"]
