"""Bad input to ``mergegate batch``: exit code 2 with a message, or a record instead of a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from _batch_fakehub import FakeHub
from mergegate.cli.main import main as _main
from mergegate.batch.hub import parse_shard, read_models_file
from mergegate.batch.records import read_records
from mergegate.errors import InputError


def main(argv: list[str]) -> int:
    """The CLI's exit code, including argparse's own usage errors (SystemExit 2)."""
    try:
        return _main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize("shard", ["x", "1", "1/", "/2", "0/2", "3/2", "1/0", "a/b", "-1/2", "1/2/3"])
def test_malformed_shard_is_bad_input(shard: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "m.txt"
    models.write_text("org/model\n")
    assert main(["batch", "--models", str(models), f"--shard={shard}", "--out", str(tmp_path / "o")]) == 2
    assert "shard" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing was started


def test_shard_parsing() -> None:
    assert parse_shard("2/4") == (2, 4) and parse_shard(" 1 / 1 ") == (1, 1) and parse_shard(None) is None
    with pytest.raises(InputError, match="out of range"):
        parse_shard("5/4")


def test_models_file_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["batch", "--models", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "models file not found" in err and "nope.txt" in err


@pytest.mark.parametrize("text,message", [
    ("", "lists no model"),
    ("# only a comment\n\n", "lists no model"),
    ("org/ok\nnot a model id\n", "line 2"),
    ("../etc/passwd\n", "not a Hub model id"),
    ("org/name@\n", "not a Hub model id"),
])
def test_models_file_bad_lines(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "m.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_models_file(path)


def test_models_file_format(tmp_path: Path) -> None:
    path = tmp_path / "m.txt"
    path.write_text("a/b  # comment\nc/d@main\na/b\n")
    assert [(t.repo_id, t.revision, t.rank) for t in read_models_file(path)] == [("a/b", None, 0),
                                                                                 ("c/d", "main", 1)]


@pytest.mark.parametrize("argv", [
    ["batch", "--out", "DIR"],  # neither --top nor --models
    ["batch", "--top", "3", "--models", "m.txt", "--out", "DIR"],  # both
    ["batch", "--top", "3"],  # no --out
    ["batch", "--models", "m.txt", "--filter", "mergekit", "--out", "DIR"],
])
def test_source_options(argv: list[str], tmp_path: Path) -> None:
    (tmp_path / "m.txt").write_text("a/b\n")
    argv = [a.replace("DIR", str(tmp_path / "o")).replace("m.txt", str(tmp_path / "m.txt")) for a in argv]
    assert main(argv) == 2


def test_top_needs_the_hub(hub_offline: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["batch", "--top", "3", "--out", str(tmp_path / "o")]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err


def test_collect_needs_batch_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["batch", "collect", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "results.jsonl" in capsys.readouterr().err


def test_no_recipe_and_missing_constituent_are_records(hub_offline: FakeHub, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, from the HF cache: a repo without any recipe and a recipe naming a constituent that
    does not exist are recorded (no audit is started), and so is a merge that is not there at all."""
    from mergegate.audit import api

    def no_audit(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("nothing here may be audited")

    monkeypatch.setattr(api, "audit_models", no_audit)
    models = tmp_path / "m.txt"
    models.write_text("mergers/no-recipe\nmergers/ghost-parent\nmergers/not-there\n")
    out = tmp_path / "o"
    assert main(["batch", "--models", str(models), "--out", str(out)]) == 0
    by_id = {r.repo_id: r for r in read_records(out / "results.jsonl")}
    assert by_id["mergers/no-recipe"].status == "no recipe"
    assert by_id["mergers/no-recipe"].revision == hub_offline.repos["mergers/no-recipe"].sha
    assert {f.code for f in by_id["mergers/no-recipe"].lint} == {"base-model-missing", "license-missing"}
    ghost = by_id["mergers/ghost-parent"]
    assert ghost.status == "error" and "toy/ghost" in (ghost.error or "")
    assert by_id["mergers/not-there"].status == "error" and by_id["mergers/not-there"].revision is None
    assert (out / "leaderboard.html").is_file() and (out / "results.csv").is_file()


def test_unparsable_recipe_is_a_record(hub_offline: FakeHub, tmp_path: Path) -> None:
    """A recipe that is not YAML (in a copy of a cached repo) becomes an error record."""
    import shutil

    src = hub_offline.repos["mergers/toy-linear-30"]
    bad = hub_offline.hub / "models--mergers--broken"
    if not bad.exists():
        shutil.copytree(src.folder(hub_offline.hub), bad)
        (bad / "snapshots" / src.sha / "mergekit_config.yml").write_text("models: [unclosed\n")
    models = tmp_path / "m.txt"
    models.write_text("mergers/broken\n")
    assert main(["batch", "--models", str(models), "--out", str(tmp_path / "o")]) == 0
    (rec,) = read_records(tmp_path / "o" / "results.jsonl")
    assert rec.status == "error" and "recipe" in (rec.error or "")
