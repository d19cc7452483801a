"""Typed model of a mergekit merge recipe (mergekit 0.1.5's ``MergeConfiguration``).

Reads every single-document form mergekit accepts: ``models`` or ``slices`` (with ``sources`` and
``layer_range``), ``base_model``, ``merge_method``, global / per-model / per-slice ``parameters``,
filtered parameters (``- filter: self_attn`` / ``value: …``), gradient lists, ``dtype``,
``out_dtype``, ``tokenizer_source`` / ``tokenizer``, ``chat_template`` and ``model@revision``.
Unknown fields and impossible values are a :class:`~mergegate.errors.ConfigError` naming the field,
raised before anything is downloaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Union

import yaml
from typing import Annotated

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      field_validator, model_serializer, model_validator)

from mergegate.errors import ConfigError
from mergegate.safe_yaml import (MAX_CARD_BYTES, MAX_YAML_BYTES, load_yaml_documents,
                                 read_text_bounded)

DTYPE_NAMES = {"bfloat16", "float16", "float32", "float64", "int64"}
DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32",
                 "float": "float32"}

Scalar = Union[bool, int, float, str]


def normalize_dtype_name(value: str | None) -> str | None:
    if value is None:
        return None
    name = str(value).strip()
    name = name[len("torch."):] if name.startswith("torch.") else name
    name = DTYPE_ALIASES.get(name, name)
    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype '{value}'; use one of {sorted(DTYPE_NAMES)}")
    return name


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
        text = value.strip()
        if "+" in text and not Path(text).exists():
            raise ValueError(f"'{text}': LoRA references (model+lora) are not supported yet; merge the "
                             "adapter into its base first and reference that model")
        revision = None
        if "@" in text:
            head, tail = text.rsplit("@", 1)
            if tail and "/" not in tail and head:
                text, revision = head, tail
        return cls(path=text, revision=revision)

    def __str__(self) -> str:
        return f"{self.path}@{self.revision}" if self.revision else self.path

    @model_serializer
    def _as_string(self) -> str:
        return str(self)


def _coerce_model(value: Any) -> ModelReference:
    return ModelReference.parse(value)


class ConditionalParameter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    value: Union[Scalar, list[Scalar]]
    filter: str | None = None


ParameterSetting = Union[ConditionalParameter, list[ConditionalParameter], Scalar, list[Scalar]]
Parameters = dict[str, ParameterSetting]


def _check_parameters(params: Parameters | None) -> Parameters | None:
    if params is None:
        return None
    for name, setting in params.items():
        values: list[Any] = []
        for item in setting if isinstance(setting, list) else [setting]:
            if isinstance(item, ConditionalParameter):
                values.extend(item.value if isinstance(item.value, list) else [item.value])
            else:
                values.append(item)
        if isinstance(setting, list) and not setting:
            raise ValueError(f"parameter '{name}' is an empty list")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if v != v or v in (float("inf"), float("-inf")):
                raise ValueError(f"parameter '{name}' is not a finite number")
            if name in ("density",) and not 0.0 <= v <= 1.0:
                raise ValueError(f"parameter 'density' must be in [0, 1], got {v}")
            if name in ("epsilon", "gamma") and not 0.0 <= v < 1.0:
                raise ValueError(f"parameter '{name}' must be in [0, 1), got {v}")
    return params


ModelRef = Annotated[ModelReference, BeforeValidator(_coerce_model)]
ParamsField = Annotated[Union[Parameters, None], AfterValidator(_check_parameters)]


class InputModelDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelRef
    parameters: ParamsField = None



class InputSliceDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelRef
    layer_range: tuple[int, int]
    parameters: ParamsField = None


    @field_validator("layer_range")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        start, end = v
        if start < 0 or end <= start:
            raise ValueError(f"layer_range must be [start, end) with 0 <= start < end, got [{start}, {end}]")
        return v


class OutputSliceDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[InputSliceDefinition] = Field(min_length=1)
    base_model: ModelReference | None = None
    residual_weight: float | None = None
    parameters: ParamsField = None

    @field_validator("base_model", mode="before")
    @classmethod
    def _b(cls, v: Any) -> Any:
        return None if v is None else _coerce_model(v)


    @model_validator(mode="after")
    def _same_length(self) -> OutputSliceDefinition:
        lengths = {s.layer_range[1] - s.layer_range[0] for s in self.sources}
        if len(lengths) > 1:
            raise ValueError("all sources of a slice must span the same number of layers, got "
                             + ", ".join(f"{s.model}: {list(s.layer_range)}" for s in self.sources))
        return self


class TokenEmbeddingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Any = None
    force: bool = False


class TokenizerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = "union"
    tokens: dict[str, TokenEmbeddingConfig] | None = None
    pad_to_multiple_of: int | None = None


class MergeConfig(BaseModel):
    """One merge recipe. Field names and semantics are mergekit 0.1.5's."""

    model_config = ConfigDict(extra="forbid")

    merge_method: str
    models: list[InputModelDefinition] | None = None
    slices: list[OutputSliceDefinition] | None = None
    modules: dict[str, Any] | None = None
    base_model: ModelReference | None = None
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    tokenizer: TokenizerConfig | None = None
    chat_template: str | None = None
    parameters: ParamsField = None
    name: str | None = None  # multi-document (mergekit-multi) stage name; informational here

    @field_validator("base_model", mode="before")
    @classmethod
    def _b(cls, v: Any) -> Any:
        return None if v is None else _coerce_model(v)

    @field_validator("dtype", "out_dtype", mode="before")
    @classmethod
    def _dtype(cls, v: Any) -> Any:
        return normalize_dtype_name(v)


    @field_validator("merge_method")
    @classmethod
    def _method(cls, v: str) -> str:
        from mergegate.merging.methods import get_method

        get_method(v)  # raises ConfigError / UnsupportedMethodError (both ValueError)
        return v

    @field_validator("modules")
    @classmethod
    def _modules(cls, v: Any) -> Any:
        if v is not None:
            raise ValueError("multi-module merges (modules:) are not supported yet; use models: or slices:")
        return v

    @model_validator(mode="after")
    def _shape(self) -> MergeConfig:
        given = [k for k in ("models", "slices") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("exactly one of 'models' or 'slices' must be given (and not empty)")
        if self.tokenizer_source is not None and self.tokenizer is not None:
            raise ValueError("give either 'tokenizer_source' or 'tokenizer', not both")
        from mergegate.merging.methods import get_method
        from mergegate.merging.methods.base import BasePolicy

        spec = get_method(self.merge_method).spec
        if spec.base is BasePolicy.REQUIRED and not self.base_model and not (
                self.slices and all(s.base_model for s in self.slices)):
            raise ValueError(f"merge_method '{self.merge_method}' needs a 'base_model'")
        known = {p.name for p in spec.params}
        for name in self._parameter_names():
            if name not in known:
                import logging

                logging.getLogger(__name__).warning(
                    "parameter '%s' is not used by merge_method '%s' (mergekit ignores it too)",
                    name, self.merge_method)
        return self

    def _parameter_names(self) -> set[str]:
        names = set(self.parameters or {})
        for m in self.models or []:
            names |= set(m.parameters or {})
        for s in self.slices or []:
            names |= set(s.parameters or {})
            for src in s.sources:
                names |= set(src.parameters or {})
        return names

    def referenced_models(self) -> list[ModelReference]:
        """Every model the recipe reads, base first, in order of appearance, without repeats."""
        seen: dict[ModelReference, None] = {}
        if self.base_model:
            seen[self.base_model] = None
        for m in self.models or []:
            seen[m.model] = None
        for s in self.slices or []:
            if s.base_model:
                seen[s.base_model] = None
            for src in s.sources:
                seen[src.model] = None
        return list(seen)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False)


_README_YAML = re.compile(r"```ya?ml\s*\n(.*?)```", re.DOTALL)


def extract_recipe_from_readme(text: str) -> str | None:
    """The first fenced YAML block of a model card that contains ``merge_method``."""
    for block in _README_YAML.findall(text):
        if "merge_method" in block:
            return block
    return None


# Practical bounds of a recipe, checked before validation: mergekit's own recipes stay far below
# (the largest published frankenmerges have ~100 slices and a handful of models).
MAX_RECIPE_MODELS = 1_000  # entries of `models:`, sources of one slice, distinct models overall
MAX_RECIPE_SLICES = 10_000


def check_recipe_size(data: dict[str, Any], *, source: str) -> None:
    """Refuse a recipe with an absurd number of models or slices before anything walks it.

    Raises:
        ConfigError: naming the field and the limit (exit code 2).
    """
    hint = "a merge of this size is not practical; split it or check the generator of the recipe"
    models = data.get("models")
    if isinstance(models, list) and len(models) > MAX_RECIPE_MODELS:
        raise ConfigError(f"{len(models):,} models (at most {MAX_RECIPE_MODELS:,})", source=source,
                          field="models", hint=hint)
    slices = data.get("slices")
    if not isinstance(slices, list):
        return
    if len(slices) > MAX_RECIPE_SLICES:
        raise ConfigError(f"{len(slices):,} slices (at most {MAX_RECIPE_SLICES:,})", source=source,
                          field="slices", hint=hint)
    for i, sl in enumerate(slices):
        sources = sl.get("sources") if isinstance(sl, dict) else None
        if isinstance(sources, list) and len(sources) > MAX_RECIPE_MODELS:
            raise ConfigError(f"{len(sources):,} sources in one slice (at most {MAX_RECIPE_MODELS:,})",
                              source=source, field=f"slices[{i}].sources", hint=hint)


def _format_location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif p in ("function-after[_shape(), MergeConfig]",):
            continue
        else:
            text = str(p)
            if text.startswith(("function-", "union[", "tagged-union[", "list[", "dict[")):
                continue
            parts.append(("." if parts else "") + text)
    return "".join(parts) or "(top level)"


def parse_merge_config(data: Any, *, source: str = "<config>") -> MergeConfig:
    """Validate a decoded recipe; every problem becomes one ConfigError naming the field."""
    from mergegate.errors import MergegateError
    from mergegate.merging.methods import get_method

    if not isinstance(data, dict):
        raise ConfigError("a merge config must be a YAML mapping with at least 'merge_method'",
                          source=source, hint="see mergekit's examples/*.yml")
    check_recipe_size(data, source=source)
    method = data.get("merge_method")
    if isinstance(method, str):
        try:
            get_method(method)
        except MergegateError as exc:  # keep the precise type (UnsupportedMethodError) and hint
            raise type(exc)(exc.message, source=source, field="merge_method", hint=exc.hint) from None
    try:
        config = MergeConfig.model_validate(data)
    except ValidationError as exc:
        problems: list[tuple[str, str]] = []
        hint = "fix the field; `mergegate merge --dry-run CONFIG` validates without merging"
        for err in exc.errors():
            where = _format_location(tuple(err.get("loc", ())))
            original = (err.get("ctx") or {}).get("error")
            if isinstance(original, MergegateError):
                msg = original.message
                hint = original.hint or hint
            elif err.get("type") == "extra_forbidden":
                msg = "unknown field (check the spelling against mergekit's schema)"
            else:
                msg = str(err.get("msg", "")).removeprefix("Value error, ")
            problems.append((where, msg))
        if len(problems) == 1:
            raise ConfigError(problems[0][1], source=source, field=problems[0][0], hint=hint) from None
        raise ConfigError(f"{len(problems)} problems: " + "; ".join(f"'{w}': {m}" for w, m in problems[:10])
                          + ("; ..." if len(problems) > 10 else ""), source=source, hint=hint) from None
    n_models = len(config.referenced_models())
    if n_models > MAX_RECIPE_MODELS:
        raise ConfigError(f"{n_models:,} distinct models (at most {MAX_RECIPE_MODELS:,})", source=source,
                          field="models", hint="a merge of this size is not practical")
    return config


def load_merge_config(path_or_text: str | Path | dict[str, Any]) -> tuple[MergeConfig, str]:
    """Read a recipe from a YAML file, a model card (README.md with a YAML block), YAML text or a dict.

    Returns the typed config and the recipe text as written (kept for the model card).
    """
    source = "<config>"
    if isinstance(path_or_text, dict):
        return parse_merge_config(path_or_text), yaml.safe_dump(path_or_text, sort_keys=False)
    text: str
    if isinstance(path_or_text, Path) or ("\n" not in str(path_or_text) and ":" not in str(path_or_text)
                                           or _is_file(str(path_or_text))):
        path = Path(path_or_text)
        source = str(path)
        if not path.is_file():
            raise ConfigError("config file not found", source=source,
                              hint="pass the path of a mergekit YAML (e.g. mergekit_config.yml)")
        text = read_recipe_text(path)
    else:
        text = str(path_or_text)
    docs = load_yaml_documents(text, source=source)
    if not docs:
        raise ConfigError("the config is empty", source=source)
    if len(docs) > 1:
        raise ConfigError("multi-document (mergekit-multi) recipes are not supported yet", source=source,
                          hint="split the stages into separate files and merge them in order")
    return parse_merge_config(docs[0], source=source), text


def _is_file(text: str) -> bool:
    if len(text) > 4096 or "\0" in text:  # recipe text, not a path
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def read_recipe_text(path: Path) -> str:
    """The recipe text of a YAML file, or of the first ```yaml block with ``merge_method`` of a model
    card (README.md); bounded in size (:mod:`mergegate.safe_yaml`).

    Raises:
        ConfigError: too large, not UTF-8, or a card without a recipe block.
    """
    if path.suffix.lower() == ".md":
        card = read_text_bounded(path, max_bytes=MAX_CARD_BYTES, what="model card")
        block = extract_recipe_from_readme(card)
        if block is None:
            raise ConfigError("no ```yaml block with 'merge_method' in this model card", source=str(path))
        return block
    return read_text_bounded(path, max_bytes=MAX_YAML_BYTES, what="recipe")
