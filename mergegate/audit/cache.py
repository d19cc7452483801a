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
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from mergegate.audit.results import Verdict

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
"""


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
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

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60.0)
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # answers -------------------------------------------------------------------------------
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

    def put_answers(self, model_key: str, settings_key: str, pairs: Iterable[tuple[str, str]]) -> None:
        conn = self._conn()
        with conn:  # one transaction, committed on exit
            conn.executemany("INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?)",
                             [(model_key, settings_key, sha256_text(p), a) for p, a in pairs])

    # verdicts ------------------------------------------------------------------------------
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
                    found[keyed[(ps, ans)]] = Verdict(unsafe=bool(unsafe), p_unsafe=p_unsafe,
                                                      categories=tuple(json.loads(cats)), p_unsafe_token=p_token,
                                                      off_protocol=off, top_token=top)
        return found

    def put_verdicts(self, judge_key: str, items: Iterable[tuple[tuple[str, str], Verdict]]) -> None:
        conn = self._conn()
        with conn:
            conn.executemany(
                "INSERT OR IGNORE INTO verdicts (judge_key, prompt_sha, answer_sha, unsafe, p_unsafe, categories, "
                "p_unsafe_token, off_protocol, top_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(judge_key, sha256_text(p), sha256_text(a), int(v.unsafe), v.p_unsafe,
                  json.dumps(list(v.categories)), v.p_unsafe_token, v.off_protocol, v.top_token)
                 for (p, a), v in items])

    def counts(self) -> dict[str, int]:
        conn = self._conn()
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("answers", "verdicts")}
