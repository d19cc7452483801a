"""A model's chat template, read from its files without loading a tokenizer.

transformers keeps it in ``chat_template.jinja`` (newer saves), ``tokenizer_config.json``
(``chat_template``: a string, or a list of named templates) or ``chat_template.json`` (what
multimodal repositories such as Llama Guard 4 ship).
"""

from __future__ import annotations

import json
from pathlib import Path


def read_chat_template(path: Path) -> str | None:
    """The chat template shipped with a model, read from its files (no tokenizer load)."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("tokenizer_config.json", "chat_template.json"):
        f = path / name
        if f.is_file():
            try:
                value = json.loads(f.read_text(encoding="utf-8")).get("chat_template")
            except (ValueError, AttributeError, RecursionError):  # not JSON / not UTF-8 / not an object
                continue
            if isinstance(value, str):
                return value
            if isinstance(value, list):  # named templates
                for item in value:
                    if isinstance(item, dict) and item.get("name") == "default":
                        return str(item.get("template"))
    return None


__all__ = ["read_chat_template"]
