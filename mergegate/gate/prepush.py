"""The pre-push hook's decision: pass at once when the files being pushed are already vouched for.

A Hugging Face model repository published with ``mergegate push`` holds the gate output itself:
the weights, ``mergekit_config.yml``, the ``README.md`` card and the ``report.json`` that vouches
for them. Before ``git push`` the hook asks, in this order:

1. **verified** — ``report.json`` says ``pass``, that verdict follows from its own measurements and
   policy (:mod:`mergegate.gate.verify`), every file has the sha256 it recorded (exactly what
   ``mergegate push --check-only`` checks) and the policy in force here is the one it recorded:
   the push passes at once; nothing is rebuilt, no model is loaded.
2. **blocked** — the files are the audited ones but the gate blocked them: rebuilding the same
   recipe would give the same verdict, so the push is refused with what to do instead.
3. **unverified** (a file changed, was added or is missing; the report is edited, unreadable or
   recorded another policy) or **no report** (a recipe-only repository): rebuild and audit into
   the hook's output directory, as ``mergegate run`` does. A repository that publishes a model
   (it has a report or weights) passes only once its files *are* that passing output; a
   recipe-only repository passes on the rebuild's verdict.

The hook checks the checked-out files (the working tree), as every pre-commit hook does: push
with a clean working tree. Hashing reads every byte (no cached hash: a file edited behind a kept
modification time still counts as changed), so the fast path costs one read of the weights.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mergegate.errors import MergegateError
from mergegate.gate.hashing import IGNORED_DIRS, compare_hashes, hash_directory
from mergegate.gate.policy import POLICY_FILENAME, load_policy
from mergegate.gate.push import check_pushable
from mergegate.gate.report import REPORT_FILENAME, load_report
from mergegate.outdir import expand_path

# A git repository's own files (and the hook's output directory): never part of the model.
REPOSITORY_FILES = (".git", ".gitattributes", ".gitignore", ".gitmodules", ".pre-commit-config.yaml",
                    ".mergegate", POLICY_FILENAME)
# Files that make a repository "publish a model" (a recipe-only repository has none of them).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")

State = Literal["verified", "blocked", "unverified", "no_report"]


@dataclass(frozen=True)
class HookCheck:
    """What the hook found in the repository before deciding whether to rebuild."""

    state: State
    problems: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # a blocked report's reasons
    publishes_model: bool = False

    @property
    def needs_rebuild(self) -> bool:
        return self.state in ("unverified", "no_report")


@dataclass(frozen=True)
class HookCommands:
    """The commands the hook's messages name, with the hook's own recipe and output directory."""

    config: str = "mergekit_config.yml"
    out: str = ".mergegate/out"
    policy: str | None = None

    def run(self, *extra: str) -> str:
        policy = ("--policy", self.policy) if self.policy else ()
        return shlex.join(["mergegate", "run", self.config, "--out", self.out, *policy, *extra])

    def copy(self) -> str:
        return f"cp -R {shlex.quote(self.out.rstrip('/') + '/.')} ."

    def fix_unverified(self) -> str:
        return f"{self.run()} && {self.copy()}, then commit and push again"

    def fix_blocked(self) -> str:
        return (f"change {self.config} (e.g. lower the weight of the least aligned model), or let mergegate "
                f"choose safer weights: {self.run('--weighting', 'evomm')} && {self.copy()}; "
                "then commit and push again")


def _ignored(repo: Path, policy: str | None) -> tuple[str, ...]:
    names = list(REPOSITORY_FILES)
    if policy:  # a policy file inside the repository is configuration, checked on its own below
        path = expand_path(policy).resolve()
        if path.parent == repo.resolve():
            names.append(path.name)
    return tuple(names)


def publishes_model(repo: str | Path) -> bool:
    """Whether the repository holds a report or weight files (else it is a recipe-only repository)."""
    repo = expand_path(repo)
    if (repo / REPORT_FILENAME).is_file():
        return True
    return any(p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
               for p in repo.rglob("*")
               if p.relative_to(repo).parts[0] not in (*IGNORED_DIRS, *REPOSITORY_FILES))


def check_repository(repo: str | Path, *, policy: str | None = None) -> HookCheck:
    """Classify ``repo`` for the pre-push hook without loading any model (see the module doc).

    Args:
        repo: the repository root (the hook runs there).
        policy: the hook's ``--policy``; default: ``mergegate.yml`` as ``mergegate run`` finds it.
    """
    repo = expand_path(repo)
    model = publishes_model(repo)
    if not (repo / REPORT_FILENAME).is_file():
        return HookCheck(state="no_report", publishes_model=model,
                         problems=[f"no {REPORT_FILENAME} vouches for the files in {repo}"])
    try:
        check = check_pushable(repo, ignore=_ignored(repo, policy))
    except MergegateError as exc:  # an unreadable report is one more reason to rebuild
        return HookCheck(state="unverified", publishes_model=model, problems=[exc.render()])
    report = check.report
    assert report is not None
    if report.decision == "error":  # the last run failed: its verdict vouches for nothing
        return HookCheck(state="unverified", publishes_model=model,
                         problems=[f"{REPORT_FILENAME} records a failed run, not a verdict"])
    current, source = load_policy(policy, search_from=repo)
    policy_problems = [] if current == report.policy else [
        f"the policy in force ({source or 'the defaults'}) is not the one {REPORT_FILENAME} was decided with"]
    if check.file_problems or policy_problems:
        return HookCheck(state="unverified", publishes_model=model,
                         problems=[*policy_problems, *check.problems])
    if report.decision != "pass":
        return HookCheck(state="blocked", publishes_model=model, problems=check.problems,
                         reasons=list(report.reasons) or [f"the gate decision is '{report.decision}'"])
    if check.problems:  # a passing claim the report does not support
        return HookCheck(state="unverified", publishes_model=model, problems=check.problems)
    return HookCheck(state="verified", publishes_model=model)


def rebuilt_problems(repo: str | Path, out: str | Path, *, policy: str | None = None) -> list[str]:
    """After a passing rebuild into ``out``: why the repository's files are not that output (empty:
    they are, byte for byte, report included)."""
    repo, out = expand_path(repo), expand_path(out)
    report = load_report(out / REPORT_FILENAME)
    actual = hash_directory(repo, ignore=_ignored(repo, policy))
    problems = compare_hashes(report.files, actual)
    theirs, ours = out / REPORT_FILENAME, repo / REPORT_FILENAME
    if not ours.is_file() or ours.read_bytes() != theirs.read_bytes():
        problems.append(f"{REPORT_FILENAME}: not the report of the passing rebuild")
    return problems


__all__ = ["HookCheck", "HookCommands", "REPOSITORY_FILES", "check_repository", "publishes_model",
           "rebuilt_problems"]
