"""What the gate needs from a mergekit recipe, read without the merging engine.

The lead's ``mergegate.merging.config`` validates and executes recipes; the gate only needs the
references (to audit each constituent and to fill ``base_model``), the method and the base, and
must be able to report on a recipe that the engine rejected.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergegate.errors import ConfigError


@dataclass(frozen=True)
class ModelReference:
    """One model as a recipe references it."""

    raw: str  # as written, e.g. "org/name@abc123" or "./models/expert" or "org/name+lora"
    path: str  # without "@revision" and "+lora"
    revision: str | None  # the "@revision" part, if any
    is_hub: bool

    @property
    def hub_id(self) -> str | None:
        return self.path if self.is_hub else None


@dataclass(frozen=True)
class Recipe:
    text: str
    data: dict[str, Any]
    name: str  # file name (no directory)
    directory: Path | None
    method: str | None
    base_model: ModelReference | None
    models: list[ModelReference] = field(default_factory=list)  # every reference, base first, unique

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def looks_like_hub_id(path: str, *, relative_to: Path | None = None) -> bool:
    """mergekit's rule (``card.py::is_hf``) without its network call: ``org/name`` that is not a
    directory on disk. Absolute, home-relative, dotted or deeper paths are local."""
    if not path or path.startswith(("/", "~", ".", "\\")) or os.path.isabs(path):
        return False
    if path.count("/") > 1 or ":" in path or "\\" in path:
        return False
    for root in (Path.cwd(), relative_to):
        if root is not None and (root / path).exists():
            return False
    return True


def parse_reference(raw: Any, *, relative_to: Path | None = None) -> ModelReference:
    if isinstance(raw, dict):  # {model: ..., lora: ...}
        raw = raw.get("model") or raw.get("path")
    if not isinstance(raw, str) or not raw.strip():
        shown = repr(raw) if isinstance(raw, (str, int, float, bool, type(None))) else type(raw).__name__
        raise ConfigError(f"a model reference must be a non-empty string, got {shown[:80]}")
    text = raw.strip()
    base = text.split("+", 1)[0]
    revision = None
    if "@" in base:
        base, revision = base.rsplit("@", 1)
    return ModelReference(raw=text, path=base, revision=revision or None,
                          is_hub=looks_like_hub_id(base, relative_to=relative_to))


def _walk_models(data: dict[str, Any]) -> list[Any]:
    found: list[Any] = []
    if data.get("base_model") is not None:
        found.append(data["base_model"])
    for entry in data.get("models") or []:
        if isinstance(entry, dict):
            found.append(entry.get("model"))
    for sl in data.get("slices") or []:
        if isinstance(sl, dict):
            if sl.get("base_model") is not None:
                found.append(sl["base_model"])
            for src in sl.get("sources") or []:
                if isinstance(src, dict):
                    found.append(src.get("model"))
    for module in (data.get("modules") or {}).values():
        if isinstance(module, dict):
            found.extend(_walk_models(module))
    return found


def parse_recipe(text: str, *, name: str = "mergekit_config.yml",
                 directory: Path | None = None) -> Recipe:
    """Parse recipe text (YAML) into a :class:`Recipe`.

    Raises:
        ConfigError: not YAML, not a mapping, or without any model.
    """
    from mergegate.merging.config import check_recipe_size
    from mergegate.safe_yaml import load_yaml

    data = load_yaml(text, source=name)  # bounded: size, alias expansion, depth
    if not isinstance(data, dict):
        raise ConfigError("a mergekit recipe is a YAML mapping", source=name)
    check_recipe_size(data, source=name)
    refs: list[ModelReference] = []
    seen: set[str] = set()
    for raw in _walk_models(data):
        ref = parse_reference(raw, relative_to=directory)
        if ref.raw not in seen:
            seen.add(ref.raw)
            refs.append(ref)
    if not refs:
        raise ConfigError("the recipe references no model", source=name, field="models")
    method = data.get("merge_method")
    if method is not None and not isinstance(method, str):
        raise ConfigError("merge_method must be a string", source=name, field="merge_method")
    base = parse_reference(data["base_model"], relative_to=directory) if data.get("base_model") else None
    return Recipe(text=text, data=data, name=name, directory=directory, method=method,
                  base_model=base, models=refs)


def load_recipe(path: str | Path) -> Recipe:
    """Read and parse a recipe file.

    Raises:
        ConfigError: the file is missing or not a recipe (exit code 2).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("merge config not found", source=str(path),
                          hint="pass the path of a mergekit YAML (e.g. mergekit_config.yml)")
    from mergegate.merging.config import read_recipe_text

    text = read_recipe_text(path)  # bounded; a model card's first ```yaml block with merge_method
    return parse_recipe(text, name=path.name, directory=path.resolve().parent)


__all__ = ["ModelReference", "Recipe", "parse_recipe", "load_recipe", "parse_reference",
           "looks_like_hub_id"]
