"""The GitHub Action side against a local fake of the REST API (stdlib http.server in a thread):
check run, sticky PR comment (created once, then edited in place), job summary and outputs."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _gate_fakes import synthetic_run_report

from mergegate.gate import github as gh
from mergegate.gate.report import ErrorInfo, RunReport

TOKEN = "ghs_FakeInstallationToken0123456789abcd"
REPO = "octo/merges"
HEAD_SHA = "f" * 40


class FakeGitHub:
    """Just enough of api.github.com for check runs and issue comments."""

    def __init__(self) -> None:
        self.check_runs: list[dict[str, Any]] = []
        self.comments: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.auth_headers: set[str] = set()
        self.fail_checks = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def _handle(self, method: str) -> None:
                fake.requests.append((method, self.path))
                fake.auth_headers.add(self.headers.get("Authorization", ""))
                path = self.path.split("?", 1)[0]
                base = fake.url
                parts = path.strip("/").split("/")
                if parts[:3] != ["repos", *REPO.split("/")]:
                    return self._send(404, {"message": "Not Found"})
                rest = parts[3:]
                repo_url = f"{base}/repos/{REPO}"
                if method == "GET" and not rest:
                    return self._send(200, {"id": 1, "name": "merges", "full_name": REPO, "url": repo_url})
                if method == "POST" and rest == ["check-runs"]:
                    if fake.fail_checks:
                        return self._send(403, {"message": "Resource not accessible by integration"})
                    run = {**self._body(), "id": len(fake.check_runs) + 1}
                    run["url"] = f"{repo_url}/check-runs/{run['id']}"
                    fake.check_runs.append(run)
                    return self._send(201, run)
                if method == "GET" and len(rest) == 2 and rest[0] == "issues":
                    number = int(rest[1])
                    return self._send(200, {"id": 100 + number, "number": number, "url": f"{repo_url}/issues/{number}",
                                            "pull_request": {"url": f"{repo_url}/pulls/{number}"}})
                if len(rest) == 3 and rest[0] == "issues" and rest[2] == "comments":
                    if method == "GET":
                        return self._send(200, [c for c in fake.comments if c["issue"] == int(rest[1])])
                    if method == "POST":
                        cid = 1000 + len(fake.comments)
                        comment = {"id": cid, "issue": int(rest[1]), "body": self._body()["body"],
                                   "url": f"{repo_url}/issues/comments/{cid}",
                                   "user": {"login": "github-actions[bot]"}}
                        fake.comments.append(comment)
                        return self._send(201, comment)
                if method == "PATCH" and len(rest) == 3 and rest[:2] == ["issues", "comments"]:
                    for comment in fake.comments:
                        if comment["id"] == int(rest[2]):
                            comment["body"] = self._body()["body"]
                            return self._send(200, comment)
                return self._send(404, {"message": "Not Found"})

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self) -> FakeGitHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def server(monkeypatch: pytest.MonkeyPatch):
    # PyGithub waits 0.25 s between requests and 1 s between writes (GitHub's secondary rate
    # limits); the fake server has none.
    monkeypatch.setattr(gh, "CLIENT_OPTIONS", {"seconds_between_requests": None, "seconds_between_writes": None})
    with FakeGitHub() as fake:
        yield fake


def actions_env(tmp_path: Path, api_url: str, *, pr: int | None = 7) -> dict[str, str]:
    event = tmp_path / "event.json"
    payload: dict[str, Any] = {"pull_request": {"number": pr, "head": {"sha": HEAD_SHA}}} if pr else {}
    event.write_text(json.dumps(payload))
    return {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": REPO, "GITHUB_SHA": "0" * 40,
            "GITHUB_EVENT_PATH": str(event), "GITHUB_API_URL": api_url, "GITHUB_RUN_ID": "42",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"), "GITHUB_OUTPUT": str(tmp_path / "output.txt")}


def read_outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def error_report() -> RunReport:
    return RunReport(name="my-merge", decision="error", reasons=["audit failed: judge missing"],
                     error=ErrorInfo(type="AuditError", message="judge missing", stage="audit"))


def test_context_from_pull_request_event(tmp_path: Path) -> None:
    ctx = gh.GitHubContext.from_env(actions_env(tmp_path, "http://x/api/v3/"))
    assert (ctx.repository, ctx.sha, ctx.pr_number, ctx.api_url) == (REPO, HEAD_SHA, 7, "http://x/api/v3")
    assert ctx.run_url == f"https://github.com/{REPO}/actions/runs/42"
    push = gh.GitHubContext.from_env(actions_env(tmp_path, "http://x", pr=None))
    assert push.pr_number is None and push.sha == "0" * 40


@pytest.mark.parametrize("merged_safe, decision, conclusion", [(95, "pass", "success"), (62, "blocked", "failure")])
def test_check_run_conclusion_follows_decision(tmp_path: Path, server: FakeGitHub, merged_safe: int,
                                               decision: str, conclusion: str) -> None:
    report = synthetic_run_report(merged_safe)
    assert report.decision == decision
    warnings = gh.publish(report, report_path="out/report.json", env=actions_env(tmp_path, server.url),
                          token=TOKEN, comment_mode="off")
    assert warnings == []
    (run,) = server.check_runs
    assert run["name"] == "mergegate" and run["head_sha"] == HEAD_SHA
    assert run["status"] == "completed" and run["conclusion"] == conclusion
    assert "| Model | Role | Alignment |" in run["output"]["summary"]
    assert "my-merge" in run["output"]["title"]
    assert run["details_url"] == f"https://github.com/{REPO}/actions/runs/42"
    assert server.auth_headers == {f"token {TOKEN}"} or server.auth_headers == {f"Bearer {TOKEN}"}


def test_error_is_a_failed_check(tmp_path: Path, server: FakeGitHub) -> None:
    gh.publish(error_report(), env=actions_env(tmp_path, server.url), token=TOKEN, comment_mode="off")
    assert server.check_runs[0]["conclusion"] == "failure"
    assert "judge missing" in server.check_runs[0]["output"]["text"]


def test_sticky_comment_is_created_once_then_edited(tmp_path: Path, server: FakeGitHub) -> None:
    env = actions_env(tmp_path, server.url)
    gh.publish(synthetic_run_report(62), env=env, token=TOKEN, check_run=False)
    assert len(server.comments) == 1
    first = server.comments[0]
    assert first["body"].startswith(gh.MARKER) and "is blocked" in first["body"]
    gh.publish(synthetic_run_report(95), env=env, token=TOKEN, check_run=False)
    assert len(server.comments) == 1, "the second run must edit the sticky comment, not add one"
    assert server.comments[0]["id"] == first["id"]
    assert "passed" in server.comments[0]["body"] and "is blocked" not in server.comments[0]["body"]
    assert ("PATCH", f"/repos/{REPO}/issues/comments/{first['id']}") in server.requests


def test_sticky_comment_ignores_other_comments_and_new_mode_adds(tmp_path: Path, server: FakeGitHub) -> None:
    env = actions_env(tmp_path, server.url)
    server.comments.append({"id": 1, "issue": 7, "body": "LGTM", "url": f"{server.url}/repos/{REPO}/issues/comments/1",
                            "user": {"login": "human"}})
    gh.publish(synthetic_run_report(95), env=env, token=TOKEN, check_run=False)
    assert [c["body"] for c in server.comments][0] == "LGTM" and len(server.comments) == 2
    gh.publish(synthetic_run_report(95), env=env, token=TOKEN, check_run=False, comment_mode="new")
    assert len(server.comments) == 3
    gh.publish(synthetic_run_report(95), env=env, token=TOKEN, check_run=False, comment_mode="off")
    assert len(server.comments) == 3


def test_no_comment_outside_pull_requests(tmp_path: Path, server: FakeGitHub) -> None:
    gh.publish(synthetic_run_report(95), env=actions_env(tmp_path, server.url, pr=None), token=TOKEN)
    assert server.comments == [] and len(server.check_runs) == 1


def test_summary_and_outputs(tmp_path: Path) -> None:
    env = actions_env(tmp_path, "http://127.0.0.1:9")
    warnings = gh.publish(synthetic_run_report(62), report_path="out/report.json", env=env, token=None)
    assert warnings == ["no GitHub token: skipped the check run and the PR comment"]
    summary = (tmp_path / "summary.md").read_text()
    assert "## ⛔ mergegate: `my-merge` is blocked" in summary
    assert "| **my-merge** | **merge** | 62.0 % |" in summary
    assert "★ best input" in summary and "```yaml" in summary
    outputs = read_outputs(tmp_path / "output.txt")
    assert outputs == {"decision": "blocked", "alignment": "0.6200", "best-input-alignment": "0.9300",
                       "best-input": "mistralai/Mistral-7B-Instruct-v0.2@3ad372fc79158a2148299e3318516c786aeded6c",
                       "exit-code": "1", "report": "out/report.json"}


def test_github_failures_are_warnings_without_token_leak(tmp_path: Path, server: FakeGitHub) -> None:
    server.fail_checks = True
    env = actions_env(tmp_path, server.url)
    warnings = gh.publish(synthetic_run_report(95), env=env, token=TOKEN, comment_mode="update")
    assert len(warnings) == 1 and "HTTP 403" in warnings[0] and "checks: write" in warnings[0]
    assert TOKEN not in " ".join(warnings)
    assert len(server.comments) == 1  # the comment still went out


def test_run_cli_in_actions(tmp_path: Path, server: FakeGitHub, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    from _gate_fakes import fake_audit, fake_merge, write_recipe

    from mergegate.cli.main import main
    from mergegate.gate import pipeline

    monkeypatch.setattr(pipeline, "_default_merge_fn", lambda: fake_merge())
    monkeypatch.setattr(pipeline, "_default_audit_fn", lambda: fake_audit({"base": 93, "expert": 41, "out": 50}))
    # the fake audit takes no prompt set or judge: nothing for the preflight to check
    monkeypatch.setattr(pipeline, "check_run_inputs", lambda *a, **k: SimpleNamespace(notes=[]))
    for key, value in actions_env(tmp_path, server.url).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    code = main(["run", str(write_recipe(tmp_path)), "--out", str(tmp_path / "out")])
    assert code == 1
    out = capsys.readouterr().out
    assert "::error title=mergegate blocked::" in out and TOKEN not in out
    assert server.check_runs[0]["conclusion"] == "failure" and len(server.comments) == 1
    assert read_outputs(tmp_path / "output.txt")["decision"] == "blocked"
    assert TOKEN not in (tmp_path / "summary.md").read_text()
