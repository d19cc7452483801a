"""``mergegate card REPORT --out DIR``: re-render the model card (and chart) from a report.json."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("card", help="re-render the model card from a report.json",
                       description="Render README.md (and the alignment chart) from a mergegate "
                       "report.json. Runs that ended in an error have no card.")
    p.add_argument("report", help="report.json, or the directory holding it")
    p.add_argument("--out", required=True, metavar="DIR", help="where README.md and the chart go")
    p.add_argument("--no-plot", action="store_true", help="do not (re)draw the chart")
    p.add_argument("--eval-results", action="store_true",
                   help="also write .eval_results/mergegate.yaml (the Hub's newer evaluation format; it "
                   "lists results only for datasets registered as Benchmarks)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from mergegate.gate.card import rerender_card

    path = rerender_card(args.report, args.out, plot=not args.no_plot, eval_results=args.eval_results)
    print(f"card: {path}")
    return 0
