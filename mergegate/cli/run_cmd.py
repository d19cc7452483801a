"""``mergegate run CONFIG --out DIR``: rebuild, audit, decide, write the card and report.json."""

from __future__ import annotations

import argparse
import sys

from mergegate.cli.options import add_audit_options, positive_int, resolve_protocol_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="rebuild a declared merge, audit it and its inputs, and gate it",
        description="Rebuild the merge declared in CONFIG into DIR, audit every constituent and the "
        "merge on the same prompts, apply the policy and write DIR/README.md (model card), "
        "DIR/report.json and a chart. Exit 0 pass, 1 blocked, 2 bad input, 3 failure.")
    p.add_argument("config", help="mergekit recipe (mergekit_config.yml, or a README.md holding one)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory: new, empty, or a previous output of mergegate or mergekit-yaml "
                   "(replaced atomically once the verdict is written; anything else is refused)")
    p.add_argument("--policy", metavar="FILE",
                   help="gate policy (default: mergegate.yml here or at the git root, else defaults)")
    add_audit_options(p, seed_help="seed of the prompt sample and of random merge methods")
    p.add_argument("--name", help="the merged model's name on its card (default: DIR's name)")
    p.add_argument("--json", metavar="REPORT", help="also write the report to this path ('-': stdout)")
    p.add_argument("--no-card", action="store_true", help="do not write the model card and chart")
    w = p.add_argument_group("safety-aware weighting (choose the merge weights with data)")
    w.add_argument("--weighting", choices=["declared", "cocktail", "evomm"], default="declared",
                   help="declared: build the recipe as written (default); cocktail: LM-Cocktail weights; "
                   "evomm: CMA-ES over weights and density/t")
    w.add_argument("--safety-prompts", metavar="SRC", default=None,
                   help="unsafe prompts for D_safety, disjoint from the evaluation prompts "
                   "(default: BeaverTails 30k_train; 'toy' for the toy fleet; or a jsonl)")
    w.add_argument("--expert-prompts", metavar="SRC", default=None,
                   help="domain questions for D_expert (default: the experts write their own; or a jsonl)")
    w.add_argument("--weighting-budget", type=positive_int, default=None, metavar="N",
                   help="EvoMM candidate evaluations (default: 100)")
    w.add_argument("--weighting-k", type=positive_int, default=None, metavar="K",
                   help="size of D_safety / D_expert (default: 1000)")
    w.add_argument("--alpha", type=float, default=None, help="weight of the domain loss (default: 0.3)")
    gh = p.add_argument_group("GitHub Actions (automatic when GITHUB_ACTIONS=true)")
    gh.add_argument("--github", dest="github", action="store_true", default=None,
                    help="write the job summary and outputs; with a token, a check run and a PR comment")
    gh.add_argument("--no-github", dest="github", action="store_false")
    gh.add_argument("--comment-mode", choices=["update", "new", "off"], default="update",
                    help="PR comment: keep one sticky comment (update), post one per run (new), or none")
    gh.add_argument("--no-check-run", dest="check_run", action="store_false", default=True,
                    help="do not create a check run")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from mergegate.gate.card import scrub
    from mergegate.gate.github import annotation, in_github_actions, publish
    from mergegate.gate.pipeline import report_written, run_gate, summary_lines
    from mergegate.gate.report import write_report

    resolve_protocol_args(args)
    report = run_gate(
        args.config, args.out, policy=args.policy, prompts=args.prompts, benign=args.benign,
        judge=args.judge, backend=args.backend, device=args.device, limit=args.limit,
        max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens, seed=args.seed,
        batch_size=args.batch_size,
        name=args.name, card=not args.no_card, progress=sys.stderr.isatty(), weighting=args.weighting,
        weighting_options=_weighting_options(args), protocol=args.protocol)
    to_stdout = args.json == "-"
    human = sys.stderr if to_stdout else sys.stdout
    for line in summary_lines(report):
        print(line, file=human)
    written = report_written(report, args.out)  # ~ and $VARS expanded as run_gate did
    if report.decision == "error" and report.error:
        print(scrub(f"mergegate: error: {report.error.message}"), file=sys.stderr)
    elif report.card and written:
        print(scrub(f"card: {written.parent / report.card}"), file=human)
    if written:
        print(scrub(f"report: {written}"), file=human)
    if args.json:
        if to_stdout:
            print(scrub(report.model_dump_json(indent=2)))
        else:
            write_report(report, args.json)
    github = in_github_actions() if args.github is None else args.github
    if github:
        print(annotation(report))
        for warning in publish(report, report_path=written,
                               comment_mode=args.comment_mode, check_run=args.check_run):
            print(scrub(f"::warning title=mergegate::{warning}"))
    return report.exit_code


def _weighting_options(args: argparse.Namespace) -> dict[str, object]:
    given = {"safety_prompts": args.safety_prompts, "expert_prompts": args.expert_prompts,
             "budget": args.weighting_budget, "k": args.weighting_k, "alpha": args.alpha}
    return {k: v for k, v in given.items() if v is not None}
