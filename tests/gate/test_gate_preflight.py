"""Mistakes caught before the merge (issue 14): every late-error case of `run`, `audit` and `batch`
fails at the preflight, exit 2, before any merge output exists, naming the option and the fix;
`run --dry-run` makes the same checks and prints the plan."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mergegate.cli.main import main
from mergegate.gate.demo import DEMO_MERGES, render_recipe
from mergegate.gate.report import load_report


def recipe(tmp_path: Path, fleet: Path, name: str = "passes") -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(render_recipe(DEMO_MERGES[name][0], fleet))
    return path


def run_args(fleet: Path, **over: str) -> list[str]:
    args = {"--prompts": str(fleet / "prompts/unsafe.jsonl"), "--benign": str(fleet / "prompts/benign.jsonl"),
            "--judge": str(fleet / "guard"), "--limit": "4", "--max-new-tokens": "8"}
    args.update(over)
    return [x for k, v in args.items() for x in (k, v)] + ["--no-github"]


def no_merge_output(out: Path) -> bool:
    """Nothing merged: no weights in the output or a staging sibling of it."""
    return not list(out.parent.glob(f"*{out.name}*/*.safetensors")) and not list(out.glob("*.safetensors"))


def assert_preflight_error(code: int, out: Path, err: str, option: str, fix: str) -> None:
    assert code == 2, err
    assert f"option '{option}'" in err and fix in err, err
    assert no_merge_output(out)
    report = load_report(out)
    assert report.decision == "error" and report.error and report.error.stage == "preflight"
    assert report.error.exit_code == 2
    assert "run merge" not in err  # the merge stage never started


@pytest.mark.parametrize("option, value, fix", [
    ("--prompts", "missing.jsonl", "hint: give 'beavertails'"),
    ("--benign", "missing.jsonl", "--benign none"),
    ("--judge", "no-such-guard", "a local Llama Guard directory"),
])
def test_missing_input_fails_before_the_merge(toy_fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              option: str, value: str, fix: str) -> None:
    out = tmp_path / "out"
    code = main(["run", str(recipe(tmp_path, toy_fleet)), "--out", str(out),
                 *run_args(toy_fleet, **{option: str(tmp_path / value)})])
    captured = capsys.readouterr()
    assert_preflight_error(code, out, captured.err, option, fix)
    # the error is printed once, and the report it names was written
    assert captured.err.count("not found") == 1
    assert f"report: {out / 'report.json'}" in captured.out


def test_judge_that_does_not_speak_the_protocol_fails_before_the_merge(toy_fleet: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    judge = tmp_path / "not-a-guard"
    shutil.copytree(toy_fleet / "guard", judge)
    (judge / "mergegate_judge.json").unlink()  # no declared protocol, and a template that is not Llama Guard's
    (judge / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    config = json.loads((judge / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (judge / "tokenizer_config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    code = main(["run", str(recipe(tmp_path, toy_fleet)), "--out", str(out),
                 *run_args(toy_fleet, **{"--judge": str(judge)})])
    err = capsys.readouterr().err
    assert_preflight_error(code, out, err, "--judge", "--judge-protocol")


def test_judge_with_truncated_weights_fails_before_the_merge(toy_fleet: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    judge = tmp_path / "broken-guard"
    shutil.copytree(toy_fleet / "guard", judge)
    weights = judge / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "out"
    code = main(["run", str(recipe(tmp_path, toy_fleet)), "--out", str(out),
                 *run_args(toy_fleet, **{"--judge": str(judge)})])
    err = capsys.readouterr().err
    assert_preflight_error(code, out, err, "--judge", "model.safetensors")


def test_weighting_without_expert_domain_names_the_flag_before_the_merge(
        toy_fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["run", str(recipe(tmp_path, toy_fleet)), "--out", str(out), *run_args(toy_fleet),
                 "--weighting", "cocktail", "--safety-prompts", "toy"])
    err = capsys.readouterr().err
    assert_preflight_error(code, out, err, "--expert-prompts", "--expert-prompts toy")
    assert "expert_topics" not in err  # a flag, never a Python argument name


def test_weighting_with_a_missing_safety_prompt_file(toy_fleet: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["run", str(recipe(tmp_path, toy_fleet)), "--out", str(out), *run_args(toy_fleet),
                 "--weighting", "evomm", "--safety-prompts", str(tmp_path / "nope.jsonl"),
                 "--expert-prompts", "toy"])
    assert_preflight_error(code, out, capsys.readouterr().err, "--safety-prompts", "hint:")


def test_expert_prompts_is_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--expert-prompts SRC" in help_text and "'toy'" in help_text and "--dry-run" in help_text


def test_dry_run_checks_and_prints_the_plan_without_writing(toy_fleet: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["run", str(recipe(tmp_path, toy_fleet)), "--out", str(out), "--dry-run",
                 *run_args(toy_fleet, **{"--limit": "1000"}), "--weighting", "cocktail", "--safety-prompts", "toy",
                 "--expert-prompts", "toy"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert not out.exists()  # nothing merged, nothing written
    assert "prompts: " in text and "240 of 240 unsafe prompt(s)" in text
    assert "judge:" in text and "(llama-guard-3)" in text
    assert "weighting: cocktail" in text and "stages:  weighting, merge" in text
    assert "note: --limit 1000 is more than the 240 prompts" in text
    # the same checks: a bad judge is exit 2
    code = main(["run", str(recipe(tmp_path, toy_fleet)), "--out", str(out), "--dry-run",
                 *run_args(toy_fleet, **{"--judge": str(tmp_path / "missing")})])
    assert code == 2 and "option '--judge'" in capsys.readouterr().err
    assert not out.exists()


def test_audit_checks_its_inputs_before_loading_a_model(toy_fleet: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["audit", str(toy_fleet / "base"), *run_args(toy_fleet, **{"--judge": str(tmp_path / "nope")})][:-1])
    err = capsys.readouterr().err
    assert code == 2 and "option '--judge'" in err and "a local Llama Guard directory" in err
    code = main(["audit", str(toy_fleet / "base"),
                 *run_args(toy_fleet, **{"--benign": str(tmp_path / "b.jsonl")})][:-1])
    err = capsys.readouterr().err
    assert code == 2 and "option '--benign'" in err


def test_batch_checks_its_inputs_before_the_first_audit(toy_fleet: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "merges.txt"
    models.write_text("org/some-merge\n")
    out = tmp_path / "scan"
    code = main(["batch", "--models", str(models), "--out", str(out),
                 *run_args(toy_fleet, **{"--prompts": str(tmp_path / "missing.jsonl")})][:-1])
    err = capsys.readouterr().err
    assert code == 2 and "option '--prompts'" in err
    assert not (out / "results.jsonl").exists()  # no merge was pinned, downloaded or audited


def test_audit_says_when_limit_is_larger_than_the_set(toy_fleet: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "three.jsonl"
    prompts.write_text("".join((toy_fleet / "prompts/unsafe.jsonl").read_text().splitlines(keepends=True)[:3]))
    report = tmp_path / "audit.json"
    code = main(["audit", str(toy_fleet / "base"), "--prompts", str(prompts), "--benign", "none",
                 "--judge", "refusal-patterns", "--limit", "5", "--max-new-tokens", "4", "--json", str(report)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "note: --limit 5 is more than the 3 prompts of" in err  # on the console
    data = json.loads(report.read_text())
    assert data["prompts"]["limit"] == 5 and data["prompts"]["n"] == 3  # and in the report
