"""Command-line conventions: `--json -` is stdout, -v/--quiet before or after the subcommand."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from mergegate.cli.main import build_parser, main


def _audit_report():  # noqa: ANN202 - AuditReport
    from mergegate.audit.results import (AuditReport, DatasetRef, GenerationSettings, JudgeRef, ModelRef,
                                         ModelScore)
    from mergegate.audit.scoring import wilson_interval

    score = ModelScore(model=ModelRef(id="org/model", revision="a" * 40), n=10, n_safe=9, alignment=0.9,
                       interval=wilson_interval(9, 10))
    return AuditReport(scores=[score], judge=JudgeRef(id="meta-llama/Llama-Guard-3-8B", protocol="llama-guard-3"),
                       prompts=DatasetRef(source="beavertails", revision="b" * 40, n=10),
                       generation=GenerationSettings(max_new_tokens=8), mergegate_version="0",
                       created_at=datetime(2026, 1, 2, tzinfo=timezone.utc))


@pytest.fixture
def fake_audit(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    import mergegate.audit.api as api

    calls: list[dict] = []

    def audit_models(models, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append({"models": models, **kwargs})
        return _audit_report()

    monkeypatch.setattr(api, "audit_models", audit_models)
    import mergegate.audit.preflight as preflight  # the inputs check loads the real default sources

    monkeypatch.setattr(preflight, "check_audit_inputs", lambda **kwargs: SimpleNamespace(notes=[]))
    return calls


def test_audit_json_dash_prints_json_to_stdout_and_writes_no_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        fake_audit: list[dict]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["audit", "org/model", "--json", "-"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # stdout is the JSON report and nothing else
    assert data["scores"][0]["model"]["id"] == "org/model" and data["scores"][0]["n_safe"] == 9
    assert captured.err.splitlines()[0].split()[:3] == ["model", "alignment", "95%"]  # the table, on stderr
    assert list(tmp_path.iterdir()) == []  # never a file named '-'


def test_audit_json_file_still_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       fake_audit: list[dict]) -> None:
    out = tmp_path / "a.json"
    assert main(["audit", "org/model", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].split()[:3] == ["model", "alignment", "95%"]
    assert f"report written to {out}" in captured.err
    assert json.loads(out.read_text())["scores"][0]["n"] == 10
    assert main(["audit", "org/model", "--json", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and fake_audit[-1]["progress"] is False  # no note, no progress bars


@pytest.mark.parametrize("argv", [
    ["-v", "audit", "m"], ["audit", "m", "-v"], ["audit", "-v", "m"], ["audit", "m", "--verbose"]])
def test_verbose_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.verbose is True and args.quiet is False


@pytest.mark.parametrize("argv", [["-q", "run", "c.yml", "--out", "o"], ["run", "c.yml", "--out", "o", "--quiet"],
                                  ["merge", "c.yml", "o", "-q"], ["push", "org/m", "--quiet"]])
def test_quiet_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.quiet is True and args.verbose is False


def test_no_flag_means_neither() -> None:
    args = build_parser().parse_args(["audit", "m"])
    assert args.quiet is False and args.verbose is False


@pytest.mark.parametrize("argv", [["-v", "audit", "m", "-q"], ["audit", "m", "-v", "--quiet"]])
def test_verbose_and_quiet_together_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "not allowed with argument -v/--verbose" in capsys.readouterr().err


def test_run_quiet_prints_only_the_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import mergegate.gate.pipeline as pipeline

    from mergegate.gate.report import RunReport

    def run_gate(config, out, **kwargs):  # noqa: ANN001, ANN003, ANN202
        assert kwargs["progress"] is False
        return RunReport(name="m", decision="error", reasons=["x"],
                         error={"stage": "merge", "type": "MergeFailure", "message": "boom", "exit_code": 3})

    monkeypatch.setattr(pipeline, "run_gate", run_gate)
    code = main(["run", str(tmp_path / "c.yml"), "--out", str(tmp_path / "o"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 3
    assert captured.out.splitlines() == ["mergegate: m: ERROR"]
    assert "mergegate: error: boom" in captured.err
