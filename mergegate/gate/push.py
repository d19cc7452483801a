"""``mergegate push``: upload a gate output to the Hub only if it passed and is unchanged since.

HTTP uploads bypass git hooks, so this is the check-then-upload path:

1. ``report.json`` must say ``pass``, and that claim must hold: the verdict is recomputed from the
   measurements and policy the report records with the gate's own ``decide``
   (:mod:`mergegate.gate.verify`); a report whose decision, gate section and numbers disagree is
   refused.
2. The files are copied into a private snapshot (a reflink where the file system can, else a
   copy) under the output's lock, and the *copies* are hashed: every file must have exactly the
   sha256 the report recorded, none missing, none added.
3. The snapshot (the vouched-for files and the report bytes that were checked) is what is uploaded,
   so a file changed between the check and the upload is never what reaches the Hub.

The token comes from the environment or ``hf auth login`` and is never printed. docs/security.md
states what this protects against and what it cannot.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from mergegate.errors import InputError
from mergegate.gate.hashing import compare_hashes, hash_directory, list_directory
from mergegate.gate.report import REPORT_FILENAME, RunReport, load_report
from mergegate.gate.verify import claim_problems
from mergegate.outdir import PREVIOUS_REPORT_FILE, RUN_OUTPUT, OutputInUseError, check_output_dir, expand_path

log = logging.getLogger(__name__)
_CHUNK = 8 * 1024 * 1024
_FICLONE = 0x40049409  # linux/fs.h: share the extents (copy-on-write), no bytes copied


@dataclass
class PushCheck:
    """Whether a directory may be pushed, and why not."""

    report: RunReport | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _read_report(directory: Path) -> tuple[RunReport, bytes]:
    """The report and the exact bytes it was parsed from (what gets uploaded)."""
    path = directory / REPORT_FILENAME
    if not path.is_file():
        load_report(path)  # raises the usual InputError (exit 2)
    data = path.read_bytes()
    try:
        return RunReport.model_validate_json(data), data
    except ValidationError as exc:
        raise InputError(f"not a valid mergegate report: {exc}", source=str(path)) from None


def _claim_problems(report: RunReport, directory: Path) -> list[str]:
    problems: list[str] = []
    if report.decision != "pass":
        reasons = "; ".join(report.reasons) or "no reason recorded"
        problems.append(f"the gate decision is '{report.decision}', not 'pass' ({reasons})")
        if report.decision == "error" and (directory / PREVIOUS_REPORT_FILE).is_file():
            problems.append(f"the last run failed; the verdict of the run before it is kept in "
                            f"{PREVIOUS_REPORT_FILE} (re-run `mergegate run` to push)")
        return problems
    problems.extend(f"the report does not support its verdict: {p}" for p in claim_problems(report))
    if not report.files:
        problems.append("the report records no file hashes, so nothing can be vouched for")
    return problems


def check_pushable(directory: str | Path) -> PushCheck:
    """Verify ``directory``: a passing report whose verdict follows from its own measurements and
    whose recorded hashes match every file.

    Raises:
        InputError: there is no readable ``report.json`` (exit code 2).
    """
    directory = expand_path(directory)
    report, _ = _read_report(directory)
    problems = _claim_problems(report, directory)
    problems.extend(compare_hashes(report.files, hash_directory(directory)))
    return PushCheck(report=report, problems=problems)


def _copy_and_hash(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst`` (a reflink when possible) and return the sha256 of the copy."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        try:
            import fcntl

            fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
        except (ImportError, OSError):
            digest = hashlib.sha256()
            while chunk := fin.read(_CHUNK):
                digest.update(chunk)
                fout.write(chunk)
            return digest.hexdigest()
    digest = hashlib.sha256()
    with open(dst, "rb") as f:  # the clone's bytes, which nobody else can reach
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _private_dir(directory: Path) -> Iterator[Path]:
    """A 0700 directory for the snapshot: beside the output under its lock (same file system, so
    reflinks work; refused while a run writes the output), else in the temp directory."""
    try:
        target = check_output_dir(directory, kinds=(RUN_OUTPUT,), replace=False, option="DIR")
        claim_cm = target.claim()
        claim = claim_cm.__enter__()
    except OutputInUseError:
        raise  # a run is writing the output: exit 2, nothing uploaded
    except InputError:
        claim_cm = None  # e.g. a read-only parent: no lock, a private temp directory instead
    try:
        if claim_cm is not None:
            path = claim.staging("push")
            os.chmod(path, 0o700)
        else:
            path = Path(tempfile.mkdtemp(prefix="mergegate-push-"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
    finally:
        if claim_cm is not None:
            claim_cm.__exit__(None, None, None)


@contextmanager
def snapshot(directory: str | Path) -> Iterator[tuple[PushCheck, Path]]:
    """Check ``directory`` and copy what it vouches for into a private snapshot.

    Yields the check (problems found on the *copies*) and the snapshot directory, which holds
    exactly the recorded files and the report bytes that were checked; deleted on exit.
    """
    directory = expand_path(directory)
    report, report_bytes = _read_report(directory)
    problems = _claim_problems(report, directory)
    if problems:
        yield PushCheck(report=report, problems=problems), directory
        return
    with _private_dir(directory) as snap:
        copied: dict[str, str] = {}
        for name in sorted(report.files):
            rel = PurePosixPath(name)
            if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                problems.append(f"{name}: not a path inside the output directory")
                continue
            src, dst = directory / name, snap / name
            if not src.is_file():
                continue  # reported as missing below
            dst.parent.mkdir(parents=True, exist_ok=True)
            copied[name] = _copy_and_hash(src, dst)
        added = sorted(set(list_directory(directory)) - set(report.files))
        actual = {**copied, **{name: "(added)" for name in added}}
        problems.extend(compare_hashes(report.files, actual))
        (snap / REPORT_FILENAME).write_bytes(report_bytes)
        yield PushCheck(report=report, problems=problems), snap


def push(directory: str | Path, repo_id: str, *, create_pr: bool = False,
         revision: str | None = None, commit_message: str | None = None,
         api: Any = None) -> tuple[PushCheck, Any]:
    """Upload ``directory`` to ``repo_id`` if its report's claim holds and its files are the audited ones.

    Args:
        directory: a ``mergegate run`` output.
        repo_id: the Hub model repository.
        create_pr: open a Hub pull request instead of committing to ``revision``.
        revision: the branch to commit to (or to open the PR against).
        commit_message: defaults to one naming the decision and the best input.
        api: an ``HfApi`` (tests pass a fake); default ``HfApi()`` with the ambient token.

    Returns:
        The check and the ``CommitInfo`` (``None`` when the check refused the push). What is
        uploaded is the private snapshot the check hashed, never the live directory.
    """
    with snapshot(directory) as (check, snap):
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
        allow = [glob_escape(name) for name in sorted([*report.files, REPORT_FILENAME])]
        info = api.upload_folder(repo_id=repo_id, folder_path=str(snap), repo_type="model",
                                 revision=revision, create_pr=create_pr, commit_message=message,
                                 commit_description=description, allow_patterns=allow)
        return check, info


def glob_escape(name: str) -> str:
    import glob

    return glob.escape(name)


__all__ = ["PushCheck", "check_pushable", "push", "snapshot"]
