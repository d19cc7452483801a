"""Atomic writes: a reader sees the old file/directory or the new one, never a half-written one."""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
import sys
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
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_exchange_unsupported = False


def exchange_paths(a: str | Path, b: str | Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False, changing nothing, where the platform, libc or file system cannot do it; raises
    OSError for any other failure.
    """
    global _exchange_unsupported
    if _exchange_unsupported or not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # glibc < 2.28, musl without it
        _exchange_unsupported = True
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # the kernel or this file system has no exchange: fall back to two renames
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_dir(new: str | Path, target: str | Path) -> Path:
    """Move the finished directory ``new`` to ``target``, replacing what was there.

    Where the file system can, the two directories are exchanged in one step, so ``target`` always
    holds either the complete old or the complete new directory. Elsewhere the old directory is
    first renamed aside to ``.NAME.old-XXXXXXXX`` (which :mod:`mergegate.outdir` puts back if a run
    is killed between the two renames), so ``target`` is never a mix of both. The old directory is
    deleted once the new one is in place.
    """
    new, target = Path(new), Path(target)
    old: Path | None = None
    if target.exists() or target.is_symlink():
        if exchange_paths(new, target):
            old = new  # ``new`` now holds the previous directory
        else:
            old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
            os.replace(target, old)
            os.replace(new, target)
    else:
        os.replace(new, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
