"""The one hash cache: a second hash of an unchanged file is a lookup; any change is re-hashed."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from mergegate.models import fingerprints
from mergegate.models.fingerprints import STORE_NAME, cache_dir, sha256_file, weights_digest


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = fingerprints._hash_bytes

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(fingerprints, "_hash_bytes", counting)
    return calls


def test_unchanged_file_is_a_lookup(tmp_path: Path, hashed: list[Path]) -> None:
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"x" * 1000)
    h1 = sha256_file(f)
    assert h1 == hashlib.sha256(b"x" * 1000).hexdigest()
    assert sha256_file(f) == h1 and len(hashed) == 1  # second call: no read
    rows = sqlite3.connect(cache_dir() / STORE_NAME).execute(
        "SELECT COUNT(*) FROM file_hashes WHERE path = ?", (str(f.resolve()),)).fetchone()[0]
    assert rows == 1


def test_changed_or_replaced_file_is_rehashed(tmp_path: Path, hashed: list[Path]) -> None:
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"x" * 1000)
    st = f.stat()
    h1 = sha256_file(f)
    f.write_bytes(b"y" * 1000)  # same size; the mtime is put back to fool a (size, mtime) key
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert sha256_file(f) != h1
    other = tmp_path / "other"
    other.write_bytes(b"z" * 1000)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, f)  # a new inode at the same path, same size and mtime as the first version
    assert sha256_file(f) == hashlib.sha256(b"z" * 1000).hexdigest()


def test_checks_that_vouch_never_use_the_cache(tmp_path: Path, hashed: list[Path]) -> None:
    f = tmp_path / "w"
    f.write_bytes(b"a")
    sha256_file(f)
    sha256_file(f, use_cache=False)
    assert len(hashed) == 2


def test_unwritable_store_still_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("MERGEGATE_CACHE_DIR", str(blocker / "cache"))
    f = tmp_path / "w"
    f.write_bytes(b"abc")
    assert sha256_file(f) == hashlib.sha256(b"abc").hexdigest()


def test_weights_digest_ignores_order() -> None:
    assert weights_digest(["b", "a"]) == weights_digest(["a", "b"]) != weights_digest(["a"])
