"""``mergegate pre-push CONFIG --out DIR``: the git pre-push hook; seconds when nothing changed.

In a Hub model repository whose ``report.json`` vouches for the files being pushed (the check of
``mergegate push --check-only``), pass at once; refuse a blocked merge; otherwise rebuild and audit
as ``mergegate run`` does. The logic is :mod:`mergegate.gate.prepush`.
"""

from __future__ import annotations

import argparse
import sys

from mergegate.cli.run_cmd import add_run_arguments, gate_command


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pre-push", help="the git pre-push hook: pass at once when report.json vouches for the files",
        description="Run in a repository before `git push`. If REPO/report.json says pass, its verdict "
        "follows from its own measurements and the policy in force, and every file has the sha256 it "
        "recorded (what `mergegate push --check-only` checks), exit 0 at once without loading a model. "
        "If those files were blocked by the gate, refuse (exit 1). Otherwise rebuild CONFIG and audit "
        "it into DIR like `mergegate run`; a repository that publishes a model (weights or a report) "
        "then passes only when its files are that passing output. Every refusal names the command "
        "that fixes it. Exit 0 pass, 1 refused, 2 bad input, 3 failure.")
    p.add_argument("--repo", default=".", metavar="REPO",
                   help="the repository whose files are being pushed (default: the current directory)")
    add_run_arguments(p)
    p.set_defaults(handler=_run)


def _refuse(headline: str, problems: list[str], fix: str) -> int:
    from mergegate.redact import redact

    print(redact(f"mergegate: refusing the push: {headline}"), file=sys.stderr)
    for problem in problems[:20]:
        print(redact(f"  - {problem}"), file=sys.stderr)
    if len(problems) > 20:
        print(f"  - ... and {len(problems) - 20} more", file=sys.stderr)
    print(redact(f"  fix: {fix}"), file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
    from mergegate.gate.prepush import HookCommands, check_repository, rebuilt_problems
    from mergegate.redact import redact

    commands = HookCommands(config=args.config, out=args.out, policy=args.policy)
    check = check_repository(args.repo, policy=args.policy)
    if check.state == "verified":
        print(redact(f"mergegate: {args.repo}: pass; report.json vouches for every file being pushed "
                     "(nothing rebuilt)"))
        return 0
    if check.state == "blocked":
        return _refuse("the gate blocked the merge these files hold", check.reasons, commands.fix_blocked())
    print(redact("mergegate: the files being pushed are not vouched for by a passing report.json; "
                 "rebuilding and auditing:"), file=sys.stderr)
    for problem in check.problems[:20]:
        print(redact(f"  - {problem}"), file=sys.stderr)
    code = gate_command(args)
    if code == 1:
        return _refuse("the rebuilt merge is blocked by the gate", [], commands.fix_blocked())
    if code != 0:
        return code
    if not check.publishes_model:
        return 0  # a recipe-only repository: the declared merge passed
    problems = rebuilt_problems(args.repo, args.out, policy=args.policy)
    if problems:
        return _refuse(f"the rebuild passed, but the files being pushed are not its output {args.out}",
                       problems, f"{commands.copy()}, then commit and push again")
    return 0
