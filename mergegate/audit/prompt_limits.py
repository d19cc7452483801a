"""Prompt length budget: a prompt too long for a model is refused per item, never generated on.

A 10 MB prompt once cost ~10 GB of memory (attention over millions of tokens). Every prompt is
measured as the model sees it (its chat template applied) against a budget of
``min(--max-prompt-tokens, context length − --max-new-tokens)``. A prompt over budget is not
generated on and counts against the model, fail closed: an unsafe prompt counts as an unsafe
answer, a benign one as a refusal; the report counts them (``ModelScore.n_too_long`` and
``n_benign_too_long``).

Why refuse rather than truncate: a truncated prompt is a different question (the harmful request
may be the part cut off), so its verdict would be reported for a prompt that was never asked; a
refusal keeps every measured item faithful to the dataset, and counting it unsafe keeps the gate
closed. All models audited together see the same prompts, so a budget that bites for all of them
shifts them alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergegate.errors import InputError

DEFAULT_MAX_PROMPT_TOKENS = 4096  # BeaverTails and XSTest prompts are far shorter (< 300 tokens)
# A prompt longer than this many characters per budget token is refused without tokenizing it:
# no real tokenizer averages anywhere near 64 characters per token, and tokenizing megabytes costs.
MAX_CHARS_PER_TOKEN = 64
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx",
                 "max_seq_len")


def context_length(config: dict[str, Any]) -> int | None:
    """The model's context window from its ``config.json`` (``text_config`` for multimodal models)."""
    for scope in (config, config.get("text_config") or {}):
        if not isinstance(scope, dict):
            continue
        for key in _CONTEXT_KEYS:
            value = scope.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def read_context_length(model_dir: Path) -> int | None:
    try:
        data = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return context_length(data) if isinstance(data, dict) else None


@dataclass(frozen=True)
class PromptBudget:
    """The most tokens a rendered prompt may have for one model, and why."""

    tokens: int
    reason: str

    @classmethod
    def for_model(cls, model_dir: Path, *, max_prompt_tokens: int | None, max_new_tokens: int,
                  source: str) -> PromptBudget:
        limits: list[tuple[int, str]] = []
        if max_prompt_tokens is not None:
            limits.append((max_prompt_tokens, f"--max-prompt-tokens {max_prompt_tokens}"))
        ctx = read_context_length(model_dir)
        if ctx is not None:
            limits.append((ctx - max_new_tokens, f"the model's context of {ctx} tokens minus "
                                                 f"--max-new-tokens {max_new_tokens}"))
        if not limits:
            return cls(DEFAULT_MAX_PROMPT_TOKENS, f"the default budget of {DEFAULT_MAX_PROMPT_TOKENS} tokens")
        tokens, reason = min(limits)
        if tokens < 1:
            raise InputError(f"no room for a prompt: {reason} leaves {tokens} tokens", source=source,
                             field="max_new_tokens", hint="lower --max-new-tokens below the model's context")
        return cls(tokens, reason)


# Bytes a chat template may add around a prompt before a prompt's own length is worth measuring
TEMPLATE_ALLOWANCE = 4096


def over_budget(prompts: Sequence[str], tokenizer: Callable[[], Any], budget: PromptBudget,
                chat_template: str | None = None) -> set[str]:
    """The prompts whose rendered form (chat template applied) has more than ``budget.tokens`` tokens.

    Cheap for ordinary prompts: a prompt of fewer than ``budget.tokens - TEMPLATE_ALLOWANCE`` UTF-8
    bytes cannot reach the budget (every token covers at least one byte), so the tokenizer
    (``tokenizer()``, loaded lazily) measures only longer ones; a rendered prompt within the
    budget in bytes needs no tokenizing either; absurdly long prompts (``MAX_CHARS_PER_TOKEN``
    characters per budget token) are refused without tokenizing them at all.
    """
    too_long: set[str] = set()
    tok: Any = None
    for prompt in dict.fromkeys(prompts):
        if len(prompt) > budget.tokens * MAX_CHARS_PER_TOKEN:
            too_long.add(prompt)
            continue
        if len(prompt.encode("utf-8")) + TEMPLATE_ALLOWANCE < budget.tokens:
            continue
        tok = tok or tokenizer()
        text = render(tok, prompt, chat_template)
        if len(text.encode("utf-8")) + 1 <= budget.tokens:  # +1: a tokenizer's dummy prefix
            continue
        if len(tok(text, add_special_tokens=False)["input_ids"]) > budget.tokens:
            too_long.add(prompt)
    return too_long


def render(tokenizer: Any, prompt: str, chat_template: str | None = None) -> str:
    """The prompt as a single user turn in the chat template (the text the model is given)."""
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        return prompt
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True, chat_template=template)


__all__ = ["DEFAULT_MAX_PROMPT_TOKENS", "MAX_CHARS_PER_TOKEN", "PromptBudget", "context_length",
           "read_context_length", "over_budget", "render", "TEMPLATE_ALLOWANCE"]
