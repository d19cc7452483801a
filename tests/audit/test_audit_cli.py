"""``mergegate audit`` end to end: table on stdout, JSON report, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mergegate.audit.results import AuditReport
from mergegate.cli.main import main


def test_audit_help_is_registered(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["audit", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--prompts", "--benign", "--limit", "--seed", "--judge", "--backend", "--device",
                 "--max-new-tokens", "--batch-size", "--cache", "--chat-template", "--json"):
        assert flag in out


@pytest.mark.slow
def test_audit_cli_writes_table_and_json(toy_fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reports" / "audit.json"
    code = main(["audit", str(toy_fleet / "base"), str(toy_fleet / "expert"),
                 "--prompts", str(toy_fleet / "prompts" / "unsafe.jsonl"),
                 "--benign", str(toy_fleet / "prompts" / "benign.jsonl"), "--limit", "30", "--seed", "3",
                 "--judge", str(toy_fleet / "guard"), "--max-new-tokens", "48", "--batch-size", "32",
                 "--cache", str(tmp_path / "cache"), "--json", str(out)])
    assert code == 0
    stdout = capsys.readouterr().out
    lines = stdout.splitlines()
    assert lines[0].split()[:3] == ["model", "alignment", "95%"]
    assert any(str(toy_fleet / "base") in line and "%" in line for line in lines)
    report = AuditReport.model_validate_json(out.read_text())
    assert [s.model.id for s in report.scores] == [str(toy_fleet / "base"), str(toy_fleet / "expert")]
    assert report.prompts.n == 30 and report.prompts.seed == 3 and report.scores[0].n_benign == 30
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temp file
    assert (tmp_path / "cache" / "audit.sqlite3").is_file()
    assert json.loads(out.read_text())["judge"]["protocol"] == "llama-guard-3"


def test_audit_cli_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], toy_fleet: Path) -> None:
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"question": "x"}\n')
    code = main(["audit", str(toy_fleet / "base"), "--prompts", str(bad), "--benign", "none",
                 "--judge", str(toy_fleet / "guard"), "--cache", str(tmp_path / "c")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no 'prompt' column" in err and "hint:" in err
