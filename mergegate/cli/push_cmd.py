"""``mergegate push REPO_ID [DIR]``: upload a gate output only if it passed and nothing changed since."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "push", help="upload a passing, unchanged gate output to the Hugging Face Hub",
        description="Upload DIR (default: the current directory) to the Hub model repository REPO_ID "
        "with huggingface_hub, in the order of `hf upload REPO_ID PATH`, only if DIR/report.json says "
        "pass, that verdict follows from the measurements and policy it records (recomputed with the "
        "gate's own rules), and every file in DIR has the sha256 the report recorded. A missing "
        "repository is created (private with --private). What is uploaded is a private snapshot of "
        "the checked files, never the live directory. Otherwise refuse (exit 1) and name what is "
        "wrong; exit 2 when DIR has no report or a run is writing it. The old order `push DIR "
        "REPO_ID` still works (an existing directory against a repository id) and is deprecated. "
        "The token comes from HF_TOKEN or `hf auth login` and is never printed.")
    p.add_argument("repo_id", metavar="REPO_ID", help="Hub model repository, e.g. my-org/my-merge")
    p.add_argument("dir", nargs="?", default=None, metavar="DIR",
                   help="a `mergegate run` output directory (default: the current directory)")
    p.add_argument("--private", action="store_true",
                   help="create the repository private if it does not exist; refuse an existing public one")
    p.add_argument("--create-pr", action="store_true", help="open a Hub pull request instead of committing")
    p.add_argument("--revision", metavar="BRANCH", help="branch to commit to (or to open the PR against)")
    p.add_argument("--commit-message", "--message", dest="message", metavar="TEXT",
                   help="commit message (default: names the verdict and the merge's alignment)")
    p.add_argument("--check-only", action="store_true", help="verify, do not upload")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from mergegate.gate.push import check_pushable, push, push_target
    from mergegate.redact import redact, scrub

    target = push_target(args.repo_id, args.dir)
    if target.old_order and not args.quiet:
        print(redact(f"mergegate: warning: `mergegate push DIR REPO_ID` is deprecated; write "
                     f"`mergegate push {target.repo_id} {target.directory}` (the order of `hf upload`)"),
              file=sys.stderr)
    directory = target.directory
    if args.check_only:
        check = check_pushable(directory)
        info = None
    else:
        check, info = push(directory, target.repo_id, create_pr=args.create_pr, revision=args.revision,
                           commit_message=args.message, private=True if args.private else None)
    if not check.ok:
        print(redact(f"mergegate: refusing to push {directory}:"), file=sys.stderr)
        for problem in check.problems:
            print(f"  - {redact(problem)}", file=sys.stderr)
        for hint in check.hints:
            print(f"  hint: {scrub(hint)}", file=sys.stderr)
        return 1
    if info is None:
        print(redact(f"{directory}: pass, and every file matches the audited hashes"))
        return 0
    url = getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or ""
    print(redact(f"pushed {directory} to {target.repo_id} {url}".rstrip()))
    return 0
