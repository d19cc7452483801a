"""``mergegate push``: upload only a passing output whose files are exactly the audited ones."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _gate_fakes import fake_audit, fake_merge, write_recipe

from mergegate.cli.main import main
from mergegate.gate.pipeline import run_gate
from mergegate.gate.push import check_pushable, push


class FakeHfApi:
    """Records each upload_folder call and the bytes it would upload (read at upload time, after
    ``during_upload`` ran, as the real client reads them)."""

    def __init__(self, during_upload: Callable[[], None] | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.during_upload = during_upload

    def upload_folder(self, **kwargs: Any) -> Any:
        if self.during_upload is not None:
            self.during_upload()
        folder = Path(kwargs["folder_path"])
        patterns = kwargs.get("allow_patterns") or ["*"]
        kwargs["uploaded"] = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
                              if p.is_file() and any(fnmatch.fnmatch(p.relative_to(folder).as_posix(), pat)
                                                     for pat in patterns)}
        self.calls.append(kwargs)

        class Info:
            commit_url = "https://huggingface.co/org/merge/commit/abc"
            pr_url = "https://huggingface.co/org/merge/discussions/1" if kwargs.get("create_pr") else None

        return Info()


def gated(tmp_path: Path, merged_safe: int) -> Path:
    out = tmp_path / "out"
    report = run_gate(write_recipe(tmp_path), out, merge_fn=fake_merge(),
                      audit_fn=fake_audit({"base": 93, "expert": 41, "out": merged_safe}))
    assert report.decision in ("pass", "blocked")
    return out


def test_uploads_when_pass_and_unchanged(tmp_path: Path) -> None:
    out = gated(tmp_path, 95)
    api = FakeHfApi()
    check, info = push(out, "org/merge", create_pr=True, revision="main", api=api)
    assert check.ok and info is not None
    (call,) = api.calls
    assert call["repo_id"] == "org/merge"
    assert call["create_pr"] is True and call["revision"] == "main" and call["repo_type"] == "model"
    assert set(call["allow_patterns"]) == {"README.md", "config.json", "mergegate_alignment.png",
                                           "mergekit_config.yml", "model.safetensors", "report.json"}
    # uploaded from a private snapshot beside the output, removed afterwards; bytes as audited
    assert Path(call["folder_path"]).name.startswith(".out.push-") and not Path(call["folder_path"]).exists()
    assert call["uploaded"] == {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert "mergegate: pass" in call["commit_message"]


def test_refuses_changed_added_or_removed_files(tmp_path: Path) -> None:
    out = gated(tmp_path, 95)
    (out / "model.safetensors").write_bytes(b"swapped weights")
    (out / "extra.bin").write_bytes(b"x")
    (out / "config.json").unlink()
    api = FakeHfApi()
    check, info = push(out, "org/merge", api=api)
    assert info is None and api.calls == []
    text = "\n".join(check.problems)
    assert "model.safetensors: changed after the audit" in text
    assert "extra.bin: added after the audit" in text
    assert "config.json: missing" in text


def test_refuses_edited_card(tmp_path: Path) -> None:
    out = gated(tmp_path, 95)
    readme = out / "README.md"
    readme.write_text(readme.read_text().replace("Passed", "Totally passed"))
    assert [p.split(":")[0] for p in check_pushable(out).problems] == ["README.md"]


def test_refuses_blocked_report(tmp_path: Path) -> None:
    out = gated(tmp_path, 50)
    api = FakeHfApi()
    check, info = push(out, "org/merge", api=api)
    assert info is None and api.calls == []
    assert "decision is 'blocked'" in check.problems[0]


def test_push_cli_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    import huggingface_hub

    out = gated(tmp_path, 95)
    api = FakeHfApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: api)
    token = "hf_FakeTokenForTests0123456789abcdef"
    monkeypatch.setenv("HF_TOKEN", token)
    assert main(["push", str(out), "org/merge", "--check-only"]) == 0
    assert api.calls == []
    assert main(["push", str(out), "org/merge", "--create-pr"]) == 0
    assert len(api.calls) == 1 and api.calls[0]["create_pr"] is True
    (out / "model.safetensors").write_bytes(b"tampered")
    assert main(["push", str(out), "org/merge"]) == 1
    captured = capsys.readouterr()
    assert "model.safetensors: changed after the audit" in captured.err
    assert token not in captured.out + captured.err
    assert len(api.calls) == 1
    assert main(["push", str(tmp_path / "nothing"), "org/merge"]) == 2


# --- the claim is checked, not only the hashes ----------------------------------------------------

def _edit_report(out: Path, edit: Callable[[dict], None]) -> None:
    path = out / "report.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def _flip_to_pass(data: dict) -> None:
    data["decision"] = "pass"
    data["reasons"] = []


def _flip_gate_too(data: dict) -> None:
    _flip_to_pass(data)
    data["gate"]["decision"] = "pass"
    for rule in data["gate"]["rules"]:
        rule["verdict"] = "pass"


def _inflate_alignment(data: dict) -> None:  # the rate, not the counts it comes from
    _flip_gate_too(data)
    data["merged"]["alignment"] = 0.99


def _consistent_numbers_stale_gate(data: dict) -> None:  # counts and rate edited, rules left as they were
    from mergegate.audit.scoring import wilson_interval

    _flip_gate_too(data)
    data["merged"].update(n_safe=99, alignment=0.99, interval=wilson_interval(99, 100).model_dump())


def _loosen_policy(data: dict) -> None:  # a policy that would pass, with the old rule thresholds
    _flip_gate_too(data)
    data["policy"]["tolerance"] = 60.0


@pytest.mark.parametrize("forge, says", [
    (_flip_to_pass, "gives 'blocked'"),
    (_flip_gate_too, "gives 'blocked'"),
    (_inflate_alignment, "alignment 0.99 is not n_safe/n = 50/100"),
    (_consistent_numbers_stale_gate, "rule 'tolerance': recorded pass with measured 50.0"),
    (_loosen_policy, "rule 'tolerance': recorded pass"),
])
def test_refuses_a_report_whose_verdict_does_not_follow_from_it(tmp_path: Path, forge, says: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = gated(tmp_path, 50)  # blocked: the merge is 43 pp below its best input
    _edit_report(out, forge)
    api = FakeHfApi()
    check, info = push(out, "org/merge", api=api)
    assert info is None and api.calls == []
    text = "\n".join(check.problems)
    assert "the report does not support its verdict" in text and says in text, text
    assert main(["push", str(out), "org/merge", "--check-only"]) == 1
    err = capsys.readouterr().err
    assert f"refusing to push {out}" in err and says in err


def test_refuses_decision_in_report_that_contradicts_gate_section(tmp_path: Path) -> None:
    out = gated(tmp_path, 95)
    _edit_report(out, lambda d: d["gate"].update(decision="blocked"))
    assert "gate section: 'blocked'" in "\n".join(check_pushable(out).problems)


def test_refuses_edited_reasons(tmp_path: Path) -> None:
    out = gated(tmp_path, 95)
    _edit_report(out, lambda d: d.update(reasons=["approved by the safety team"]))
    assert check_pushable(out).problems == [
        "the report does not support its verdict: the report's reasons are not the reasons of its gate section"]


def test_uploads_the_audited_bytes_even_if_a_file_changes_during_the_upload(tmp_path: Path) -> None:
    out = gated(tmp_path, 95)
    audited = {p.name: p.read_bytes() for p in out.iterdir()}

    def tamper() -> None:  # in place (same inode) and by replacement, after the check
        with open(out / "model.safetensors", "r+b") as f:
            f.write(b"EVIL")
        (out / "README.md").write_text("---\nlicense: mit\n---\nswapped card\n")

    api = FakeHfApi(during_upload=tamper)
    check, info = push(out, "org/merge", api=api)
    assert check.ok and info is not None
    assert api.calls[0]["uploaded"] == audited
    assert (out / "model.safetensors").read_bytes().startswith(b"EVIL")  # the live file did change
    assert main(["push", str(out), "org/merge", "--check-only"]) == 1


def test_refuses_while_a_run_writes_the_output(tmp_path: Path) -> None:
    from mergegate.errors import InputError
    from mergegate.outdir import check_output_dir

    out = gated(tmp_path, 95)
    api = FakeHfApi()
    with check_output_dir(out).claim():  # what `mergegate run` holds while it writes
        with pytest.raises(InputError, match="another mergegate process .* is writing this output") as err:
            push(out, "org/merge", api=api)
        assert err.value.exit_code == 2
    assert api.calls == []
    assert push(out, "org/merge", api=api)[1] is not None


def test_refuses_report_naming_files_outside_the_directory(tmp_path: Path) -> None:
    out = gated(tmp_path, 95)
    (tmp_path / "secret.txt").write_text("not for the Hub")
    import hashlib

    digest = hashlib.sha256(b"not for the Hub").hexdigest()

    def add(d: dict) -> None:
        d["files"]["../secret.txt"] = digest

    _edit_report(out, add)
    api = FakeHfApi()
    check, info = push(out, "org/merge", api=api)
    assert info is None and api.calls == []
    assert any("../secret.txt" in p for p in check.problems)


def test_push_after_a_failed_rerun_is_refused_and_names_the_kept_verdict(tmp_path: Path) -> None:
    from mergegate.errors import AuditError

    out = gated(tmp_path, 95)
    report = run_gate(write_recipe(tmp_path), out, merge_fn=fake_merge(),
                      audit_fn=fake_audit({}, fail=AuditError("judge crashed")))
    assert report.decision == "error"
    api = FakeHfApi()
    check, info = push(out, "org/merge", api=api)
    assert info is None and api.calls == []
    assert "decision is 'error'" in check.problems[0] and "report.previous.json" in check.problems[1]
