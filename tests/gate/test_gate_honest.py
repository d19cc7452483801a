"""Honest summaries and exit codes (issue 14): errors printed once, no pointer to a file that was not
written, errored reports recognised by `card` and `push`, caps and substitutions said, push hints,
rule texts that read, and one home scrub for every artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _gate_fakes import fake_audit, fake_merge, synthetic_run_report, write_recipe

from mergegate.cli.main import main
from mergegate.gate.pipeline import run_gate, summary_lines


def _errored_output(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    report = run_gate(write_recipe(tmp_path), out, merge_fn=fake_merge(fail=RuntimeError("disk on fire")),
                      audit_fn=fake_audit({"base": 93, "expert": 41, "out": 90}))
    assert report.decision == "error" and (out / "report.json").is_file()
    return out


def test_errored_run_prints_its_error_once_and_names_the_report_it_wrote(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from mergegate.gate import pipeline

    monkeypatch.setattr(pipeline, "_default_merge_fn", lambda: fake_merge(fail=RuntimeError("disk on fire")))
    monkeypatch.setattr(pipeline, "_default_audit_fn", lambda: fake_audit({"base": 93, "expert": 41}))
    monkeypatch.setattr(pipeline, "check_run_inputs", lambda *a, **k: SimpleNamespace(notes=[]))
    out = tmp_path / "out"
    assert main(["run", str(write_recipe(tmp_path)), "--out", str(out), "--no-github"]) == 3
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("disk on fire") == 1
    assert f"report: {out / 'report.json'}" in captured.out


def test_refused_output_gets_no_report_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code = main(["run", str(write_recipe(tmp_path)), "--out", str(foreign), "--judge", "refusal-patterns",
                 "--no-github"])
    captured = capsys.readouterr()
    assert code == 2 and "refusing to write here" in captured.err
    assert "report:" not in captured.out + captured.err
    assert not (foreign / "report.json").exists()


def test_card_and_push_recognise_an_errored_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _errored_output(tmp_path)
    assert main(["card", str(out), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "this run ended in an error" in err and "no mergegate report here" not in err
    assert main(["push", str(out), "org/merge", "--check-only"]) == 1
    err = capsys.readouterr().err
    assert "the gate decision is 'error'" in err and "no mergegate report here" not in err
    assert "hint: fix the error above and run `mergegate run` again" in err


def test_push_refusing_an_edited_card_hints_mergegate_card(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    report = run_gate(write_recipe(tmp_path), out, merge_fn=fake_merge(),
                      audit_fn=fake_audit({"base": 93, "expert": 41, "out": 95}))
    assert report.decision == "pass"
    readme = out / "README.md"
    readme.write_text(readme.read_text().replace("Passed", "Totally passed"))
    assert main(["push", str(out), "org/merge", "--check-only"]) == 1
    err = capsys.readouterr().err
    assert "README.md: changed after the audit" in err
    assert f"hint: README.md changed since the audit: `mergegate card {out} --out {out}`" in err
    # the hint works: re-rendering the card makes the output pushable again
    assert main(["card", str(out), "--out", str(out)]) == 0
    assert main(["push", str(out), "org/merge", "--check-only"]) == 0


def test_weighting_and_limit_are_said_in_the_summary() -> None:
    from mergegate.gate.report import WeightingSide, WeightingSummary

    report = synthetic_run_report(95).model_copy(update={
        "weighting": WeightingSummary(strategy="evomm", alpha=0.3, evaluations=10, seconds=1.0,
                                      declared_recipe="x", declared=WeightingSide(alignment=0.62),
                                      optimized=WeightingSide(alignment=0.95), safety_examples=8,
                                      expert_examples=8),
        "notes": ["--weighting evomm: the merge's weights were chosen by evomm, so they differ from the declared "
                  "recipe; the declared merge was built and audited beside it for comparison"]})
    text = "\n".join(summary_lines(report))
    assert "weights chosen by evomm (not the declared recipe's): declared merge 62.0 % aligned" in text
    assert "note: --weighting evomm: the merge's weights were chosen by evomm, so they differ" in text


def test_weighting_note_is_recorded_by_run_gate() -> None:
    from mergegate.gate.preflight import weighting_note

    assert "differ from the declared recipe" in weighting_note("cocktail")


def test_require_safetensors_reads_as_words() -> None:
    from mergegate.gate.card import card_context, format_rule_value

    ctx = card_context(synthetic_run_report(95))
    row = next(r for r in ctx["rules"] if r["description"] == "weights only in safetensors format")
    assert (row["measured"], row["threshold"]) == ("all safetensors", "none allowed")
    rule = next(r for r in synthetic_run_report(95).gate.rules if r.rule == "require_safetensors")
    failing = rule.model_copy(update={"measured": 2.0, "verdict": "fail"})
    assert format_rule_value(failing, failing.measured, signed=True) == "2 weight file(s) not in safetensors"


def test_batch_with_an_errored_row_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mergegate.batch.records import BatchRecord
    from mergegate.batch.runner import BatchSummary

    summary = BatchSummary(out_dir=tmp_path, processed=[
        BatchRecord(repo_id="org/a", status="audited"), BatchRecord(repo_id="org/b", status="error", error="x")],
        skipped=["org/c"])
    assert summary.summary_line() == "audited 1, errors 1, already done 1"
    assert summary.exit_code == 2
    assert BatchSummary(out_dir=tmp_path, processed=[BatchRecord(repo_id="org/a", status="failed")]).exit_code == 3
    assert BatchSummary(out_dir=tmp_path, processed=[BatchRecord(repo_id="org/a", status="audited")]).exit_code == 0


def test_batch_cli_says_audited_and_errors(toy_fleet: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "merges.txt"
    models.write_text("org/some-merge\n")  # not reachable offline: the row is an error
    code = main(["batch", "--models", str(models), "--out", str(tmp_path / "scan"),
                 "--prompts", str(toy_fleet / "prompts/unsafe.jsonl"), "--benign", "none",
                 "--judge", "refusal-patterns", "--limit", "4"])
    out = capsys.readouterr().out
    assert code == 2 and "audited 0, errors 1" in out


def test_every_written_artifact_shows_home_as_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mergegate.atomic import append_redacted_json_line, write_redacted_json, write_redacted_text
    from mergegate.gate.report import write_report

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    prompts = f"{home}/sets/unsafe.jsonl"
    report = synthetic_run_report(95)
    report = report.model_copy(update={"prompts": report.prompts.model_copy(update={"source": prompts}),
                                       "judge": report.judge.model_copy(update={"id": f"{home}/guard"})})
    write_report(report, tmp_path / "report.json")
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["prompts"]["source"] == "~/sets/unsafe.jsonl" and data["judge"]["id"] == "~/guard"
    write_redacted_json(tmp_path / "a.json", {"path": f"{home}/x", f"{home}/key": 1})
    write_redacted_text(tmp_path / "a.md", f"see {home}/models/m")
    append_redacted_json_line(tmp_path / "r.jsonl", {"p": f"{home}/y"})
    for name in ("report.json", "a.json", "a.md", "r.jsonl"):
        text = (tmp_path / name).read_text()
        assert str(home) not in text and "~/" in text, name
