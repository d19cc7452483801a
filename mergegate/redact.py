"""Secret redaction: tokens never reach a log, a report, a card or any file mergegate writes.

Three shapes of text, three functions, so redaction never breaks what it redacts:

- :func:`redact` for plain text (messages, logs, Markdown, CSV, HTML);
- :func:`redact_data` for JSON-like data, string by string *before* serialisation (redacting the
  serialised text could cut through an escape sequence and change the document's structure);
- :func:`redact_yaml` for YAML that must stay valid: a plain scalar cannot start with ``*`` (that
  is an alias), so a scalar holding a secret is rewritten as a double-quoted string with the
  secret replaced by ``***``; the rest of the text (comments, order, layout) is kept.

:mod:`mergegate.atomic` applies them to every file mergegate writes (``write_redacted_*``).
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

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
        if not _login_token_possible():
            return None
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - e.g. a failed OIDC exchange: redact what we know of
        return None


def _login_token_possible() -> bool:
    """Whether ``get_token`` could find a token that ``_SECRET_ENV_VARS`` does not already cover.

    ``from huggingface_hub import get_token`` imports its HTTP stack (~0.3 s of CPU): a local
    ``mergegate merge`` never needs it otherwise, so it is imported only when a token could be found
    beyond ``$HF_TOKEN``/``$HUGGING_FACE_HUB_TOKEN`` (read above): an OIDC exchange, the file `hf auth
    login` writes (its path from huggingface_hub's own light ``constants`` module), a Colab vault,
    or when the library is loaded anyway. huggingface/huggingface_hub src/huggingface_hub/utils/_auth.py
    ``get_token`` lists these sources."""
    if "huggingface_hub.utils" in sys.modules or "google.colab" in sys.modules:
        return True
    if os.environ.get("HF_OIDC_RESOURCE"):
        return True
    from huggingface_hub import constants

    return os.path.exists(constants.HF_TOKEN_PATH)


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
    return _redact_with(text, [*_env_secrets(), *extra_secrets])


def shorten_home(text: str) -> str:
    """The user's home directory written as ``~`` (``/home/ana/models/x`` -> ``~/models/x``): a
    written artifact (report, card, leaderboard) names no user account."""
    if not text:
        return text
    home = os.path.expanduser("~").rstrip("/")
    if not home or home == "~" or len(home) <= 1:
        return text
    text = text.replace(home + "/", "~/")
    return "~" if text == home else text


def scrub(text: str, extra_secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Text that leaves the machine (console, report, card, any artifact): secrets redacted, home as ``~``."""
    return shorten_home(redact(text, extra_secrets))


def redact_data(value: Any, extra_secrets: list[str] | tuple[str, ...] = (), *, home: bool = False) -> Any:
    """``value`` with every string (dictionary keys included) redacted; other values unchanged.
    ``home=True``: the home directory also written as ``~`` (:func:`shorten_home`)."""
    secrets = [*_env_secrets(), *extra_secrets]

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            clean = _redact_with(v, secrets)
            return shorten_home(clean) if home else clean
        if isinstance(v, dict):
            return {walk(k): walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(walk(x) for x in v) if isinstance(v, list) else tuple(walk(x) for x in v)
        return v

    return walk(value)


def _redact_with(text: str, secrets: list[str]) -> str:
    if not text:
        return text
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern in _TOKEN_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def redact_yaml(text: str, extra_secrets: list[str] | tuple[str, ...] = ()) -> str:
    """YAML text with every secret replaced by ``***``, still valid YAML with the same structure.

    Scalars that hold a secret are rewritten in place as double-quoted strings; comments are
    redacted as text. If the rewrite does not load back to the redacted data (an anchored secret,
    an unusual layout), the redacted data is dumped afresh (valid, but comments and layout lost).
    Text that is not YAML is redacted as plain text.
    """
    import yaml

    secrets = [*_env_secrets(), *extra_secrets]
    if _redact_with(text, secrets) == text:
        return text
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        expected = [redact_data(d, secrets) for d in yaml.safe_load_all(text)]
    except (yaml.YAMLError, RecursionError):
        return _redact_with(text, secrets)
    spans: list[tuple[int, int, str]] = []
    seen: set[int] = set()
    stack: list[Any] = [d for d in documents if d is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            clean = _redact_with(node.value, secrets)
            if clean != node.value:
                tail = text[node.start_mark.index:node.end_mark.index]
                newline = "\n" if tail.endswith("\n") else ""
                spans.append((node.start_mark.index, node.end_mark.index, json.dumps(clean) + newline))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in node.value for n in pair)
    out = text
    for start, end, replacement in sorted(spans, reverse=True):
        out = out[:start] + replacement + out[end:]
    out = _redact_with(out, secrets)  # comments
    try:
        if [d for d in yaml.safe_load_all(out)] == expected:
            return out
    except yaml.YAMLError:
        pass
    dumped = "".join(yaml.safe_dump(d, sort_keys=False) if i == 0 else "---\n" + yaml.safe_dump(d, sort_keys=False)
                     for i, d in enumerate(expected))
    return "# secrets redacted by mergegate (***); layout and comments not kept\n" + dumped
