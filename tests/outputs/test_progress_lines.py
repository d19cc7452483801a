"""mergegate.progress: bars on a terminal, lines in a log, GitHub Actions groups, library bars off."""

from __future__ import annotations

import os
import re

import pytest

from mergegate import progress


@pytest.fixture(autouse=True)
def _log_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MERGEGATE_PROGRESS", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.setenv("MERGEGATE_PROGRESS_INTERVAL", "0")


def test_lines_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert progress.mode() == "lines"  # pytest's captured stderr is not a terminal
    with progress.bar(4, "generate base", unit="prompt") as bar:
        for _ in range(4):
            bar.update(1)
    err = capsys.readouterr().err
    assert re.search(r"generate base: 0/4 prompts$", err, re.M)
    assert re.search(r"generate base: 2/4 prompts \([\d.]+/s, ETA [\d.]+ s\)", err)
    assert re.search(r"generate base: 4/4 prompts in [\d.]+ s$", err, re.M)
    assert "\r" not in err


def test_lines_are_rate_limited(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERGEGATE_PROGRESS_INTERVAL", "3600")
    with progress.bar(1000, "judge", unit="answer") as bar:
        for _ in range(1000):
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2  # the start and the end, nothing in between within the interval


def test_off_and_disabled_print_nothing(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with progress.bar(3, "x", enabled=False) as bar:
        bar.update(3)
    progress.Stages("run", enabled=False).start("merge")
    monkeypatch.setenv("MERGEGATE_PROGRESS", "off")
    with progress.bar(3, "x") as bar:
        bar.update(3)
    stages = progress.Stages("run")
    stages.start("merge")
    stages.finish()
    progress.note("hello")
    assert capsys.readouterr().err == ""


def test_stages_are_github_groups_that_never_nest(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    outer = progress.Stages("run")
    outer.start("merge", "recipe.yml")
    inner = progress.Stages("weighting")
    inner.start("data")  # inside an open group: a plain line
    inner.finish()
    outer.start("audit")
    outer.finish("decision pass")
    err = capsys.readouterr().err
    assert re.findall(r"^::(\w+)::", err, re.M) == ["group", "endgroup", "group", "endgroup"]
    assert re.search(r"run merge: recipe.yml$", err, re.M) and re.search(r"run audit: decision pass in ", err)
    assert re.search(r"weighting data: done in ", err)


def test_library_bars_silenced_in_log_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in progress.LIBRARY_ENV:
        monkeypatch.delenv(key, raising=False)
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

    try:
        progress.quiet_library_bars()
        assert all(os.environ.get(k) == v for k, v in progress.LIBRARY_ENV.items())
        assert are_progress_bars_disabled()
    finally:
        enable_progress_bars()


def test_duration_format() -> None:
    assert progress.duration(4.25) == "4.2 s"
    assert progress.duration(185) == "3m05s"
    assert progress.duration(7260) == "2h01m"
