"""SQLite cache of answers and verdicts.

Location: ``--cache PATH`` / ``cache=`` (a ``.sqlite``/``.sqlite3``/``.db`` file, or a directory
that gets ``audit.sqlite3``), else ``$MERGEGATE_CACHE_DIR``, else
``platformdirs.user_cache_dir("mergegate")``.

- answers are keyed by (model key, generation-settings key, sha256(prompt)); the model key hashes
  the weights (sha256 over per-file sha256) plus config/tokenizer/chat-template files;
- verdicts by (judge key, sha256(prompt), sha256(answer)), with the normalised P(unsafe), the raw
  P(unsafe first token), the off-protocol first-token mass and the off-protocol top token (schema 2;
  a schema-1 file gets the three columns added, NULL for old rows);
- per-file sha256 are not kept here: :mod:`mergegate.models.fingerprints` holds the one hash cache.

Writers commit once per batch, so an interrupted audit resumes where it stopped. Several processes
may share the file: WAL journal, a 60 s busy timeout, and ``INSERT OR IGNORE`` (answers are
deterministic, so whichever writer wins holds the same value).

A corrupt cache is never half-trusted: on opening, SQLite's ``quick_check`` must pass and the
tables must be this schema's. A file that fails (a torn copy, a truncated disk, not SQLite at all)
is moved aside to ``NAME.corrupt-<UTC time>`` with a warning naming both paths, and a fresh cache
is started: the cache only saves work, so starting over is always correct. A database that is
valid SQLite but not a mergegate cache is refused (exit 2), never modified. Corruption found later
(a row that does not parse, SQLite reporting a malformed page) is an error naming the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mergegate.audit.results import Verdict
from mergegate.errors import InputError

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

SCHEMA_VERSION = 2
DB_NAME = "audit.sqlite3"
_CHUNK = 400  # SQLite host-parameter limit is 999 in old builds
_VERDICT_COLUMNS_V2 = (("p_unsafe_token", "REAL"), ("off_protocol", "REAL"), ("top_token", "TEXT"))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    model_key TEXT NOT NULL, settings_key TEXT NOT NULL, prompt_sha TEXT NOT NULL,
    answer TEXT NOT NULL, PRIMARY KEY (model_key, settings_key, prompt_sha)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS verdicts (
    judge_key TEXT NOT NULL, prompt_sha TEXT NOT NULL, answer_sha TEXT NOT NULL,
    unsafe INTEGER NOT NULL, p_unsafe REAL NOT NULL, categories TEXT NOT NULL,
    p_unsafe_token REAL, off_protocol REAL, top_token TEXT,
    PRIMARY KEY (judge_key, prompt_sha, answer_sha)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS finite_weights (weights_sha TEXT PRIMARY KEY) WITHOUT ROWID;
"""
# every table this schema may hold, with its columns: anything else is not a mergegate cache
_TABLES = {"meta": ["key", "value"],
           "answers": ["model_key", "settings_key", "prompt_sha", "answer"],
           "verdicts": ["judge_key", "prompt_sha", "answer_sha", "unsafe", "p_unsafe", "categories",
                        *(name for name, _ in _VERDICT_COLUMNS_V2)],
           "finite_weights": ["weights_sha"]}
# a schema-1 file (migrated on opening) has the verdict columns before the three of schema 2;
# its per-file hash table (``file_hashes``, now in models.fingerprints) is left alone, unread
_TABLES_V1 = {"verdicts": _TABLES["verdicts"][:6]}
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


class CacheCorrupt(Exception):
    """The cache file fails SQLite's integrity check or holds rows that do not parse."""


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def _corrupt_error(path: Path, detail: str) -> InputError:
    return InputError(f"the audit cache database is corrupt ({detail})", source=str(path), field="cache",
                      hint=f"move it aside (mv '{path}' '{path}.bad') or pass --cache NEW_PATH; the next "
                           "run that finds it failing SQLite's integrity check moves it aside by itself")


def _guarded(method: F) -> F:
    """Corruption met while reading or writing is an error naming the cache file (exit code 2)."""

    @functools.wraps(method)
    def wrapper(self: AuditCache, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except CacheCorrupt as exc:
            raise _corrupt_error(self.path, str(exc)) from None
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                raise _corrupt_error(self.path, str(exc)) from None
            raise

    return wrapper  # type: ignore[return-value]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _verdict(unsafe: object, p_unsafe: object, cats: object, p_token: object = None, off: object = None,
             top: object = None) -> Verdict:
    try:
        categories = json.loads(cats) if isinstance(cats, str) else None
        if unsafe not in (0, 1) or not isinstance(p_unsafe, (int, float)) or not isinstance(categories, list):
            raise ValueError
        if not all(v is None or isinstance(v, (int, float)) for v in (p_token, off)) or \
                not (top is None or isinstance(top, str)):
            raise ValueError
        return Verdict(unsafe=bool(unsafe), p_unsafe=float(p_unsafe), categories=tuple(map(str, categories)),
                       p_unsafe_token=None if p_token is None else float(p_token),
                       off_protocol=None if off is None else float(off), top_token=top)
    except (ValueError, TypeError, RecursionError):
        raise CacheCorrupt("a cached verdict does not parse") from None


def default_cache_path(cache: str | Path | None = None) -> Path:
    if cache is not None:
        path = Path(cache).expanduser()
    elif os.environ.get("MERGEGATE_CACHE_DIR"):
        path = Path(os.environ["MERGEGATE_CACHE_DIR"]).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir("mergegate"))
    if path.suffix in (".sqlite", ".sqlite3", ".db"):
        return path
    return path / DB_NAME


class AuditCache:
    """A process-local handle on the shared cache file (one connection per thread)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = default_cache_path(path)
        if self.path.is_dir():
            raise InputError("the audit cache path is a directory", source=str(self.path), field="cache",
                             hint="pass a file ending in .sqlite3 (or a directory to hold audit.sqlite3)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            blocker = next((p for p in (self.path.parent, *self.path.parent.parents) if p.is_file()),
                           self.path.parent)
            raise InputError("the audit cache would go in a directory, but this path is a file",
                             source=str(blocker), field="cache",
                             hint="pass --cache with a directory or a .sqlite3 file") from None
        self._local = threading.local()
        try:
            self._open_checked()
        except CacheCorrupt as exc:
            self.close()
            moved = self._move_aside()
            log.warning("the audit cache %s is corrupt (%s): moved it aside to %s and started a fresh one",
                        self.path, exc, moved.name)
            self._open_checked()

    def _open_checked(self) -> None:
        """Open the file, check its integrity and schema, and create the tables it lacks."""
        try:
            conn = self._conn(configure=False)
            tables = self._tables(conn)
            foreign = {t for t in tables if not t.startswith("sqlite_")} - set(_TABLES) - {"file_hashes"}
            if foreign and "meta" not in tables:
                raise InputError(f"this SQLite database is not a mergegate audit cache (it holds tables "
                                 f"{', '.join(sorted(foreign)[:5])})", source=str(self.path), field="cache",
                                 hint="pass --cache with a path of its own; mergegate leaves this file alone")
            if tables:
                result = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
                if result != ["ok"]:
                    raise CacheCorrupt("; ".join(str(r) for r in result)[:300])
                for table, columns in _TABLES.items():
                    if table in tables and tables[table] not in (columns, _TABLES_V1.get(table)):
                        raise CacheCorrupt(f"table '{table}' has columns {tables[table]}, expected {columns}")
                version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() \
                    if "meta" in tables else None
                if version is not None and version[0] not in {str(v) for v in range(1, SCHEMA_VERSION + 1)}:
                    raise InputError(f"the audit cache has schema version {version[0]}; this mergegate reads "
                                     f"versions 1 to {SCHEMA_VERSION}", source=str(self.path), field="cache",
                                     hint="pass --cache with a new path (a newer mergegate wrote this one)")
            conn = self._conn()
            with conn:
                conn.executescript(_SCHEMA)
                have = {row[1] for row in conn.execute("PRAGMA table_info(verdicts)")}
                for name, kind in _VERDICT_COLUMNS_V2:  # schema 1 -> 2
                    if name not in have:
                        try:
                            conn.execute(f"ALTER TABLE verdicts ADD COLUMN {name} {kind}")
                        except sqlite3.OperationalError as exc:  # another process added it first
                            if "duplicate column" not in str(exc):
                                raise
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                raise CacheCorrupt(str(exc)) from None
            raise

    @staticmethod
    def _tables(conn: sqlite3.Connection) -> dict[str, list[str]]:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: [c[1] for c in conn.execute(f"PRAGMA table_info('{n.replace(chr(39), '')}')")] for n in names}

    def _move_aside(self) -> Path:
        """Rename the corrupt file (and its WAL/SHM companions) to ``NAME.corrupt-<UTC time>``."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        os.replace(self.path, target)
        for suffix in ("-wal", "-shm"):
            companion = self.path.with_name(self.path.name + suffix)
            if companion.exists():
                os.replace(companion, target.with_name(target.name + suffix))
        return target

    def _conn(self, *, configure: bool = True) -> sqlite3.Connection:
        """This thread's connection; ``configure=False`` only while checking that the file is ours
        (switching to WAL writes to the file, and a foreign database must stay untouched)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60.0)
            try:
                conn.execute("PRAGMA busy_timeout = 60000")
            except sqlite3.DatabaseError:
                conn.close()
                raise
            self._local.conn = conn
            self._local.configured = False
        if configure and not getattr(self._local, "configured", False):
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.configured = True
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # answers -------------------------------------------------------------------------------
    @_guarded
    def get_answers(self, model_key: str, settings_key: str, prompts: Sequence[str]) -> dict[str, str]:
        by_sha = {sha256_text(p): p for p in prompts}
        found: dict[str, str] = {}
        shas = list(by_sha)
        conn = self._conn()
        for i in range(0, len(shas), _CHUNK):
            chunk = shas[i: i + _CHUNK]
            rows = conn.execute(
                f"SELECT prompt_sha, answer FROM answers WHERE model_key = ? AND settings_key = ? "
                f"AND prompt_sha IN ({','.join('?' * len(chunk))})", (model_key, settings_key, *chunk))
            for sha, answer in rows:
                found[by_sha[sha]] = answer
        return found

    @_guarded
    def put_answers(self, model_key: str, settings_key: str, pairs: Iterable[tuple[str, str]]) -> None:
        conn = self._conn()
        with conn:  # one transaction, committed on exit
            conn.executemany("INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?)",
                             [(model_key, settings_key, sha256_text(p), a) for p, a in pairs])

    # verdicts ------------------------------------------------------------------------------
    @_guarded
    def get_verdicts(self, judge_key: str, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Verdict]:
        keyed = {(sha256_text(p), sha256_text(a)): (p, a) for p, a in pairs}
        found: dict[tuple[str, str], Verdict] = {}
        conn = self._conn()
        by_prompt: dict[str, list[str]] = {}
        for ps, ans in keyed:
            by_prompt.setdefault(ps, []).append(ans)
        prompt_shas = list(by_prompt)
        for i in range(0, len(prompt_shas), _CHUNK):
            chunk = prompt_shas[i: i + _CHUNK]
            rows = conn.execute(
                f"SELECT prompt_sha, answer_sha, unsafe, p_unsafe, categories, p_unsafe_token, off_protocol, "
                f"top_token FROM verdicts "
                f"WHERE judge_key = ? AND prompt_sha IN ({','.join('?' * len(chunk))})", (judge_key, *chunk))
            for ps, ans, unsafe, p_unsafe, cats, p_token, off, top in rows:
                if (ps, ans) in keyed:
                    found[keyed[(ps, ans)]] = _verdict(unsafe, p_unsafe, cats, p_token, off, top)
        return found

    @_guarded
    def put_verdicts(self, judge_key: str, items: Iterable[tuple[tuple[str, str], Verdict]]) -> None:
        conn = self._conn()
        with conn:
            conn.executemany(
                "INSERT OR IGNORE INTO verdicts (judge_key, prompt_sha, answer_sha, unsafe, p_unsafe, categories, "
                "p_unsafe_token, off_protocol, top_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(judge_key, sha256_text(p), sha256_text(a), int(v.unsafe), v.p_unsafe,
                  json.dumps(list(v.categories)), v.p_unsafe_token, v.off_protocol, v.top_token)
                 for (p, a), v in items])

    # weights known to be finite ----------------------------------------------------------
    @_guarded
    def weights_finite(self, weights_sha: str) -> bool:
        """True when weights with this sha256 were scanned and hold no NaN/Inf."""
        row = self._conn().execute("SELECT 1 FROM finite_weights WHERE weights_sha = ?", (weights_sha,)).fetchone()
        return row is not None

    @_guarded
    def mark_weights_finite(self, weights_sha: str) -> None:
        conn = self._conn()
        with conn:
            conn.execute("INSERT OR IGNORE INTO finite_weights VALUES (?)", (weights_sha,))

    @_guarded
    def counts(self) -> dict[str, int]:
        conn = self._conn()
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("answers", "verdicts", "finite_weights")}
