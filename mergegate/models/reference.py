"""A model as a recipe, a command line or a report names it: a Hub id or a local path, pinned or not.

``org/name@revision`` pins a Hub model; ``path+adapter`` (a LoRA adapter applied to a model) is
split off here, in one place, for every reader of references (the merging engine, the gate's
tolerant recipe reading, the audit's model arguments).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, model_serializer


class ReferenceParts(NamedTuple):
    path: str  # without "@revision" and "+adapter"
    revision: str | None
    adapter: str | None  # the LoRA part after "+", if any


def split_reference(text: str) -> ReferenceParts:
    """Split ``path[@revision][+adapter]`` as written (no validation; the one ``@``/``+`` split)."""
    text = text.strip()
    adapter = None
    if "+" in text and not Path(text).exists():
        text, adapter = text.split("+", 1)
    revision = None
    if "@" in text:
        head, tail = text.rsplit("@", 1)
        if tail and "/" not in tail and head:
            text, revision = head, tail
    return ReferenceParts(text, revision, adapter or None)


def looks_like_hub_id(path: str, *, relative_to: Path | None = None) -> bool:
    """mergekit's rule (``arcee-ai/mergekit mergekit/card.py`` ``is_hf``) without its network call:
    ``org/name`` that is not a directory on disk. Absolute, home-relative, dotted or deeper paths
    are local."""
    if not path or path.startswith(("/", "~", ".", "\\")) or os.path.isabs(path):
        return False
    if path.count("/") > 1 or ":" in path or "\\" in path:
        return False
    for root in (Path.cwd(), relative_to):
        if root is not None and (root / path).exists():
            return False
    return True


class ModelReference(BaseModel):
    """A model as a recipe names it: a Hub id or a local path, optionally ``@revision``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    revision: str | None = None

    @classmethod
    def parse(cls, value: Any) -> ModelReference:
        if isinstance(value, ModelReference):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {"model", "lora", "override_architecture"}
            if unknown:
                raise ValueError(f"unknown model reference keys {sorted(unknown)}")
            if value.get("lora"):
                raise ValueError("LoRA model references are not supported yet; merge the adapter into "
                                 "its base first (peft merge_and_unload) and reference that model")
            if value.get("override_architecture"):
                raise ValueError("override_architecture is not supported yet")
            value = value.get("model")
            if isinstance(value, dict):  # {model: {path:, revision:}} as mergekit's to_yaml writes it
                return cls(path=str(value["path"]), revision=value.get("revision"))
        if not isinstance(value, str) or not value.strip():
            raise ValueError("a model must be a Hub id or a local path (a non-empty string)")
        parts = split_reference(value)
        if parts.adapter:
            raise ValueError(f"'{value.strip()}': LoRA references (model+lora) are not supported yet; merge "
                             "the adapter into its base first and reference that model")
        return cls(path=parts.path, revision=parts.revision)

    def is_hub(self, *, relative_to: Path | None = None) -> bool:
        """Whether this names a Hub repository rather than a local directory (mergekit's rule)."""
        return looks_like_hub_id(self.path, relative_to=relative_to)

    def __str__(self) -> str:
        return f"{self.path}@{self.revision}" if self.revision else self.path

    @model_serializer
    def _as_string(self) -> str:
        return str(self)


__all__ = ["ModelReference", "ReferenceParts", "split_reference", "looks_like_hub_id"]
