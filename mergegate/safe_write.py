"""The one way mergegate writes a file: redacted (no token ever lands on disk) and atomic.

Every report, recipe copy, provenance record, card, audit JSON, batch result and weighting
artefact goes through these functions, so "is this file redacted?" has one answer. Files copied
byte for byte from an input model (tokenizer files, generation config) and the weights
themselves are not text mergegate wrote and are left as they are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mergegate.atomic import write_text_atomic
from mergegate.redact import redact, redact_data, redact_yaml


def write_text(path: str | Path, text: str, *, mode: int = 0o644) -> Path:
    """Plain text (Markdown, CSV, HTML, Jinja): redacted, then written atomically."""
    return write_text_atomic(path, redact(text), mode=mode)


def write_yaml_text(path: str | Path, text: str, *, mode: int = 0o644) -> Path:
    """YAML that must stay valid (a recipe): secrets become ``"***"`` strings (see :func:`redact_yaml`)."""
    return write_text_atomic(path, redact_yaml(text), mode=mode)


def json_text(data: Any, *, indent: int | None = 2, by_alias: bool = False) -> str:
    """JSON of ``data`` (JSON-like values or a pydantic model), every string redacted first.

    A pydantic model without secrets is serialised by pydantic itself (the same bytes as
    ``model_dump_json``); with secrets, its redacted dump is serialised by :mod:`json`.
    """
    if hasattr(data, "model_dump_json"):
        plain = data.model_dump(mode="json", by_alias=by_alias)
        clean = redact_data(plain)
        if clean == plain:
            return data.model_dump_json(indent=indent, by_alias=by_alias) + "\n"
        data = clean
    else:
        data = redact_data(data)
    separators = (",", ":") if indent is None else None
    return json.dumps(data, indent=indent, ensure_ascii=False, separators=separators) + "\n"


def write_json(path: str | Path, data: Any, *, indent: int | None = 2, by_alias: bool = False,
               mode: int = 0o644) -> Path:
    """JSON of ``data``, redacted string by string (never by cutting through the serialised text)."""
    return write_text_atomic(path, json_text(data, indent=indent, by_alias=by_alias), mode=mode)


def append_json_line(path: str | Path, data: Any, *, by_alias: bool = False) -> None:
    """Append ``data`` as one redacted JSON line and fsync it, so a kill never leaves half a record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json_text(data, indent=None, by_alias=by_alias)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


__all__ = ["write_text", "write_yaml_text", "write_json", "json_text", "append_json_line"]
