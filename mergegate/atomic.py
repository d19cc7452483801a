"""The one module that writes files: atomic (a reader sees the old file/directory or the new one,
never a half-written one) and, for every file mergegate itself writes, redacted (no token ever
lands on disk).

Two families of writers:

- ``write_bytes_atomic`` / ``write_text_atomic`` / ``append_line_durable`` write exactly what they
  are given: for bytes copied from an input model (weights, tokenizer files, generation config),
  which are not text mergegate wrote and must stay byte-for-byte what the model holds;
- ``write_redacted_text`` / ``write_redacted_yaml`` / ``write_redacted_json`` /
  ``append_redacted_json_line`` (and ``redacted_json`` for the text alone) redact first, with the
  redactor that keeps the format valid (:mod:`mergegate.redact`): every report, recipe copy,
  provenance record, card, audit JSON, batch result and weighting artefact goes through them, so
  "is this file redacted?" has one answer.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from mergegate.redact import redact, redact_data, redact_yaml


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


def write_redacted_text(path: str | Path, text: str, *, mode: int = 0o644) -> Path:
    """Plain text (Markdown, CSV, HTML, Jinja): redacted, then written atomically."""
    return write_text_atomic(path, redact(text), mode=mode)


def write_redacted_yaml(path: str | Path, text: str, *, mode: int = 0o644) -> Path:
    """YAML that must stay valid (a recipe): secrets become ``"***"`` strings (see
    :func:`mergegate.redact.redact_yaml`), then written atomically."""
    return write_text_atomic(path, redact_yaml(text), mode=mode)


def redacted_json(data: Any, *, indent: int | None = 2, by_alias: bool = False) -> str:
    """JSON of ``data`` (JSON-like values or a pydantic model), every string redacted first (never
    by cutting through the serialised text), ending in a newline.

    A pydantic model without secrets is serialised by pydantic itself (the same bytes as
    ``model_dump_json``); with secrets, its redacted dump is serialised by :mod:`json`.
    """
    if hasattr(data, "model_dump_json"):
        plain = data.model_dump(mode="json", by_alias=by_alias)
        clean = redact_data(plain)
        if clean == plain:
            return data.model_dump_json(indent=indent, by_alias=by_alias) + "\n"
        data = clean
    else:
        data = redact_data(data)
    separators = (",", ":") if indent is None else None
    return json.dumps(data, indent=indent, ensure_ascii=False, separators=separators) + "\n"


def write_redacted_json(path: str | Path, data: Any, *, indent: int | None = 2, by_alias: bool = False,
                        mode: int = 0o644) -> Path:
    """:func:`redacted_json` of ``data``, written atomically."""
    return write_text_atomic(path, redacted_json(data, indent=indent, by_alias=by_alias), mode=mode)


def append_redacted_json_line(path: str | Path, data: Any, *, by_alias: bool = False) -> None:
    """Append ``data`` as one redacted JSON line (:func:`append_line_durable`)."""
    append_line_durable(path, redacted_json(data, indent=None, by_alias=by_alias))


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
