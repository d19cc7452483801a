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
    adapter: str | None  # the LoRA part after "+" (as written, may carry its own @revision), if any


def split_revision(text: str) -> tuple[str, str | None]:
    """``org/name@rev`` → (``org/name``, ``rev``); an ``@`` inside a path component is kept."""
    if "@" in text:
        head, tail = text.rsplit("@", 1)
        if tail and "/" not in tail and head:
            return head, tail
    return text, None


def split_reference(text: str) -> ReferenceParts:
    """Split ``path[@revision][+adapter]`` as written (the one ``+``/``@`` split; no validation).
    A ``+`` that is part of an existing local path is not an adapter separator."""
    text = text.strip()
    adapter = None
    if "+" in text and not Path(text).expanduser().exists():
        text, adapter = text.split("+", 1)
        text, adapter = text.strip(), adapter.strip()
    path, revision = split_revision(text)
    return ReferenceParts(path, revision, adapter)


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


class AdapterReference(BaseModel):
    """The LoRA adapter of a ``model+adapter`` reference: a Hub id or a local directory in peft's
    format (``adapter_config.json`` + ``adapter_model.safetensors``), optionally ``@revision``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    revision: str | None = None

    @classmethod
    def parse(cls, value: Any) -> AdapterReference:
        if isinstance(value, AdapterReference):
            return value
        if isinstance(value, dict):  # mergekit's ModelPath: {path:, revision:}
            path, revision = value.get("path"), value.get("revision")
            if not isinstance(path, str) or not path.strip():
                raise ValueError("a LoRA adapter needs a non-empty 'path'")
            return cls(path=path.strip(), revision=revision)
        if not isinstance(value, str) or not value.strip():
            raise ValueError("a LoRA adapter must be a Hub id or a local path (a non-empty string)")
        path, revision = split_revision(value.strip())
        return cls(path=path, revision=revision)

    def __str__(self) -> str:
        return f"{self.path}@{self.revision}" if self.revision else self.path


class ModelReference(BaseModel):
    """A model as a recipe names it: a Hub id or a local path, optionally ``@revision``, optionally
    with a LoRA adapter applied (``model+adapter``, mergekit's syntax; each part may carry its own
    ``@revision``) and an architecture override (mergekit's dict form)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    revision: str | None = None
    lora: AdapterReference | None = None
    override_architecture: str | None = None

    @classmethod
    def parse(cls, value: Any) -> ModelReference:
        if isinstance(value, ModelReference):
            return value
        if isinstance(value, dict):  # {model:, lora:, override_architecture:} (other keys: see recipe_compat)
            model = value.get("model")
            if isinstance(model, dict):  # {model: {path:, revision:}} as mergekit's to_yaml writes it
                base = cls._parse_text(str(model.get("path") or ""))
                base = base.model_copy(update={"revision": model.get("revision") or base.revision})
            else:
                base = cls._parse_text(model)
            lora = value.get("lora")
            override = value.get("override_architecture")
            if override is not None and (not isinstance(override, str) or not override.strip()):
                raise ValueError("override_architecture must be an architecture name such as LlamaForCausalLM")
            update: dict[str, Any] = {"override_architecture": override.strip() if override else None}
            if lora:
                if base.lora is not None:
                    raise ValueError(f"'{base}' already names a LoRA adapter; do not give 'lora' as well")
                update["lora"] = AdapterReference.parse(lora)
            return base.model_copy(update=update)
        return cls._parse_text(value)

    @classmethod
    def _parse_text(cls, value: Any) -> ModelReference:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("a model must be a Hub id or a local path (a non-empty string)")
        parts = split_reference(value)
        lora: AdapterReference | None = None
        if parts.adapter is not None:  # mergekit: <model>+<lora>
            if "+" in parts.adapter or not parts.path.strip() or not parts.adapter.strip():
                raise ValueError(f"'{value.strip()}': a LoRA reference is <model>+<adapter> (exactly one '+')")
            lora = AdapterReference.parse(parts.adapter)
        return cls(path=parts.path, revision=parts.revision, lora=lora)

    @property
    def base(self) -> ModelReference:
        """The model without its adapter (whose config and tokenizer a LoRA reference uses)."""
        return ModelReference(path=self.path, revision=self.revision) if self.lora or \
            self.override_architecture else self

    def is_hub(self, *, relative_to: Path | None = None) -> bool:
        """Whether this names a Hub repository rather than a local directory (mergekit's rule)."""
        return looks_like_hub_id(self.path, relative_to=relative_to)

    def __str__(self) -> str:
        text = f"{self.path}@{self.revision}" if self.revision else self.path
        return f"{text}+{self.lora}" if self.lora else text

    @model_serializer
    def _as_string(self) -> Any:
        if self.override_architecture:
            return {"model": f"{self.path}@{self.revision}" if self.revision else self.path,
                    "lora": str(self.lora) if self.lora else None,
                    "override_architecture": self.override_architecture}
        return str(self)


__all__ = ["ModelReference", "AdapterReference", "ReferenceParts", "split_reference", "split_revision",
           "looks_like_hub_id"]
