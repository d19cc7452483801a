"""``mergegate push DIR REPO_ID``: upload a gate output only if it passed and nothing changed since."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "push", help="upload a passing, unchanged gate output to the Hugging Face Hub",
        description="Upload DIR to the Hub model repository REPO_ID with huggingface_hub, only if "
        "DIR/report.json says pass, that verdict follows from the measurements and policy it records "
        "(recomputed with the gate's own rules), and every file in DIR has the sha256 the report "
        "recorded. What is uploaded is a private snapshot of the checked files, never the live "
        "directory. Otherwise refuse (exit 1) and name what is wrong; exit 2 when DIR has no report "
        "or a run is writing it. The token comes from HF_TOKEN or `hf auth login` and is never printed.")
    p.add_argument("dir", help="a `mergegate run` output directory")
    p.add_argument("repo_id", help="Hub model repository, e.g. my-org/my-merge")
    p.add_argument("--create-pr", action="store_true", help="open a Hub pull request instead of committing")
    p.add_argument("--revision", metavar="BRANCH", help="branch to commit to (or to open the PR against)")
    p.add_argument("--message", help="commit message")
    p.add_argument("--check-only", action="store_true", help="verify, do not upload")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from mergegate.gate.push import check_pushable, push
    from mergegate.redact import redact

    if args.check_only:
        check = check_pushable(args.dir)
        info = None
    else:
        check, info = push(args.dir, args.repo_id, create_pr=args.create_pr, revision=args.revision,
                           commit_message=args.message)
    if not check.ok:
        print(redact(f"mergegate: refusing to push {args.dir}:"), file=sys.stderr)
        for problem in check.problems:
            print(f"  - {redact(problem)}", file=sys.stderr)
        return 1
    if info is None:
        print(redact(f"{args.dir}: pass, and every file matches the audited hashes"))
        return 0
    url = getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or ""
    print(redact(f"pushed {args.dir} to {args.repo_id} {url}".rstrip()))
    return 0
