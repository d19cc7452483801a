"""File and weight fingerprints, with the one persistent hash cache of mergegate.

``sha256_file`` hashes a file's bytes; with ``use_cache`` (the default) a hash is remembered in a
small SQLite store keyed by (absolute path, device, inode, size, mtime_ns), so hashing unchanged
multi-GB weights again is a lookup. The merging engine's provenance, the audit's model keys and
the batch auditor all go through here. Checks that vouch for files (``mergegate push``, the gate's
``report.json`` hashes) pass ``use_cache=False`` and read the bytes on disk now.

The store lives in ``$MERGEGATE_CACHE_DIR`` (else ``platformdirs.user_cache_dir("mergegate")``)
as ``file_hashes.sqlite3``. It is an optimisation only: when it cannot be opened or written, the
file is hashed and the error is ignored.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 8 * 1024 * 1024
STORE_NAME = "file_hashes.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (path, dev, ino, size, mtime_ns)) WITHOUT ROWID;
"""
_local = threading.local()


def cache_dir() -> Path:
    """mergegate's cache directory: ``$MERGEGATE_CACHE_DIR``, else the platform's user cache dir."""
    env = os.environ.get("MERGEGATE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mergegate"))


def _store() -> sqlite3.Connection | None:
    """This thread's connection to the store (reopened when the cache directory changes)."""
    path = cache_dir() / STORE_NAME
    conn = getattr(_local, "conn", None)
    if conn is not None and getattr(_local, "path", None) == path:
        return conn
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30.0)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        with conn:
            conn.executescript(_SCHEMA)
    except (OSError, sqlite3.Error):
        return None
    _local.conn, _local.path = conn, path
    return conn


def _hash_bytes(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | Path, *, use_cache: bool = True) -> str:
    """Hex sha256 of a file's bytes (remembered by path, inode, size and mtime when ``use_cache``)."""
    p = Path(path).resolve()
    if not use_cache:
        return _hash_bytes(p)
    st = p.stat()
    key = (str(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    conn = _store()
    if conn is not None:
        try:
            row = conn.execute("SELECT sha256 FROM file_hashes WHERE path = ? AND dev = ? AND ino = ? "
                               "AND size = ? AND mtime_ns = ?", key).fetchone()
            if row:
                return str(row[0])
        except sqlite3.Error:
            conn = None
    digest = _hash_bytes(p)
    if conn is not None:
        try:
            with conn:
                conn.execute("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?, ?)", (*key, digest))
        except sqlite3.Error:
            pass  # the cache is an optimisation only
    return digest


def weights_digest(file_hashes: Iterable[str]) -> str:
    """A model's weights fingerprint: sha256 over its weight files' sha256, sorted (names don't count)."""
    return hashlib.sha256("\n".join(sorted(file_hashes)).encode()).hexdigest()


__all__ = ["cache_dir", "sha256_file", "weights_digest", "STORE_NAME"]
