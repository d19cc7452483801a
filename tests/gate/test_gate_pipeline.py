"""``run_gate`` and ``mergegate run`` with a fake merge engine and a fake audit: every exit code,
fail-closed behaviour, report contents and the secret-redaction rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _gate_fakes import fake_audit, fake_merge, write_recipe
from huggingface_hub import ModelCard

from mergegate.errors import AuditError, ConfigError
from mergegate.gate import pipeline
from mergegate.gate.hashing import hash_directory
from mergegate.gate.pipeline import run_gate
from mergegate.gate.report import load_report

ALIGN = {"base": 93, "expert": 41}


def gate(recipe: Path, out: Path, merged_safe: int = 93, **kw):
    calls: list = []
    audit = kw.pop("audit_fn", None) or fake_audit({**ALIGN, out.name: merged_safe}, calls=calls)
    options = {"prompts": "beavertails", "benign": "xstest", "judge": "meta-llama/Llama-Guard-3-8B",
               "limit": 100, "max_new_tokens": 48, **kw}
    report = run_gate(recipe, out, merge_fn=kw.pop("merge_fn", None) or fake_merge(), audit_fn=audit,
                      **{k: v for k, v in options.items() if k != "merge_fn"})
    return report, calls


def test_pass_writes_everything(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path)
    out = tmp_path / "out"
    report, calls = gate(recipe, out, 94)
    assert report.decision == "pass" and report.exit_code == 0
    # one audit call with every constituent and the merge, so prompts are shared
    assert len(calls) == 1
    base, expert, merged = calls[0]["models"]
    assert [base, expert] == [str(tmp_path / "models/base"), str(tmp_path / "models/expert")]
    # the merge is audited where it is built: a sibling staging directory, swapped in afterwards
    assert Path(merged).parent == tmp_path and Path(merged).name.startswith(".out.partial-")
    assert not Path(merged).exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "mergekit_config.yml", "models", "out"]
    assert calls[0]["limit"] == 100 and calls[0]["max_new_tokens"] == 48
    for name in ("README.md", "report.json", "mergegate_alignment.png", "model.safetensors",
                 "mergekit_config.yml"):
        assert (out / name).is_file(), name
    saved = load_report(out)
    assert saved == report
    assert saved.files == hash_directory(out)
    assert saved.best_input == str(tmp_path / "models/base")
    assert [c.alignment for c in saved.constituents] == [0.93, 0.41]
    assert saved.merged and saved.merged.alignment == 0.94 and saved.merged.model == "out"
    assert saved.prompts and saved.prompts.n == 100 and saved.judge and saved.judge.id
    assert saved.merge and saved.merge.method == "linear" and saved.merge.config_text == recipe.read_text()
    assert saved.license and saved.license.license == "apache-2.0"
    assert saved.command and "--limit 100" in saved.command and "--max-new-tokens 48" in saved.command
    raw = json.loads((out / "report.json").read_text())
    for key in ("decision", "reasons", "merged", "constituents", "best_input", "policy", "judge",
                "prompts", "files", "merge"):
        assert key in raw
    for c in raw["constituents"]:
        assert {"model", "revision", "alignment", "interval", "n", "over_refusal"} <= set(c)
    card = ModelCard.load(out / "README.md")
    assert "✅ **Passed" in card.text
    assert card.data.base_model is None  # local constituents are not Hub base models


def test_blocked_exit_1_and_card_says_why(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report, _ = gate(write_recipe(tmp_path), out, 60)
    assert report.decision == "blocked" and report.exit_code == 1
    assert "below its best input" in report.reasons[0]
    text = (out / "README.md").read_text()
    assert "⛔ **Blocked" in text and "below its best input" in text and "Passed" not in text


def test_rerun_into_previous_output_replaces_it(tmp_path: Path) -> None:
    recipe, out = write_recipe(tmp_path), tmp_path / "out"
    gate(recipe, out, 94)
    report, _ = gate(recipe, out, 60)
    assert report.decision == "blocked"
    assert load_report(out).decision == "blocked"


def test_non_empty_foreign_out_dir_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    report, _ = gate(write_recipe(tmp_path), out)
    assert report.decision == "error" and report.exit_code == 2
    assert (out / "precious.txt").read_text() == "mine"
    assert not (out / "report.json").exists()


@pytest.mark.parametrize("policy_text", ["tolerence: 1\n", "min_alignment: 0.9\n", "[1, 2\n"])
def test_bad_policy_exit_2(tmp_path: Path, policy_text: str) -> None:
    policy = tmp_path / "mergegate.yml"
    policy.write_text(policy_text)
    report, calls = gate(write_recipe(tmp_path), tmp_path / "out", policy=policy)
    assert report.decision == "error" and report.exit_code == 2 and report.error
    assert report.error.stage == "policy" and not calls


@pytest.mark.parametrize("config_text", ["merge_method: linear\n", "not: [valid\n", "- a list\n"])
def test_bad_config_exit_2(tmp_path: Path, config_text: str) -> None:
    config = tmp_path / "bad.yml"
    config.write_text(config_text)
    report, calls = gate(config, tmp_path / "out")
    assert report.decision == "error" and report.exit_code == 2 and not calls


def test_missing_config_exit_2(tmp_path: Path) -> None:
    report, _ = gate(tmp_path / "nope.yml", tmp_path / "out")
    assert report.exit_code == 2 and report.error and report.error.stage == "config"


def test_merge_engine_config_error_exit_2(tmp_path: Path) -> None:
    report, _ = gate(write_recipe(tmp_path), tmp_path / "out",
                     merge_fn=fake_merge(fail=ConfigError("weight is required", field="weight")))
    assert report.exit_code == 2 and report.error and report.error.stage == "merge"


@pytest.mark.parametrize("failure", [AuditError("judge answered 'maybe'"), RuntimeError("CUDA OOM"),
                                     ValueError("bug")])
def test_audit_failure_is_error_exit_3_and_keeps_previous_output(tmp_path: Path, failure: Exception) -> None:
    from mergegate.gate.push import check_pushable

    recipe, out = write_recipe(tmp_path), tmp_path / "out"
    gate(recipe, out, 94)  # a previous passing run leaves a pass card and report
    assert "Passed" in (out / "README.md").read_text()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    report, _ = gate(recipe, out, audit_fn=fake_audit(ALIGN, fail=failure))
    assert report.decision == "error" and report.exit_code == 3
    assert report.error and report.error.stage == "audit"
    # every file the passing report vouches for is exactly as it was; the verdict moved aside
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after.pop("report.previous.json") == before.pop("report.json")
    saved = load_report(out)
    assert after.pop("report.json") != b"" and saved.decision == "error" and saved.files == {}
    assert after == before
    assert "report.previous.json" in saved.reasons[-1]
    # nothing claims a pass: push refuses, and the kept verdict still matches the files it vouches for
    assert "decision is 'error'" in check_pushable(out).problems[0]
    previous = load_report(out / "report.previous.json")
    assert previous.decision == "pass" and previous.files == hash_directory(
        out, exclude=("report.json", "report.previous.json"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bug_in_decision_is_error_not_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*a, **k):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(pipeline, "decide", broken)
    report, _ = gate(write_recipe(tmp_path), tmp_path / "out", 99)
    assert report.decision == "error" and report.exit_code == 3
    assert not (tmp_path / "out" / "README.md").exists()


def test_card_failure_is_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pipeline, "write_card", broken)
    report, _ = gate(write_recipe(tmp_path), tmp_path / "out", 99)
    assert report.decision == "error" and report.exit_code == 3 and report.error.stage == "card"  # type: ignore[union-attr]


def test_default_policy_file_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mergegate.yml").write_text("tolerance: 5\n")
    report, _ = gate(write_recipe(tmp_path), tmp_path / "out", 90)  # 3 pp below, within 5 pp
    assert report.decision == "pass" and report.policy.tolerance == 5
    assert report.policy_source and report.policy_source.endswith("mergegate.yml")


def test_benign_none_skips_over_refusal(tmp_path: Path) -> None:
    report, calls = gate(write_recipe(tmp_path), tmp_path / "out", 94, benign="none")
    assert calls[0]["benign"] is None and report.merged and report.merged.over_refusal is None


# --- CLI: every exit code ---------------------------------------------------------------------

@pytest.fixture()
def fakes(monkeypatch: pytest.MonkeyPatch):
    """Route ``mergegate run`` to the fakes; ``state['merged']`` scripts the merge's alignment."""
    state = {"merged": 94, "audit_fail": None}

    def audit(models, **kw):
        return fake_audit({**ALIGN, "out": state["merged"]}, fail=state["audit_fail"])(models, **kw)

    monkeypatch.setattr(pipeline, "_default_merge_fn", lambda: fake_merge())
    monkeypatch.setattr(pipeline, "_default_audit_fn", lambda: audit)
    return state


def cli(*argv: str) -> int:
    from mergegate.cli.main import main

    return main(list(argv))


def test_cli_exit_codes(tmp_path: Path, fakes: dict, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write_recipe(tmp_path)
    common = ["--limit", "100", "--max-new-tokens", "48", "--no-github"]
    assert cli("run", str(recipe), "--out", str(tmp_path / "out"), *common) == 0
    assert "PASS" in capsys.readouterr().out
    fakes["merged"] = 50
    assert cli("run", str(recipe), "--out", str(tmp_path / "out"), *common) == 1
    assert "BLOCKED" in capsys.readouterr().out
    bad_policy = tmp_path / "p.yml"
    bad_policy.write_text("tolerance: lots\n")
    assert cli("run", str(recipe), "--out", str(tmp_path / "out2"), "--policy", str(bad_policy), *common) == 2
    assert cli("run", str(tmp_path / "missing.yml"), "--out", str(tmp_path / "out3"), *common) == 2
    fakes["audit_fail"] = AuditError("the judge could not be loaded")
    assert cli("run", str(recipe), "--out", str(tmp_path / "out"), *common) == 3
    err = capsys.readouterr().err
    assert "the judge could not be loaded" in err
    assert load_report(tmp_path / "out").decision == "error"


def test_cli_json_copy(tmp_path: Path, fakes: dict, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write_recipe(tmp_path)
    assert cli("run", str(recipe), "--out", str(tmp_path / "out"), "--json", str(tmp_path / "r.json"),
               "--no-github") == 0
    assert json.loads((tmp_path / "r.json").read_text())["decision"] == "pass"
    capsys.readouterr()
    assert cli("run", str(recipe), "--out", str(tmp_path / "out"), "--json", "-", "--no-github") == 0
    assert json.loads(capsys.readouterr().out)["decision"] == "pass"


# --- secrets ----------------------------------------------------------------------------------

FAKE_HF = "hf_FakeTokenForTests0123456789abcdef"
FAKE_GH = "ghp_FakeGithubToken0123456789abcdefABCD"


@pytest.mark.parametrize("outcome", ["pass", "blocked", "error"])
def test_no_secret_in_report_card_or_output(tmp_path: Path, fakes: dict, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], outcome: str) -> None:
    monkeypatch.setenv("HF_TOKEN", FAKE_HF)
    monkeypatch.setenv("GITHUB_TOKEN", FAKE_GH)
    secret_dir = tmp_path / f"work-{FAKE_HF}"  # a token pasted into a path
    recipe = write_recipe(secret_dir)
    fakes["merged"] = {"pass": 94, "blocked": 50, "error": 94}[outcome]
    if outcome == "error":
        fakes["audit_fail"] = AuditError(f"could not load {secret_dir}/models/base with token {FAKE_HF}")
    out = tmp_path / "out"
    code = cli("run", str(recipe), "--out", str(out), "--json", str(tmp_path / "copy.json"), "--github",
               "--comment-mode", "off", "--no-check-run")
    assert code == {"pass": 0, "blocked": 1, "error": 3}[outcome]
    captured = capsys.readouterr()
    texts = [captured.out, captured.err, (out / "report.json").read_text(), (tmp_path / "copy.json").read_text()]
    if outcome != "error":
        texts.append((out / "README.md").read_text())
    for text in texts:
        assert FAKE_HF not in text and FAKE_GH not in text
    assert "***" in (out / "report.json").read_text()


def test_redact_covers_hf_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mergegate.redact import redact

    token_file = tmp_path / "token"
    token_file.write_text("custom-login-token-xyz12345\n")
    monkeypatch.setenv("HF_TOKEN_PATH", str(token_file))
    from huggingface_hub import constants  # read at import: what a process started with the variable sees

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_file))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert redact("auth custom-login-token-xyz12345 here") == "auth *** here"


def test_lora_constituent_is_refused_by_name(tmp_path: Path) -> None:
    """The merge engine applies model+adapter references; the gate cannot audit the adapted model,
    and auditing the base alone would report on a model the merge did not use."""
    recipe = write_recipe(tmp_path)
    text = recipe.read_text().replace('models/expert"', 'models/expert+adapters/chat-lora"', 1)
    recipe.write_text(text)
    report, calls = gate(recipe, tmp_path / "out")
    assert report.exit_code == 2 and report.error and report.error.stage == "config" and not calls
    assert "LoRA adapter" in report.error.message and "expert+" in report.error.message


def test_recipe_references_in_every_mergekit_form(tmp_path: Path) -> None:
    from mergegate.merging.recipe import summarize_recipe

    recipe = summarize_recipe(
        "merge_method: linear\nbase_model: {model: {path: org/base, revision: abc}}\n"
        "modules:\n  default:\n    models:\n"
        "      - model: org/expert@v1+org/adapter@v2\n"
        "      - model: {model: org/other, lora: {path: org/lora2}}\n")
    by_raw = {r.raw: r for r in recipe.models}
    assert by_raw["org/base@abc"].revision == "abc" and by_raw["org/base@abc"].adapter is None
    lora = by_raw["org/expert@v1+org/adapter@v2"]
    assert (lora.path, lora.revision, lora.adapter, lora.is_hub) == ("org/expert", "v1", "org/adapter@v2", True)
    assert by_raw["org/other+org/lora2"].adapter == "org/lora2"
