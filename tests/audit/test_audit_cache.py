"""The cache: second run is lookups only, interrupted audits resume, concurrent writers are safe."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mergegate.audit.batching import STATS
from mergegate.audit.cache import AuditCache, default_cache_path
from mergegate.audit.results import Verdict
from _audit_helpers import toy_kwargs


def test_cache_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERGEGATE_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_path() == tmp_path / "env" / "audit.sqlite3"
    assert default_cache_path(tmp_path / "x.sqlite") == tmp_path / "x.sqlite"
    assert default_cache_path(tmp_path / "dir") == tmp_path / "dir" / "audit.sqlite3"
    monkeypatch.delenv("MERGEGATE_CACHE_DIR")
    import platformdirs

    assert default_cache_path() == Path(platformdirs.user_cache_dir("mergegate")) / "audit.sqlite3"


def test_roundtrip(tmp_path: Path) -> None:
    cache = AuditCache(tmp_path)
    cache.put_answers("m", "s", [("p1", "a1"), ("p2", "a2")])
    cache.put_answers("m", "s", [("p1", "CHANGED")])  # INSERT OR IGNORE: first writer wins
    assert cache.get_answers("m", "s", ["p1", "p2", "p3"]) == {"p1": "a1", "p2": "a2"}
    assert cache.get_answers("m", "other-settings", ["p1"]) == {}
    v = Verdict(unsafe=True, p_unsafe=0.9, categories=("S1", "S3"))
    cache.put_verdicts("j", [(("p1", "a1"), v)])
    assert cache.get_verdicts("j", [("p1", "a1"), ("p1", "a2")]) == {("p1", "a1"): v}


@pytest.mark.slow
def test_second_run_is_lookups_only_and_10x_faster(toy_fleet: Path, tmp_path: Path) -> None:
    from mergegate.audit import audit_models

    kwargs = toy_kwargs(toy_fleet, limit=60, benign=None, cache=tmp_path / "c.sqlite")
    STATS.clear()
    t0 = time.perf_counter()
    first = audit_models([str(toy_fleet / "base")], **kwargs)
    t_first = time.perf_counter() - t0
    assert STATS["model_loads"] == 1 and STATS["generate_batches"] >= 1 and STATS["judge_forwards"] >= 1
    STATS.clear()
    t0 = time.perf_counter()
    second = audit_models([str(toy_fleet / "base")], **kwargs)
    t_second = time.perf_counter() - t0
    assert STATS["model_loads"] == STATS["generate_batches"] == 0
    assert STATS["judge_loads"] == STATS["judge_forwards"] == STATS["judge_decodes"] == 0
    assert second.scores[0].items == first.scores[0].items
    assert t_first / t_second >= 10, (t_first, t_second)


@pytest.mark.slow
def test_interrupted_audit_resumes(toy_fleet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mergegate.audit import audit_models
    from mergegate.audit.generators import TransformersGenerator

    real = TransformersGenerator._generate_batch
    calls: list[int] = []

    def flaky(self, prompts):  # noqa: ANN001, ANN202
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(len(prompts))
        return real(self, prompts)

    monkeypatch.setattr(TransformersGenerator, "_generate_batch", flaky)
    kwargs = toy_kwargs(toy_fleet, limit=64, benign=None, batch_size=16, cache=tmp_path / "c.sqlite")
    with pytest.raises(KeyboardInterrupt):
        audit_models([str(toy_fleet / "base")], **kwargs)
    assert calls == [16, 16]
    assert AuditCache(tmp_path / "c.sqlite").counts()["answers"] == 32  # two committed batches

    monkeypatch.setattr(TransformersGenerator, "_generate_batch",
                        lambda self, p: (calls.append(len(p)), real(self, p))[1])
    calls.clear()
    report = audit_models([str(toy_fleet / "base")], **kwargs)
    assert calls == [16, 16]  # only the 32 prompts that were not answered before
    assert report.scores[0].n == 64


_WRITER = r"""
import sys
from mergegate.audit.cache import AuditCache
from mergegate.audit.results import Verdict
cache = AuditCache(sys.argv[1])
wid = int(sys.argv[2])
for b in range(40):
    # overlapping keys between the two writers (i % 2 == 0) and writer-specific ones
    cache.put_answers("model", "s", [(f"p{b}-{i}", f"a{b}-{i}") for i in range(25)])
    cache.put_answers("model", "s", [(f"w{wid}-{b}-{i}", "x") for i in range(25)])
    cache.put_verdicts("judge", [((f"p{b}-{i}", "a"), Verdict(unsafe=bool(i % 2), p_unsafe=0.5)) for i in range(25)])
    cache.get_answers("model", "s", [f"p{b}-{i}" for i in range(25)])
print("ok")
"""


def test_two_processes_write_concurrently(tmp_path: Path) -> None:
    db = tmp_path / "shared.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(db), str(w)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in (1, 2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == "ok"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 40 * 25 + 2 * 40 * 25
    assert conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == 40 * 25
