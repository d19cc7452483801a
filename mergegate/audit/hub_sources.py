"""What the audit fetches from the Hub, why, and what a user can do instead.

The texts that :func:`mergegate.models.hub_errors.hub_access` puts into an error when a default
source (BeaverTails, XSTest, the Llama Guard judge) or a ``hub:ID`` prompt set cannot be fetched.
"""

from __future__ import annotations

from typing import Any

BENIGN_NONE = "or --benign none to skip over-refusal (the default max_over_refusal_increase rule then fails)"
JUDGE_FIXES = ("pass --judge DIR (a local Llama Guard model directory)",
               "or --judge refusal-patterns (string matching, no judge model)")


def prompt_source_access(source: str, repo_id: str, *, benign: bool) -> dict[str, Any]:
    """``hub_access`` arguments for loading the prompt set ``source`` (from ``repo_id``)."""
    flag = "benign" if benign else "prompts"
    name = source.partition("@")[0]
    if name in ("beavertails", "beavertails-rows"):
        what = f"the BeaverTails prompt set ({repo_id})"
    elif name == "xstest":
        what = f"the XSTest benign prompt set ({repo_id})"
    else:
        what = f"the Hub dataset '{repo_id}'"
    default = {"prompts": "beavertails", "benign": "xstest"}[flag]
    why = f"--{flag} {source}" + (" (the default)" if source == default else "")
    fixes = [f"pass --{flag} FILE (a .jsonl or .parquet file with a 'prompt' column)"]
    if benign:
        fixes.append(BENIGN_NONE)
    return dict(what=what, why=why, repo_id=repo_id, repo_type="dataset", field=flag, fixes=fixes)


def judge_why(judge: str, *, default: bool | None = None) -> str:
    """Who asked for the judge: ``default`` says whether it is the default (no --judge given);
    None compares ``judge`` with the default protocol's judge."""
    from mergegate.audit.judges import DEFAULT_JUDGE

    if default is None:
        default = judge == DEFAULT_JUDGE
    return "the judge (--judge, the default)" if default else "the judge (--judge)"


__all__ = ["prompt_source_access", "judge_why", "JUDGE_FIXES", "BENIGN_NONE"]
