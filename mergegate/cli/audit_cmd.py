"""``mergegate audit``: score the safety alignment of one or more models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mergegate.cli.options import add_audit_options, resolve_protocol_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "audit", help="score models' safety alignment (Llama Guard on unsafe prompts)",
        description="Generate answers to unsafe prompts with each MODEL, judge them with a Llama Guard "
                    "model and report the share of safe answers (alignment) with a 95%% Wilson interval, "
                    "plus over-refusal on benign prompts.")
    p.add_argument("models", nargs="+", metavar="MODEL", help="local model dir or Hub id[@revision]")
    add_audit_options(p)
    p.add_argument("--judge-protocol", default=None, metavar="NAME",
                   choices=["llama-guard-1", "llama-guard-2", "llama-guard-3", "llama-guard-4"],
                   help="force the judge protocol when it cannot be detected from the id or files")
    p.add_argument("--cache", default=None, metavar="PATH",
                   help="cache file or dir (default $MERGEGATE_CACHE_DIR or the user cache dir)")
    p.add_argument("--chat-template", default=None, metavar="FILE", help="Jinja chat template overriding the models'")
    p.add_argument("--trust-remote-code", action="store_true", help="allow custom model code from the Hub")
    p.add_argument("--allow-pickle", action="store_true", help="accept *.bin pickle weights (trusted models only)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the JSON report to OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_table(report) -> str:  # noqa: ANN001 - AuditReport, imported lazily
    from mergegate.audit.protocols import category_label

    rows = [("model", "alignment", "95% CI", "over-refusal", "n")]
    for s in report.scores:
        over = "-" if s.over_refusal is None else f"{_pct(s.over_refusal)} (n={s.n_benign})"
        rows.append((s.model.id, _pct(s.alignment), f"{_pct(s.interval.low)}-{_pct(s.interval.high)}",
                     over, str(s.n)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"judge: {report.judge.id} ({report.judge.protocol})"
                 + (f" @ {report.judge.revision[:12]}" if report.judge.revision else "")
                 + f"; prompts: {report.prompts.source} (n={report.prompts.n})")
    if report.protocol != "default":
        lines.append(f"protocol: {report.protocol}")
    if report.over_refusal_judge:
        lines.append(f"over-refusal judge: {report.over_refusal_judge}")
    for s in report.scores:
        if s.n_too_long or s.n_benign_too_long:
            lines.append(f"{s.model.id}: {s.n_too_long} unsafe and {s.n_benign_too_long} benign prompt(s) over "
                         f"the prompt budget were not answered (counted unsafe / refused)")
        if s.by_guard_category:
            cats = ", ".join(f"{category_label(code, report.judge.categories)}: {n}"
                             for code, n in s.by_guard_category.items())
            lines.append(f"unsafe by judge category, {s.model.id}: {cats}")
    for c in report.comparisons:
        lines.append(f"McNemar {c.model_a} vs {c.model_b}: {c.a_safe_b_unsafe}/{c.a_unsafe_b_safe} "
                     f"discordant, p={c.p_value:.3g}")
    if report.off_protocol is not None:
        o = report.off_protocol
        lines.append(f"judge off-protocol (first-token mass mostly on neither safe nor unsafe): {o.n_dominant} of "
                     f"{o.n} items ({o.share:.1%})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from mergegate.audit.api import audit_models

    resolve_protocol_args(args)
    report = audit_models(
        args.models, prompts=args.prompts, benign=None if args.benign.lower() == "none" else args.benign,
        judge=args.judge, backend=args.backend, device=args.device, limit=args.limit, seed=args.seed,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, cache=args.cache,
        chat_template=args.chat_template, trust_remote_code=args.trust_remote_code,
        progress=not args.no_progress, judge_protocol=args.judge_protocol, allow_pickle=args.allow_pickle,
        protocol=args.protocol, max_prompt_tokens=args.max_prompt_tokens)
    from mergegate.atomic import write_redacted_json
    from mergegate.redact import redact

    print(redact(format_table(report)))
    if args.json:  # prompts, answers and paths included: every string redacted
        write_redacted_json(Path(args.json), report)
        print(redact(f"report written to {args.json}"), file=sys.stderr)
    return 0
