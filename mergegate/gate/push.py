"""``mergegate push``: upload a gate output to the Hub only if it passed and is unchanged since.

HTTP uploads bypass git hooks, so this is the check-then-upload path: the directory's
``report.json`` must say ``pass`` and every file in the directory must have exactly the sha256 the
report recorded (no file changed, removed or added). Only the vouched-for files (and the report)
are uploaded. The token comes from the environment or ``hf auth login`` and is never printed.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergegate.gate.hashing import compare_hashes, hash_directory
from mergegate.gate.report import REPORT_FILENAME, RunReport, load_report
from mergegate.models.hub_errors import hub_access

log = logging.getLogger(__name__)


@dataclass
class PushCheck:
    """Whether a directory may be pushed, and why not."""

    report: RunReport | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_pushable(directory: str | Path) -> PushCheck:
    """Verify ``directory``: a passing report whose recorded hashes match every file.

    Raises:
        InputError: there is no readable ``report.json`` (exit code 2).
    """
    directory = Path(directory)
    report = load_report(directory / REPORT_FILENAME)
    problems: list[str] = []
    if report.decision != "pass":
        reasons = "; ".join(report.reasons) or "no reason recorded"
        problems.append(f"the gate decision is '{report.decision}', not 'pass' ({reasons})")
    if not report.files:
        problems.append("the report records no file hashes, so nothing can be vouched for")
    problems.extend(compare_hashes(report.files, hash_directory(directory)))
    return PushCheck(report=report, problems=problems)


def push(directory: str | Path, repo_id: str, *, create_pr: bool = False,
         revision: str | None = None, commit_message: str | None = None,
         api: Any = None) -> tuple[PushCheck, Any]:
    """Upload ``directory`` to ``repo_id`` if :func:`check_pushable` allows it.

    Args:
        directory: a ``mergegate run`` output.
        repo_id: the Hub model repository.
        create_pr: open a Hub pull request instead of committing to ``revision``.
        revision: the branch to commit to (or to open the PR against).
        commit_message: defaults to one naming the decision and the best input.
        api: an ``HfApi`` (tests pass a fake); default ``HfApi()`` with the ambient token.

    Returns:
        The check and the ``CommitInfo`` (``None`` when the check refused the push).
    """
    check = check_pushable(directory)
    if not check.ok:
        return check, None
    report = check.report
    assert report is not None
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    merged = report.merged
    message = commit_message or (
        f"Upload {report.name} (mergegate: pass, alignment "
        f"{merged.alignment * 100:.1f} %)" if merged else f"Upload {report.name} (mergegate: pass)")
    description = "\n".join(f"- {r.rule}: {r.detail}" for r in (report.gate.rules if report.gate else []))
    allow = [glob.escape(name) for name in sorted([*report.files, REPORT_FILENAME])]
    with hub_access(f"{directory} to the Hub repository '{repo_id}'", why="`mergegate push`", repo_id=repo_id,
                    field="repo_id", write=True):  # offline, unreachable, no token, bad id: exit 2
        info = api.upload_folder(repo_id=repo_id, folder_path=str(directory), repo_type="model",
                                 revision=revision, create_pr=create_pr, commit_message=message,
                                 commit_description=description, allow_patterns=allow)
    return check, info


__all__ = ["PushCheck", "check_pushable", "push"]
