"""Atomic writes: a reader sees the old file/directory or the new one, never a half-written one."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path


def write_bytes_atomic(path: str | Path, data: bytes, *, mode: int = 0o644) -> Path:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str, *, mode: int = 0o644) -> Path:
    """Write ``text`` (UTF-8, newlines as given) atomically: see :func:`write_bytes_atomic`."""
    return write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def append_line_durable(path: str | Path, line: str) -> None:
    """Append one line (a journal record) and fsync it, so a kill never leaves half a record
    behind that a later reader would take for whole (readers still drop a torn last line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line if line.endswith("\n") else line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def replace_dir(new: str | Path, target: str | Path) -> Path:
    """Move the finished directory ``new`` to ``target``, replacing what was there.

    The old directory is first renamed aside, so ``target`` is never a mix of both; it is deleted
    once the new one is in place.
    """
    new, target = Path(new), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
