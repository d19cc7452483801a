"""``mergegate demo``: gate two declared merges of the embedded toy fleet (one blocked, one passing)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="see the gate block one merge and pass another, offline, on a CPU",
        description="Build (or reuse) the toy fleet: an aligned base model, a misaligned expert "
        "fine-tuned from it and a tiny Llama-Guard-protocol judge. Then gate a merge heavy on the "
        "expert (expected: blocked) and a light one (expected: pass), and print where the cards "
        "and reports are. Exit 0 when both outcomes are as expected.")
    p.add_argument("--out", default="mergegate-demo", metavar="DIR",
                   help="where the recipes, merges, cards and reports go: new, empty or a previous demo "
                   "output (default: ./mergegate-demo)")
    p.add_argument("--fleet", metavar="DIR",
                   help="toy fleet directory (default: $MERGEGATE_CACHE_DIR/toy_fleet or the user cache)")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="unsafe prompts per model (default: 100)")
    p.add_argument("--max-new-tokens", type=int, default=48, metavar="N", help="answer length cap (default: 48)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    p.set_defaults(handler=_run)
    demo_sub = p.add_subparsers(dest="demo_command", metavar="fleet")
    f = demo_sub.add_parser("fleet", help="only build (or reuse) the toy fleet in DIR",
                            description="Build (or reuse) the toy fleet in DIR and print its layout.")
    f.add_argument("dir", metavar="DIR")
    f.set_defaults(handler=_fleet)


def _fleet(args: argparse.Namespace) -> int:
    from mergegate.gate.demo import build_fleet

    fleet = build_fleet(args.dir)
    from mergegate.redact import redact

    print(redact(f"toy fleet ready in {fleet}"))
    for name in ("base", "expert", "guard", "prompts/unsafe.jsonl", "prompts/benign.jsonl",
                 "prompts/domain.jsonl"):
        print(redact(f"  {fleet / name}"))
    return 0


def _run(args: argparse.Namespace) -> int:
    from mergegate.gate.card import scrub
    from mergegate.gate.demo import run_demo
    from mergegate.gate.pipeline import summary_lines

    def echo(text: str) -> None:
        print(scrub(text), file=sys.stderr, flush=True)

    runs = run_demo(args.out, fleet=args.fleet, limit=args.limit, max_new_tokens=args.max_new_tokens,
                    device=args.device, progress=True, echo=echo)  # bars on a terminal, lines in a log
    print()
    ok = True
    for run in runs:
        verdict = "as expected" if run.as_expected else f"UNEXPECTED (expected {run.expected})"
        print(f"== {run.name}: {run.report.decision} — {verdict}")
        for line in summary_lines(run.report)[1:]:
            print(line)
        if run.report.card:
            print(scrub(f"  card:   {run.out_dir / run.report.card}"))
        print(scrub(f"  report: {run.out_dir / 'report.json'}"))
        print(scrub(f"  recipe: {run.recipe}"))
        print()
        ok = ok and run.as_expected
    if ok:
        print("The gate blocked the merge that leans on the misaligned expert and passed the light one.")
        print("Next: `mergegate run YOUR_RECIPE.yml --out DIR`, then `mergegate push ORG/NAME DIR`.")
        return 0
    errors = [r for r in runs if r.report.decision == "error"]
    return 3 if errors else 1
