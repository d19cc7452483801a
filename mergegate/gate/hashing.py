"""File hashes of a gate output directory: what the report vouches for and what push re-checks."""

from __future__ import annotations

from pathlib import Path

from mergegate.gate.report import REPORT_FILENAME
from mergegate.models.fingerprints import sha256_file

# Never part of what is published (upload_folder ignores .git/ and .cache/huggingface/ too).
IGNORED_DIRS = (".git", ".cache")


def list_directory(directory: str | Path, *, exclude: tuple[str, ...] = (REPORT_FILENAME,)) -> list[str]:
    """Relative posix paths of the files :func:`hash_directory` hashes (without hashing them)."""
    directory = Path(directory)
    names = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if rel.parts[0] in IGNORED_DIRS or not path.is_file():
            continue
        name = rel.as_posix()
        if name in exclude or (rel.name.startswith(".") and rel.name.endswith(".tmp")):
            continue
        names.append(name)
    return names


def hash_directory(directory: str | Path, *, exclude: tuple[str, ...] = (REPORT_FILENAME,)) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every regular file under ``directory``.

    The report itself, hidden temp files of an atomic write and ``.git``/``.cache`` are left out.
    Symlinks are followed (a Hub snapshot is made of them) but must stay regular files.
    """
    directory = Path(directory)
    # what is on disk now, never a cached value
    return {name: sha256_file(directory / name, use_cache=False) for name in list_directory(directory, exclude=exclude)}


def compare_hashes(recorded: dict[str, str], actual: dict[str, str]) -> list[str]:
    """Human-readable differences between the recorded and the actual files (empty: identical)."""
    problems = []
    for name in sorted(recorded.keys() | actual.keys()):
        if name not in actual:
            problems.append(f"{name}: missing (it was audited but is not there any more)")
        elif name not in recorded:
            problems.append(f"{name}: added after the audit")
        elif recorded[name] != actual[name]:
            problems.append(f"{name}: changed after the audit (sha256 {actual[name][:12]}…, "
                            f"audited {recorded[name][:12]}…)")
    return problems


__all__ = ["sha256_file", "hash_directory", "list_directory", "compare_hashes", "IGNORED_DIRS"]
