"""``mergegate batch``: audit the most downloaded merges on the Hub (or a list) into a leaderboard.

    mergegate batch --top 50 [--filter mergekit] --out DIR [--shard i/n] [audit options]
    mergegate batch --models merges.txt --out DIR
    mergegate batch collect SHARD_DIR... --out DIR
"""

from __future__ import annotations

import argparse
import sys

from mergegate.cli.options import add_audit_options, non_negative_float, positive_int, resolve_protocol_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch", help="audit many published merges (Hub top-N or a list) into results and a leaderboard",
        description="List merges on the Hub (most downloaded first) or read them from a file, pin every "
        "revision, audit each merge and its constituents (one shared cache), rebuild its recipe to check "
        "provenance, lint its card, and write DIR/results.jsonl, DIR/results.csv and DIR/leaderboard.html. "
        "Re-running with the same --out resumes: merges already recorded at the same revision are skipped. "
        "`mergegate batch collect DIR... --out DIR` merges the outputs of --shard runs.",
        epilog="Exit codes: 0 done, 2 bad input, 3 some merge failed unexpectedly (see results.jsonl).")
    src = p.add_argument_group("which merges")
    src.add_argument("--top", type=positive_int, metavar="N", help="the N most downloaded models matching --filter")
    src.add_argument("--filter", action="append", metavar="TAG",
                     help="Hub filter for --top (repeatable; all must match; default: mergekit)")
    src.add_argument("--models", metavar="FILE", help="a file with one Hub id org/name[@revision] per line")
    src.add_argument("--shard", metavar="i/n",
                     help="audit only every n-th merge starting at the i-th (1-based; for a CI matrix)")
    p.add_argument("--out", metavar="DIR", help="output directory: new, empty, or a previous batch output (reused to resume; "
                   "anything else is refused)")
    p.add_argument("--max-rebuild-gb", type=non_negative_float, default=20.0, metavar="GB",
                   help="skip the provenance rebuild when inputs or output exceed this size (default: 20)")
    p.add_argument("--no-rebuild", action="store_true", help="do not rebuild recipes (provenance not checked)")
    a = p.add_argument_group("audit options (as for `mergegate audit`)")
    add_audit_options(a)
    a.add_argument("--cache", metavar="PATH",
                   help="shared audit cache (default: DIR/audit-cache.sqlite3, so a resumed run reuses it)")
    p.set_defaults(handler=run)

    nested = p.add_subparsers(dest="batch_command", metavar="collect")
    c = nested.add_parser("collect", help="merge the outputs of several --shard runs",
                          description="Read DIR/results.jsonl of every shard directory and write the merged "
                          "results.jsonl, results.csv and leaderboard.html into --out.")
    c.add_argument("dirs", nargs="+", metavar="DIR", help="--out directories of `mergegate batch --shard` runs")
    c.add_argument("--out", required=True, metavar="DIR", help="where to write the merged outputs")
    c.set_defaults(handler=run_collect)


def run(args: argparse.Namespace) -> int:
    from mergegate.errors import InputError
    from mergegate.batch.runner import AuditOptions, run_batch

    if not args.out:
        raise InputError("--out DIR is required", field="out")
    resolve_protocol_args(args)
    if args.protocol != "default":
        raise InputError(f"batch audits use the default protocol, not --protocol {args.protocol}",
                         field="protocol", hint="reproduce the seed paper with `mergegate audit --protocol "
                                                "mergealign` or `mergegate run --protocol mergealign`")
    if (args.top is None) == (args.models is None):
        raise InputError("give exactly one of --top N and --models FILE", field="top",
                         hint="e.g. mergegate batch --top 20 --out leaderboard/")
    if args.filter and args.models:
        raise InputError("--filter applies to --top only", field="filter")
    options = AuditOptions(prompts=args.prompts, benign=args.benign, judge=args.judge, backend=args.backend,
                           device=args.device, limit=args.limit, seed=args.seed,
                           max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens,
                           batch_size=args.batch_size, cache=args.cache,
                           progress=sys.stderr.isatty())

    def show(rec) -> None:  # noqa: ANN001 - BatchRecord
        detail = rec.error or ""
        if rec.merge is not None:
            detail = f"alignment {rec.merge.alignment * 100:.1f} %"
            if rec.drop is not None:
                detail += f", drop {rec.drop * 100:+.1f} pp vs {rec.best_input}"
            if rec.provenance is not None:
                detail += f", provenance {rec.provenance.status}"
        print(f"{rec.repo_id}: {rec.status}" + (f" ({detail})" if detail else ""), file=sys.stderr)

    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet = not sys.stderr.isatty() and not are_progress_bars_disabled()
    if quiet:  # one line per merge in CI logs, not a download bar per file
        disable_progress_bars()
    try:
        summary = run_batch(args.out, top=args.top, models_file=args.models, filter=args.filter or "mergekit",
                            shard=args.shard, options=options, rebuild=not args.no_rebuild,
                            max_rebuild_gb=args.max_rebuild_gb, on_record=show)
    finally:
        if quiet:
            enable_progress_bars()
    print(f"{len(summary.processed)} merge(s) audited now, {len(summary.skipped)} already done; "
          f"{len(summary.records)} in {args.out}/results.jsonl, results.csv, leaderboard.html")
    return 3 if summary.failed else 0


def run_collect(args: argparse.Namespace) -> int:
    from mergegate.batch.runner import collect

    records = collect(args.dirs, args.out)
    print(f"{len(records)} merge(s) from {len(args.dirs)} shard(s) written to {args.out}")
    return 0
