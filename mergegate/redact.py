"""Secret redaction: tokens never reach a log, a report or a card."""

from __future__ import annotations

import os
import re

_TOKEN_PATTERNS = [
    re.compile(r"hf_[A-Za-z0-9]{16,}"),  # Hugging Face user/org tokens
    re.compile(r"api_org_[A-Za-z0-9]{16,}"),
    re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"),  # GitHub classic tokens
    re.compile(r"github_pat_[A-Za-z0-9_]{20,}"),  # GitHub fine-grained tokens
    re.compile(r"(?i)(authorization:\s*(?:bearer|token)\s+)[^\s\"']+"),
]
_SECRET_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GITHUB_TOKEN", "GH_TOKEN", "INPUT_TOKEN",
                    "INPUT_GITHUB-TOKEN", "INPUT_HF-TOKEN", "MERGEGATE_GITHUB_TOKEN", "HF_OIDC_ID_TOKEN")
REDACTED = "***"


def _hf_login_token() -> str | None:
    """The token huggingface_hub would use (``get_token``: ``$HF_TOKEN``, else the one `hf auth login`
    stored), if any. Never raises: redaction must work when the Hub library cannot."""
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - e.g. a failed OIDC exchange: redact what we know of
        return None


def _env_secrets() -> list[str]:
    found = [v for k in _SECRET_ENV_VARS if (v := os.environ.get(k)) and len(v) >= 8]
    login = _hf_login_token()
    if login and len(login) >= 8:
        found.append(login)
    return found


def redact(text: str, extra_secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Replace every known token (by pattern, by environment value, or given) with ``***``."""
    if not text:
        return text
    for secret in [*_env_secrets(), *extra_secrets]:
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern in _TOKEN_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text
