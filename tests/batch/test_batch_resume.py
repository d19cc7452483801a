"""A killed batch resumes: finished merges are skipped, finished audits come from the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from _batch_fakehub import FakeHubServer
from _batch_fakehub import toy_audit_args
from mergegate.cli.main import main
from mergegate.batch.records import read_records


class Killed(KeyboardInterrupt):
    """What Ctrl-C / a cancelled CI job looks like to the batch."""


def test_killed_batch_resumes_without_recomputing(hub_server: FakeHubServer, toy_fleet: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from mergegate.audit import api

    models = tmp_path / "merges.txt"
    models.write_text("# two merges of the same constituents\nmergers/toy-linear-30\n\nmergers/toy-slerp-50\n")
    out, cache = tmp_path / "out", tmp_path / "fresh-cache.sqlite3"
    args = ["batch", "--models", str(models), "--out", str(out), "--cache", str(cache), "--no-rebuild",
            *toy_audit_args(toy_fleet)]

    real_audit, real_generator = api.audit_models, api.make_generator
    audits: list[list[str]] = []
    generated: list[str] = []

    def killing_audit(models, **kw):  # noqa: ANN001, ANN202
        audits.append(list(models))
        if len(audits) == 2:
            raise Killed()  # killed while the second merge is being audited
        return real_audit(models, **kw)

    def spy_generator(backend, path, **kw):  # noqa: ANN001, ANN202
        generated.append(Path(path).parent.parent.name)  # models--org--name/snapshots/<sha>
        return real_generator(backend, path, **kw)

    monkeypatch.setattr(api, "audit_models", killing_audit)
    monkeypatch.setattr(api, "make_generator", spy_generator)
    assert main(args) == 130
    assert [r.repo_id for r in read_records(out / "results.jsonl")] == ["mergers/toy-linear-30"]
    assert generated == ["models--toy--base", "models--toy--expert", "models--mergers--toy-linear-30"]
    assert (out / "leaderboard.html").is_file() and (out / "results.csv").is_file()  # written on the way out

    # second run: only the remaining merge is audited, and only the merge itself generates answers
    monkeypatch.setattr(api, "audit_models", lambda models, **kw: (audits.append(list(models)),
                                                                    real_audit(models, **kw))[1])
    audits.clear()
    generated.clear()
    assert main(args) == 0
    assert len(audits) == 1 and audits[0][-1].startswith("mergers/toy-slerp-50@")
    assert generated == ["models--mergers--toy-slerp-50"]  # constituents' answers came from the cache
    records = read_records(out / "results.jsonl")
    assert [r.repo_id for r in records] == ["mergers/toy-linear-30", "mergers/toy-slerp-50"]
    assert all(r.status == "audited" for r in records)

    # third run: nothing left to do
    audits.clear()
    assert main(args) == 0
    assert audits == [] and len(read_records(out / "results.jsonl")) == 2
