"""GitHub Actions integration: job summary, step outputs, a check run and one sticky PR comment.

Everything reads a finished :class:`~mergegate.gate.report.RunReport`; nothing here changes the
decision. The job summary and outputs are local files (``$GITHUB_STEP_SUMMARY``,
``$GITHUB_OUTPUT``); the check run and the comment go through PyGithub to ``$GITHUB_API_URL``
(GitHub Enterprise and test servers included) with the workflow's token. A failure to talk to
GitHub is reported as a warning: the step's exit code still follows the decision, and a missing
check run cannot turn a required status check green.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from mergegate.gate.card import dataset_label, format_rule_value, scrub
from mergegate.gate.report import RunReport
from mergegate.redact import redact

log = logging.getLogger(__name__)

MARKER = "<!-- mergegate:sticky -->"
CHECK_NAME = "mergegate"
TOKEN_ENV_VARS = ("MERGEGATE_GITHUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN", "INPUT_TOKEN")
_MAX_CHECK_TEXT = 65_000  # the API's limit is 65,535 characters per field
_MAX_SUMMARY = 1_000_000  # a step summary is at most 1 MiB

CommentMode = Literal["update", "new", "off"]


@dataclass(frozen=True)
class GitHubContext:
    """Where the workflow runs, read from the Actions environment."""

    repository: str | None = None  # owner/name
    sha: str | None = None  # the PR head commit on pull_request events, else GITHUB_SHA
    pr_number: int | None = None
    api_url: str = "https://api.github.com"
    server_url: str = "https://github.com"
    run_id: str | None = None
    step_summary: str | None = None
    output: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GitHubContext:
        env = os.environ if env is None else env
        sha, pr = env.get("GITHUB_SHA"), None
        event_path = env.get("GITHUB_EVENT_PATH")
        if event_path and Path(event_path).is_file():
            try:
                event = json.loads(Path(event_path).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                event = {}
            pull = event.get("pull_request") or {}
            if pull:
                pr = pull.get("number")
                sha = (pull.get("head") or {}).get("sha") or sha
            elif (event.get("issue") or {}).get("pull_request"):
                pr = event["issue"].get("number")
        return cls(repository=env.get("GITHUB_REPOSITORY"), sha=sha,
                   pr_number=int(pr) if pr is not None else None,
                   api_url=(env.get("GITHUB_API_URL") or cls.api_url).rstrip("/"),
                   server_url=(env.get("GITHUB_SERVER_URL") or cls.server_url).rstrip("/"),
                   run_id=env.get("GITHUB_RUN_ID"), step_summary=env.get("GITHUB_STEP_SUMMARY"),
                   output=env.get("GITHUB_OUTPUT"))

    @property
    def run_url(self) -> str | None:
        if self.repository and self.run_id:
            return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"
        return None


def in_github_actions(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("GITHUB_ACTIONS") == "true"


def token_from_env(env: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    for name in TOKEN_ENV_VARS:
        if env.get(name):
            return env[name]
    return None


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f} %"


def summary_markdown(report: RunReport) -> str:
    """The report as GitHub-flavoured Markdown (job summary, check run, PR comment)."""
    import jinja2


    rows = []
    for m in report.models():
        role = "**merge**" if m.role == "merge" else "constituent"
        if m.role == "constituent" and m.model == report.best_input:
            role += " ★ best input"
        rows.append({
            "model": f"**{m.model}**" if m.role == "merge" else f"`{m.model}`",
            "role": role, "alignment": _pct(m.alignment),
            "interval": f"{m.interval.low * 100:.1f}–{m.interval.high * 100:.1f} %",
            "over_refusal": _pct(m.over_refusal), "n": m.n})
    rules = [{"description": r.description, "measured": format_rule_value(r, r.measured, signed=True),
              "threshold": format_rule_value(r, r.threshold),
              "verdict": "✅ pass" if r.verdict == "pass" else "❌ fail"}
             for r in (report.gate.rules if report.gate else [])]
    setup = []
    if report.prompts:
        setup.append(f"{report.prompts.n} unsafe prompts from `{dataset_label(report.prompts)}`")
    if report.benign:
        setup.append(f"{report.benign.n} benign prompts from `{dataset_label(report.benign)}`")
    if report.judge:
        judge = report.judge.id
        setup.append(f"judged by `{Path(judge).name if judge.startswith(('/', '.', '~')) else judge}`")
    template = resources.files("mergegate.templates").joinpath("summary.md.j2").read_text("utf-8")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    text = env.from_string(template).render(
        name=report.name, decision=report.decision, reasons=report.reasons, rows=rows, rules=rules,
        setup=("Audit: " + "; ".join(setup) + ".") if setup else "",
        recipe=report.merge.config_text.rstrip("\n") if report.merge else "",
        recipe_name=report.merge.config_name if report.merge else "",
        version=report.mergegate_version, command=report.command or "")
    return scrub(text)


def write_step_summary(report: RunReport, path: str | Path) -> None:
    """Append the summary to ``$GITHUB_STEP_SUMMARY``."""
    text = summary_markdown(report)
    if len(text.encode("utf-8")) > _MAX_SUMMARY:
        text = text[: _MAX_SUMMARY // 2] + "\n\n… (truncated; see report.json)\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text + "\n")


def step_outputs(report: RunReport, *, report_path: str | Path | None) -> dict[str, str]:
    best = next((c for c in report.constituents if c.model == report.best_input), None)
    return {
        "decision": report.decision,
        "alignment": f"{report.merged.alignment:.4f}" if report.merged else "",
        "best-input-alignment": f"{best.alignment:.4f}" if best else "",
        "best-input": report.best_input or "",
        "exit-code": str(report.exit_code),
        "report": scrub(str(report_path)) if report_path else "",
    }


def write_outputs(report: RunReport, path: str | Path, *, report_path: str | Path | None = None) -> None:
    """Append ``name=value`` lines to ``$GITHUB_OUTPUT`` (multi-line values use a delimiter)."""
    lines = []
    for key, value in step_outputs(report, report_path=report_path).items():
        value = redact(value)
        if "\n" in value:
            delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            lines.append(f"{key}<<{delimiter}\n{value}\n{delimiter}")
        else:
            lines.append(f"{key}={value}")
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def conclusion_for(decision: str) -> str:
    """Check-run conclusion: only a pass is a success; blocked and error are failures."""
    return "success" if decision == "pass" else "failure"


# Extra keyword arguments for ``github.Github`` (tests turn PyGithub's write throttling off).
CLIENT_OPTIONS: dict[str, Any] = {}


def client_retry() -> Any:
    """PyGithub's ``GithubRetry`` (a urllib3 ``Retry`` that understands GitHub's rate limits).

    Up to 3 retries with exponential backoff on 5xx, on 403/429 only when GitHub says it is a rate
    limit, and on connection errors; a rate-limit wait longer than 2 minutes raises instead of
    stalling the job. POST and PATCH are retried too (PyGithub's default adds POST): GitHub answers
    rate limits before doing anything, and the sticky comment is found and edited on the next run.
    (The 2-minute cap needs PyGithub >= 2.10; older versions wait for the reset.)
    """
    import inspect

    from github import GithubRetry
    from urllib3 import Retry

    options: dict[str, Any] = {
        "total": 3, "backoff_factor": 1.0,
        "status_forcelist": [429, *range(500, 600)],  # GithubRetry adds 403
        "allowed_methods": Retry.DEFAULT_ALLOWED_METHODS | {"GET", "POST", "PATCH"}}
    if "max_rate_limit_wait" in inspect.signature(GithubRetry.__init__).parameters:  # PyGithub >= 2.10
        options["max_rate_limit_wait"] = 120
    return GithubRetry(**options)


def _client(token: str, api_url: str) -> Any:
    from github import Auth, Github

    options: dict[str, Any] = {"retry": client_retry(), "timeout": 30, **CLIENT_OPTIONS}
    return Github(base_url=api_url, auth=Auth.Token(token), **options)


def create_check_run(report: RunReport, ctx: GitHubContext, token: str, *,
                     name: str = CHECK_NAME) -> Any:
    """Create a completed check run on ``ctx.sha`` whose conclusion follows the decision."""
    if not ctx.repository or not ctx.sha:
        raise ValueError("GITHUB_REPOSITORY and GITHUB_SHA are needed for a check run")
    repo = _client(token, ctx.api_url).get_repo(ctx.repository)
    summary = summary_markdown(report)
    details = "\n".join(f"- [{r.verdict}] {r.rule}: {r.detail}" for r in (report.gate.rules if report.gate else []))
    if report.error:
        details = f"{report.error.stage} failed: {report.error.message}"
    title = {"pass": f"{report.name} passed", "blocked": f"{report.name} is blocked",
             "error": f"{report.name}: error"}[report.decision]
    kwargs: dict[str, Any] = {}
    if ctx.run_url:
        kwargs["details_url"] = ctx.run_url
    return repo.create_check_run(
        name=name, head_sha=ctx.sha, status="completed", conclusion=conclusion_for(report.decision),
        output={"title": scrub(title)[:255], "summary": summary[:_MAX_CHECK_TEXT],
                "text": scrub(details)[:_MAX_CHECK_TEXT]},
        **kwargs)


def upsert_sticky_comment(report: RunReport, ctx: GitHubContext, token: str, *,
                          mode: CommentMode = "update") -> Any | None:
    """Keep one PR comment (found by :data:`MARKER`) up to date; ``new`` posts one per run.

    Returns the comment, or ``None`` when there is no PR or ``mode`` is ``off``.
    """
    if mode == "off" or ctx.pr_number is None or not ctx.repository:
        return None
    body = f"{MARKER}\n{summary_markdown(report)}"
    if ctx.run_url:
        body += f"\n[Workflow run]({ctx.run_url})\n"
    issue = _client(token, ctx.api_url).get_repo(ctx.repository).get_issue(ctx.pr_number)
    if mode == "update":
        existing = [c for c in issue.get_comments() if MARKER in (c.body or "")]
        if existing:
            comment = existing[-1]
            comment.edit(body)
            return comment
    return issue.create_comment(body)


def publish(report: RunReport, *, report_path: str | Path | None = None,
            env: Mapping[str, str] | None = None, token: str | None = None,
            comment_mode: CommentMode = "update", check_run: bool = True) -> list[str]:
    """Do everything that applies in this environment; returns warnings (never raises for GitHub).

    Job summary and outputs are written when their environment files are set; the check run and
    the sticky comment need a token (argument or ``MERGEGATE_GITHUB_TOKEN``/``GITHUB_TOKEN``).
    """
    ctx = GitHubContext.from_env(env)
    token = token or token_from_env(env)
    warnings: list[str] = []
    if ctx.step_summary:
        write_step_summary(report, ctx.step_summary)
    if ctx.output:
        write_outputs(report, ctx.output, report_path=report_path)
    if not token:
        if check_run or comment_mode != "off":
            warnings.append("no GitHub token: skipped the check run and the PR comment")
        return warnings
    if check_run:
        try:
            create_check_run(report, ctx, token)
        except Exception as exc:  # noqa: BLE001 - reporting must not change the verdict
            warnings.append(f"could not create the check run: {_describe(exc)}")
    try:
        upsert_sticky_comment(report, ctx, token, mode=comment_mode)
    except Exception as exc:  # noqa: BLE001
        warnings.append(f"could not update the PR comment: {_describe(exc)}")
    return [redact(w, [token]) for w in warnings]


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    text = f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "")
    if status == 403:
        text += "; the workflow needs `permissions: checks: write, pull-requests: write`"
    return text


def annotation(report: RunReport) -> str | None:
    """A workflow command that puts the verdict on the run page (``::error``/``::notice``)."""
    def esc(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    if report.decision == "pass":
        return f"::notice title=mergegate::{esc(scrub(report.name + ' passed the safety gate'))}"
    reasons = "; ".join(report.reasons) or report.decision
    return f"::error title=mergegate {report.decision}::{esc(scrub(reasons))}"


__all__ = ["MARKER", "GitHubContext", "publish", "create_check_run", "upsert_sticky_comment",
           "write_step_summary", "write_outputs", "step_outputs", "summary_markdown",
           "conclusion_for", "in_github_actions", "token_from_env", "annotation", "client_retry"]
