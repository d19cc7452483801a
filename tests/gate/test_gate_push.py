"""``mergegate push``: upload only a passing output whose files are exactly the audited ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _gate_fakes import fake_audit, fake_merge, write_recipe

from mergegate.cli.main import main
from mergegate.gate.pipeline import run_gate
from mergegate.gate.push import check_pushable, push


class FakeHfApi:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def upload_folder(self, **kwargs: Any) -> Any:
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
    assert call["repo_id"] == "org/merge" and call["folder_path"] == str(out)
    assert call["create_pr"] is True and call["revision"] == "main" and call["repo_type"] == "model"
    assert set(call["allow_patterns"]) == {"README.md", "config.json", "mergegate_alignment.png",
                                           "mergekit_config.yml", "model.safetensors", "report.json"}
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
