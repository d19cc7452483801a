"""A corrupt audit cache is never half-trusted: moved aside (with a warning naming it) or refused."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from mergegate.audit.cache import AuditCache
from mergegate.audit.results import Verdict
from mergegate.cli.main import main
from mergegate.errors import InputError


def _filled(path: Path, n: int = 3000) -> AuditCache:
    cache = AuditCache(path)
    cache.put_answers("m", "s", [(f"prompt {i}", "answer " * 20 + str(i)) for i in range(n)])
    cache.close()
    return cache


def _aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".corrupt-*"))


def test_garbage_file_is_moved_aside_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.sqlite3"
    path.write_bytes(b"definitely not SQLite\n" * 100)
    with caplog.at_level(logging.WARNING):
        cache = AuditCache(path)
    moved = _aside(path)
    assert len(moved) == 1 and moved[0].read_bytes() == b"definitely not SQLite\n" * 100  # kept, not deleted
    assert str(path) in caplog.text and moved[0].name in caplog.text and "fresh" in caplog.text
    cache.put_answers("m", "s", [("p", "a")])
    assert cache.get_answers("m", "s", ["p"]) == {"p": "a"}


def test_damaged_pages_fail_the_integrity_check(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.sqlite3"
    _filled(path)
    data = bytearray(path.read_bytes())
    assert len(data) > 40_000
    data[20_000:28_000] = b"\xa5" * 8000  # a few pages in the middle: the header still says SQLite
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        cache = AuditCache(path)
    assert len(_aside(path)) == 1 and "corrupt" in caplog.text
    assert cache.counts()["answers"] == 0  # nothing of the damaged file is trusted


def test_corruption_found_later_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    cache = AuditCache(path)
    cache.put_verdicts("j", [(("p", "a"), Verdict(unsafe=True, p_unsafe=0.9, categories=("S1",)))])
    with sqlite3.connect(path) as conn:  # a row tampered with outside mergegate
        conn.execute("UPDATE verdicts SET categories = '{not json'")
    with pytest.raises(InputError, match="corrupt") as exc:
        cache.get_verdicts("j", [("p", "a")])
    assert exc.value.source == str(path) and exc.value.exit_code == 2 and "--cache" in exc.value.hint


def test_foreign_database_is_refused_and_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  toy_fleet: Path) -> None:
    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
    before = path.read_bytes()
    with pytest.raises(InputError, match="not a mergegate audit cache"):
        AuditCache(path)
    code = main(["audit", str(toy_fleet / "base"), "--prompts", str(toy_fleet / "prompts" / "unsafe.jsonl"),
                 "--benign", "none", "--judge", "refusal-patterns", "--limit", "2", "--cache", str(path)])
    assert code == 2 and str(path) in capsys.readouterr().err
    assert path.read_bytes() == before and not _aside(path)


def test_cache_under_a_file_is_bad_input(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="this path is a file") as exc:
        AuditCache(blocker / "cache")
    assert exc.value.source == str(blocker)
    (tmp_path / "d.sqlite3").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        AuditCache(tmp_path / "d.sqlite3")


def test_audit_cli_recovers_from_a_corrupt_cache(toy_fleet: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "c" / "audit.sqlite3"
    cache.parent.mkdir()
    cache.write_bytes(b"\0" * 4096)
    code = main(["audit", str(toy_fleet / "base"), "--prompts", str(toy_fleet / "prompts" / "unsafe.jsonl"),
                 "--benign", "none", "--judge", "refusal-patterns", "--limit", "2", "--max-new-tokens", "4",
                 "--cache", str(cache.parent)])
    assert code == 0  # the warning goes to stderr through logging (captured here by caplog)
    assert str(cache) in caplog.text and "moved it aside" in caplog.text and len(_aside(cache)) == 1
