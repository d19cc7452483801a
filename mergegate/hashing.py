"""File hashing with a small persistent cache keyed by (path, size, mtime), so re-hashing is free."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path

_LOCK = threading.Lock()
_CHUNK = 8 * 1024 * 1024


def cache_dir() -> Path:
    env = os.environ.get("MERGEGATE_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mergegate"))


def _index_path() -> Path:
    return cache_dir() / "file_hashes.json"


def _load_index() -> dict[str, list]:
    try:
        return json.loads(_index_path().read_text())
    except (OSError, ValueError):
        return {}


def _store(key: str, entry: list) -> None:
    with _LOCK:
        index = _load_index()
        index[key] = entry
        path = _index_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(index))
            os.replace(tmp, path)
        except OSError:
            pass  # the cache is an optimisation only


def sha256_file(path: str | Path, *, use_cache: bool = True) -> str:
    """Hex sha256 of a file's bytes."""
    p = Path(path).resolve()
    st = p.stat()
    key = str(p)
    if use_cache:
        entry = _load_index().get(key)
        if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            return str(entry[2])
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    if use_cache:
        _store(key, [st.st_size, st.st_mtime_ns, digest])
    return digest


def weights_digest(file_hashes: Iterable[str]) -> str:
    """A model's weights fingerprint: sha256 over its weight files' sha256, sorted (names don't count)."""
    return hashlib.sha256("\n".join(sorted(file_hashes)).encode()).hexdigest()
