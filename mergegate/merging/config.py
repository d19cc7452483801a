"""Typed model of a mergekit merge recipe (mergekit 0.1.5's ``MergeConfiguration``).

Reads every single-document form mergekit accepts: ``models`` or ``slices`` (with ``sources`` and
``layer_range``), the single-module ``modules: {default: …}`` form, ``base_model``,
``merge_method``, global / module / per-model / per-slice ``parameters``, filtered parameters
(``- filter: self_attn`` / ``value: …``), gradient lists, ``dtype``, ``out_dtype``,
``tokenizer_source`` / ``tokenizer`` (with the legacy ``model:<id>`` source), ``chat_template``
(``auto``, a named template or a literal one), ``model@revision`` and ``model+lora`` references.
Keys mergekit ignores are ignored here too, each named in a warning
(:mod:`mergegate.merging.recipe_compat`); impossible values are a
:class:`~mergegate.errors.ConfigError` naming the field, raised before anything is downloaded.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from typing import Annotated

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError,
                      SerializationInfo, SerializerFunctionWrapHandler, ValidationInfo, field_validator,
                      model_serializer, model_validator)

from mergegate.errors import ConfigError
from mergegate.models.reference import AdapterReference, ModelReference  # noqa: F401 - re-exported
from mergegate.safe_yaml import MAX_CARD_BYTES, MAX_YAML_BYTES, load_yaml_documents, read_text_bounded

log = logging.getLogger(__name__)
_NORMALIZED = "mergegate.recipe_compat.done"  # validation context: the pre-pass already ran

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


def _coerce_tokenizer_source(value: Any) -> Any:
    """``union`` / ``base`` / a model reference (mergekit 0.1.5's ``tokenizer_source`` type)."""
    if value is None or value in ("union", "base"):
        return value
    return _coerce_model(value)


TokenizerSource = Annotated[Union[Literal["union", "base"], ModelReference],
                            BeforeValidator(_coerce_tokenizer_source)]


class ModelTokenEmbedding(BaseModel):
    """A new token's embedding row taken from one token of one input (``kind: model_token``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["model_token"]
    model: ModelRef
    token_id: int | None = None
    token: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ModelTokenEmbedding:
        if (self.token_id is None) == (self.token is None):
            raise ValueError("give exactly one of 'token_id' or 'token'")
        if self.token_id is not None and self.token_id < 0:
            raise ValueError(f"token_id must be >= 0, got {self.token_id}")
        return self


class ZeroEmbedding(BaseModel):
    """A new token's embedding row set to zeros (``kind: zero``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["zero"]


def _coerce_token_source(value: Any) -> Any:
    if value is None or isinstance(value, (ModelTokenEmbedding, ZeroEmbedding)):
        return value
    if isinstance(value, dict) and "kind" in value:
        kind = value["kind"]
        if kind == "zero":
            return ZeroEmbedding.model_validate(value)
        if kind == "model_token":
            return ModelTokenEmbedding.model_validate(value)
        raise ValueError(f"unknown embedding source kind {kind!r}; use 'model_token' or 'zero'")
    return _coerce_model(value)


class TokenEmbeddingConfig(BaseModel):
    """How one token's embedding row is made (mergekit's ``tokenizer.tokens.<token>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Annotated[Union[ModelTokenEmbedding, ZeroEmbedding, ModelReference, None],
                      BeforeValidator(_coerce_token_source)] = None
    force: bool = False


class TokenizerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: TokenizerSource = "union"
    tokens: dict[str, TokenEmbeddingConfig] | None = None
    pad_to_multiple_of: int | None = None

    @field_validator("pad_to_multiple_of")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError(f"pad_to_multiple_of must be a positive integer, got {v}")
        return v


class MergeConfig(BaseModel):
    """One merge recipe. Field names and semantics are mergekit 0.1.5's.

    The single-module form ``modules: {default: …}`` is read as the plain recipe:
    ``module_parameters`` holds that module's ``parameters`` (precedence between the slices' and
    the top-level ones, as in mergekit's ``ConfigReader``). ``compat_notes`` lists what was read
    leniently (ignored keys, legacy forms); neither is serialized.
    """

    model_config = ConfigDict(extra="forbid")

    merge_method: str
    models: list[InputModelDefinition] | None = None
    slices: list[OutputSliceDefinition] | None = None
    base_model: ModelReference | None = None
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: TokenizerSource | None = None
    tokenizer: TokenizerConfig | None = None
    chat_template: str | None = None
    parameters: ParamsField = None
    module_parameters: ParamsField = Field(default=None, exclude=True)
    name: str | None = None  # multi-document (mergekit-multi) stage name; informational here
    compat_notes: list[str] = Field(default_factory=list, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _read_leniently(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or (info.context or {}).get(_NORMALIZED):
            return data
        from mergegate.merging.recipe_compat import normalize_recipe

        out, notes = normalize_recipe(data)
        out["compat_notes"] = [str(n) for n in notes]
        return out

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

    @field_validator("chat_template")
    @classmethod
    def _chat_template(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from mergegate.merging.chat_templates import TemplateKind, classify, syntax_problem

        if classify(v) is TemplateKind.LITERAL and (problem := syntax_problem(v)):
            log.warning("chat_template is not valid Jinja (%s); it is written as given, as mergekit does, "
                        "but rendering it will fail", problem)
        return v

    @model_validator(mode="after")
    def _shape(self) -> MergeConfig:
        given = [k for k in ("models", "slices") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("exactly one of 'models', 'slices' or 'modules' must be given (and not empty)")
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
                log.warning("parameter '%s' is not used by merge_method '%s' (mergekit ignores it too)",
                            name, self.merge_method)
        return self

    @model_serializer(mode="wrap")
    def _mergekit_shape(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        data = handler(self)
        if self.module_parameters and isinstance(data, dict):  # only modules: says where these apply
            module = {key: data.pop(key) for key in ("models", "slices") if key in data}
            module["parameters"] = TypeAdapter(Parameters).dump_python(
                self.module_parameters, mode=info.mode, exclude_none=info.exclude_none)
            data["modules"] = {"default": module}
        return data

    @property
    def tokenizer_choice(self) -> Literal["union", "base"] | ModelReference | None:
        """The declared tokenizer source (``tokenizer.source`` or ``tokenizer_source``), or None."""
        return self.tokenizer.source if self.tokenizer is not None else self.tokenizer_source

    def _parameter_names(self) -> set[str]:
        names = set(self.parameters or {}) | set(self.module_parameters or {})
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


def check_recipe_size(data: dict[str, Any], *, source: str, _prefix: str = "") -> None:
    """Refuse a recipe with an absurd number of models or slices before anything walks it (the
    modules of a ``modules:`` recipe included).

    Raises:
        ConfigError: naming the field and the limit (exit code 2).
    """
    hint = "a merge of this size is not practical; split it or check the generator of the recipe"
    models = data.get("models")
    if isinstance(models, list) and len(models) > MAX_RECIPE_MODELS:
        raise ConfigError(f"{len(models):,} models (at most {MAX_RECIPE_MODELS:,})", source=source,
                          field=f"{_prefix}models", hint=hint)
    slices = data.get("slices")
    if isinstance(slices, list):
        if len(slices) > MAX_RECIPE_SLICES:
            raise ConfigError(f"{len(slices):,} slices (at most {MAX_RECIPE_SLICES:,})", source=source,
                              field=f"{_prefix}slices", hint=hint)
        for i, sl in enumerate(slices):
            sources = sl.get("sources") if isinstance(sl, dict) else None
            if isinstance(sources, list) and len(sources) > MAX_RECIPE_MODELS:
                raise ConfigError(f"{len(sources):,} sources in one slice (at most {MAX_RECIPE_MODELS:,})",
                                  source=source, field=f"{_prefix}slices[{i}].sources", hint=hint)
    modules = data.get("modules") if not _prefix else None
    if isinstance(modules, dict):
        if len(modules) > MAX_RECIPE_MODELS:
            raise ConfigError(f"{len(modules):,} modules (at most {MAX_RECIPE_MODELS:,})", source=source,
                              field="modules", hint=hint)
        for name, module in modules.items():
            if isinstance(module, dict):
                check_recipe_size(module, source=source, _prefix=f"modules.{name}.")


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
    from mergegate.merging.recipe_compat import normalize_recipe

    try:
        normalized, notes = normalize_recipe(data)
    except ConfigError as exc:
        raise ConfigError(exc.message, source=source, field=exc.field, hint=exc.hint) from None
    for note in notes:
        log.warning("%s: %s", source, note)
    try:
        config = MergeConfig.model_validate(normalized, context={_NORMALIZED: True})
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
    config.compat_notes = [str(n) for n in notes]
    return config


def read_recipe_text(path_or_text: str | Path) -> tuple[str, str]:
    """The recipe text and where it came from: a YAML file, a model card (README.md holding a YAML
    block with ``merge_method``) or YAML text itself. Returns ``(text, source)``."""
    if isinstance(path_or_text, Path) or ("\n" not in str(path_or_text) and ":" not in str(path_or_text)
                                           or _is_file(str(path_or_text))):
        path = Path(path_or_text)
        source = str(path)
        if not path.is_file():
            raise ConfigError("config file not found", source=source,
                              hint="pass the path of a mergekit YAML (e.g. mergekit_config.yml)")
        text = read_recipe_file(path)
        return text, source
    return str(path_or_text), "<config>"


def _is_file(text: str) -> bool:
    if len(text) > 4096 or "\0" in text:  # recipe text, not a path
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def read_recipe_file(path: Path) -> str:
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


def load_recipe_document(text: str, *, source: str = "<config>") -> Any:
    """Decode the one YAML document of a recipe: bounded YAML (:func:`mergegate.safe_yaml.load_yaml_documents`:
    size, alias expansion, depth; safe loader), multi-document recipes refused, and a mapping's
    model and slice counts checked (:func:`check_recipe_size`). The one loader of both the engine
    (:func:`load_merge_config`) and the tolerant reading (:mod:`mergegate.merging.recipe`).

    Raises:
        ConfigError: not YAML, beyond a limit, empty, or several documents (exit code 2).
    """
    docs = [d for d in load_yaml_documents(text, source=source) if d is not None]
    if not docs:
        raise ConfigError("the config is empty", source=source)
    if len(docs) > 1:
        raise ConfigError(f"multi-document YAML ({len(docs)} documents separated by --- lines) is a mergekit-multi "
                          "recipe; mergekit-yaml refuses it and mergegate does not run multi-stage merges yet",
                          source=source, hint="split the stages into separate files and merge them in order, "
                          "pointing each later stage at the earlier stage's output directory")
    if isinstance(docs[0], dict):
        check_recipe_size(docs[0], source=source)
    return docs[0]


def load_merge_config(path_or_text: str | Path | dict[str, Any]) -> tuple[MergeConfig, str]:
    """Read a recipe from a YAML file, a model card (README.md with a YAML block), YAML text or a dict.

    Returns the typed config and the recipe text as written (kept for the model card).
    """
    if isinstance(path_or_text, dict):
        return parse_merge_config(path_or_text), yaml.safe_dump(path_or_text, sort_keys=False)
    text, source = read_recipe_text(path_or_text)
    return parse_merge_config(load_recipe_document(text, source=source), source=source), text
