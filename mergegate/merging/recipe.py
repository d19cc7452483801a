"""The tolerant reading of a recipe: what it references, even when the engine would refuse it.

The gate must name a recipe's constituents in an error report, and the batch auditor must pin and
audit the constituents of published recipes, before (or although) the merging engine validates
them. This reads the recipe with the engine's own loader (:func:`read_recipe_text`,
:func:`load_recipe_document`) and reference splitting (:func:`mergegate.models.split_reference`)
but checks only that it is a mapping that references at least one model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergegate.errors import ConfigError
from mergegate.merging.config import load_recipe_document, read_recipe_text
from mergegate.models import ModelReference, looks_like_hub_id, split_reference


@dataclass(frozen=True)
class RecipeModel:
    """One model as a recipe references it, with whether it names a Hub repository."""

    raw: str  # as written, e.g. "org/name@abc123", "./models/expert" or "org/name+lora"
    reference: ModelReference  # path and revision, without the "+adapter" part
    adapter: str | None
    is_hub: bool

    @property
    def path(self) -> str:
        return self.reference.path

    @property
    def revision(self) -> str | None:
        return self.reference.revision

    @property
    def hub_id(self) -> str | None:
        return self.path if self.is_hub else None


@dataclass(frozen=True)
class RecipeSummary:
    text: str
    data: dict[str, Any]
    name: str  # file name (no directory)
    directory: Path | None
    method: str | None
    base_model: RecipeModel | None
    models: list[RecipeModel] = field(default_factory=list)  # every reference, base first, unique

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def _path_text(value: Any) -> Any:
    """mergekit's ModelPath: a string, or ``{path:, revision:}`` as its to_yaml writes it."""
    if isinstance(value, dict) and value.get("path"):
        return f"{value['path']}@{value['revision']}" if value.get("revision") else value["path"]
    return value


def recipe_model(raw: Any, *, relative_to: Path | None = None) -> RecipeModel:
    """A recipe's model entry (a string, ``{model: …, lora: …}`` or ``{model: {path, revision}}``)."""
    if isinstance(raw, dict):  # {model: ..., lora: ..., override_architecture: ...}
        model, lora = _path_text(raw.get("model") or raw.get("path")), _path_text(raw.get("lora"))
        raw = f"{model}+{lora}" if isinstance(model, str) and isinstance(lora, str) and lora else model
    if not isinstance(raw, str) or not raw.strip():
        shown = repr(raw) if isinstance(raw, (str, int, float, bool, type(None))) else type(raw).__name__
        raise ConfigError(f"a model reference must be a non-empty string, got {shown[:80]}")
    parts = split_reference(raw)
    return RecipeModel(raw=raw.strip(), reference=ModelReference(path=parts.path, revision=parts.revision),
                       adapter=parts.adapter, is_hub=looks_like_hub_id(parts.path, relative_to=relative_to))


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


def summarize_recipe(text: str, *, name: str = "mergekit_config.yml",
                     directory: Path | None = None) -> RecipeSummary:
    """Read recipe text (YAML) tolerantly.

    Raises:
        ConfigError: not YAML, not a mapping, or without any model.
    """
    data = load_recipe_document(text, source=name)
    if not isinstance(data, dict):
        raise ConfigError("a mergekit recipe is a YAML mapping", source=name)
    refs: list[RecipeModel] = []
    seen: set[str] = set()
    for raw in _walk_models(data):
        ref = recipe_model(raw, relative_to=directory)
        if ref.raw not in seen:
            seen.add(ref.raw)
            refs.append(ref)
    if not refs:
        raise ConfigError("the recipe references no model", source=name, field="models")
    method = data.get("merge_method")
    if method is not None and not isinstance(method, str):
        raise ConfigError("merge_method must be a string", source=name, field="merge_method")
    base = recipe_model(data["base_model"], relative_to=directory) if data.get("base_model") else None
    return RecipeSummary(text=text, data=data, name=name, directory=directory, method=method,
                         base_model=base, models=refs)


def read_recipe(path: str | Path) -> RecipeSummary:
    """Read a recipe file (a mergekit YAML, or a model card holding one) tolerantly.

    Raises:
        ConfigError: the file is missing or not a recipe (exit code 2).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("merge config not found", source=str(path),
                          hint="pass the path of a mergekit YAML (e.g. mergekit_config.yml)")
    text, _ = read_recipe_text(path)
    return summarize_recipe(text, name=path.name, directory=path.resolve().parent)


__all__ = ["RecipeModel", "RecipeSummary", "read_recipe", "summarize_recipe", "recipe_model"]
