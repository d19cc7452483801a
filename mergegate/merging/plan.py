"""From a validated recipe and the input headers to one task per output tensor.

Mirrors mergekit 0.1.5's planner: ``models:`` becomes one slice over every model's full layer
range (the base appended when not listed); embeddings are planned from the first slice's sources,
the final norm and head from the last slice's, both at gradient position t=0; layer ``i`` of an
``n``-layer slice is planned at ``t = i/(n-1)`` (``t = 1`` for a one-layer slice). Every shape,
tensor name and parameter is checked here, before a single output byte is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mergegate.errors import ConfigError, ModelFilesError
from mergegate.merging.config import (InputSliceDefinition, MergeConfig, ModelReference,
                                      OutputSliceDefinition)
from mergegate.merging.layers import TIED_ALIASES, Layout, num_layers_from_config, read_layout
from mergegate.merging.methods import get_method
from mergegate.merging.methods.base import BasePolicy, MergeMethod, MethodSpec, Scope
from mergegate.merging.parameters import resolve_parameter
from mergegate.models.resolver import ResolvedModel
from mergegate.merging.tensor_io import ModelReader, OutputTensor
from mergegate.merging.vocab import plan_alignment, vocabulary_axis

if TYPE_CHECKING:
    from mergegate.merging.lora import AdaptedModelReader
    from mergegate.merging.tokenizer_build import TokenizerPlan
    from mergegate.merging.vocab import VocabAlignment

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32,
          "float64": torch.float64, "int64": torch.int64}


@dataclass
class TensorTask:
    """Everything needed to produce one output tensor."""

    out: OutputTensor
    inputs: list[tuple[ModelReference, str]]  # (model, tensor name in that model)
    base_index: int | None
    per_input: list[dict[str, Any]]
    shared: dict[str, Any]
    compute_dtype: torch.dtype
    group: str  # "pre", "layer <n>" or "post"
    vocab: VocabAlignment | None = None  # rebuild the inputs' rows on the output vocabulary first

    @property
    def copy_through(self) -> bool:
        """Integer and bool tensors are copied (every input must hold the same values), never merged."""
        return not self.compute_dtype.is_floating_point


@dataclass
class InputModel:
    model: ResolvedModel
    reader: ModelReader | AdaptedModelReader
    layout: Layout
    config: dict[str, Any]


@dataclass
class MergePlan:
    config: MergeConfig
    method: MergeMethod
    inputs: dict[ModelReference, InputModel]
    tasks: list[TensorTask]
    out_config: dict[str, Any]
    config_source: ModelReference  # whose config.json / tokenizer the output takes
    num_layers: int
    notes: list[str] = field(default_factory=list)
    tokenizer: TokenizerPlan | None = None  # the output tokenizer, when the recipe declares one
    tokenizer_dirs: dict[ModelReference, Path] = field(default_factory=dict)  # sources outside the inputs

    @property
    def total_bytes(self) -> int:
        return sum(t.out.nbytes for t in self.tasks)

    def summary(self) -> str:
        """Human-readable plan for --dry-run."""
        lines = [f"merge_method: {self.config.merge_method} ({self.method.spec.pretty_name})",
                 f"inputs ({len(self.inputs)}):"]
        for ref, im in self.inputs.items():
            pinned = f" @ {im.model.revision}" if im.model.revision else ""
            lines.append(f"  - {ref}{pinned}  [{im.layout.num_layers} layers, {len(im.reader.tensors)} tensors]")
        groups: dict[str, int] = {}
        for t in self.tasks:
            key = "layers" if t.group.startswith("layer") else t.group
            groups[key] = groups.get(key, 0) + 1
        lines.append(f"output: {len(self.tasks)} tensors ({', '.join(f'{k}: {v}' for k, v in groups.items())}), "
                     f"{self.num_layers} layers, {self.total_bytes / 1e9:.3f} GB")
        dtypes = sorted({str(t.out.dtype).removeprefix('torch.') for t in self.tasks})
        lines.append(f"output dtype: {', '.join(dtypes)}; config/tokenizer from: {self.config_source}")
        sample = [t for t in self.tasks if t.group.startswith("layer")][:1] + \
                 [t for t in self.tasks if not t.group.startswith("layer")][:1]
        for t in sample:
            params = {str(m): p for (m, _), p in zip(t.inputs, t.per_input) if p}
            lines.append(f"  e.g. {t.out.name}: {params or ''} {t.shared}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _read_config(model: ResolvedModel) -> dict[str, Any]:
    path = model.path / "config.json"
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError covers JSON and UTF-8 errors
        raise ModelFilesError(f"cannot read config.json ({type(exc).__name__}: {str(exc)[:200]})",
                              source=str(path), hint="re-download the model") from None
    if not isinstance(data, dict):
        raise ModelFilesError("config.json is not a JSON object", source=str(path), hint="re-download the model")
    return data


def load_inputs(models: dict[ModelReference, ResolvedModel], *, allow_pickle: bool) -> dict[ModelReference, InputModel]:
    out: dict[ModelReference, InputModel] = {}
    for ref, model in models.items():
        reader: ModelReader | AdaptedModelReader = ModelReader(model.path, allow_pickle=allow_pickle,
                                                               label=str(ref.base))
        config = _read_config(model)
        if model.adapter is not None:
            from mergegate.merging.lora import AdaptedModelReader

            reader = AdaptedModelReader(reader, model.adapter, load_dtype=config_dtype(config))
        try:
            layout = read_layout(reader.tensors)
        except ValueError as exc:
            raise ModelFilesError(str(exc), source=str(ref)) from None
        if ref.override_architecture:  # mergekit's ModelReference.config() does the same
            config["architectures"] = [ref.override_architecture]
        out[ref] = InputModel(model, reader, layout, config)
    return out


def config_dtype(config: dict[str, Any]) -> torch.dtype | None:
    """The dtype a config.json declares (``dtype``, or ``torch_dtype`` before transformers 4.56)."""
    for key in ("dtype", "torch_dtype"):
        value = config.get(key)
        if isinstance(value, str) and value.removeprefix("torch.") in DTYPES:
            dtype = DTYPES[value.removeprefix("torch.")]
            return dtype if dtype.is_floating_point else None
    return None


def _check_architectures(inputs: dict[ModelReference, InputModel]) -> None:
    archs = {ref: tuple(im.config.get("architectures") or [im.config.get("model_type", "?")])
             for ref, im in inputs.items()}
    if len(set(archs.values())) > 1:
        detail = "; ".join(f"{r}: {', '.join(a)}" for r, a in archs.items())
        raise ModelFilesError(f"the models have different architectures ({detail})", field="models",
                              hint="mergekit needs --allow-crimes for this; mergegate refuses it")


def normalize_slices(config: MergeConfig, inputs: dict[ModelReference, InputModel]) -> list[OutputSliceDefinition]:
    """``models:`` → one slice over every model's full layer range (mergekit's normalisation)."""
    if config.slices:
        return list(config.slices)
    sources = []
    listed = set()
    counts = {}
    for m in config.models or []:
        n = _num_layers(inputs[m.model])
        counts[str(m.model)] = n
        sources.append(InputSliceDefinition(model=m.model, layer_range=(0, n), parameters=m.parameters))
        listed.add(m.model)
    if config.base_model and config.base_model not in listed:
        n = _num_layers(inputs[config.base_model])
        counts[str(config.base_model)] = n
        sources.append(InputSliceDefinition(model=config.base_model, layer_range=(0, n)))
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise ModelFilesError(f"the models have different numbers of layers ({detail})", field="models",
                              hint="use slices: with explicit layer_range to merge models of different depth")
    return [OutputSliceDefinition(sources=sources)]


def _count_phrase(low: int, high: int | None) -> str:
    if low == high:
        return f"exactly {low}"
    return f"at least {low}" if high is None else f"{low} to {high}"


def _check_input_count(spec: MethodSpec, n_inputs: int, n_non_base: int) -> None:
    """mergekit's InputContract: counts of all inputs (the base included) and of non-base inputs."""
    if n_inputs < spec.min_inputs or (spec.max_inputs is not None and n_inputs > spec.max_inputs):
        raise ConfigError(f"merge_method '{spec.name}' takes {_count_phrase(spec.min_inputs, spec.max_inputs)} "
                          f"input models (counting the base), got {n_inputs}", field="models")
    low = spec.min_non_base or 0
    if n_non_base < low or (spec.max_non_base is not None and n_non_base > spec.max_non_base):
        raise ConfigError(f"merge_method '{spec.name}' takes {_count_phrase(low, spec.max_non_base)} "
                          f"model(s) besides the base, got {n_non_base}", field="models")


def _num_layers(im: InputModel) -> int:
    n = num_layers_from_config(im.config)
    return n if n is not None else im.layout.num_layers


def _st(dtype: torch.dtype) -> str:
    from mergegate.models.weight_files import TORCH_TO_ST

    return TORCH_TO_ST.get(dtype, str(dtype).removeprefix("torch."))


def _compute_dtype(out_name: str, refs: list[ModelReference], infos: list[Any],
                   override: torch.dtype | None) -> torch.dtype:
    """The dtype the method computes in: the recipe's ``dtype:``, else the inputs' promoted dtype
    (mergekit 0.1.5 ``LoadTensor`` casts to ``dtype`` when given, else keeps the stored dtype).

    Integer and bool tensors (I8..I64, U8, BOOL) are not merged: mergekit's methods refuse them
    (``linear``: "Linear merging requires floating-point tensors") and its architectures never list
    them; mergegate copies them through when every input holds the same values, in their own dtype.
    """
    dtypes = [info.dtype for info in infos]
    if any(not d.is_floating_point for d in dtypes):
        if len(set(dtypes)) > 1:
            detail = ", ".join(f"{r}: {_st(d)}" for r, d in zip(refs, dtypes))
            raise ModelFilesError(f"tensor {out_name} is stored as {detail}: integer and bool tensors are "
                                  "copied, not merged, so every input must store them alike", field=out_name,
                                  hint="the models do not share an architecture (or one is quantized)")
        return dtypes[0]
    if override is not None:
        return override
    compute = dtypes[0]
    for d in dtypes[1:]:
        try:
            compute = torch.promote_types(compute, d)
        except RuntimeError:  # torch does not promote float8 with anything else
            detail = ", ".join(f"{r}: {_st(d)}" for r, d in zip(refs, dtypes))
            raise ConfigError(f"tensor {out_name} is stored as {detail}, which cannot be combined without a "
                              "compute dtype", field="dtype",
                              hint="add `dtype: bfloat16` (or float32) to the recipe; mergekit needs it too") from None
    return compute


def _check_float8(out_name: str, refs: list[ModelReference], infos: list[Any], compute: torch.dtype,
                  method: str, per_input: list[dict[str, Any]]) -> None:
    """float8 has no arithmetic kernels: only an unscaled passthrough may keep it as it is."""
    from mergegate.models.weight_files import FLOAT8_DTYPES

    if compute not in FLOAT8_DTYPES:
        return
    if method == "passthrough" and all(p.get("scale") is None for p in per_input):
        return
    raise ConfigError(f"tensor {out_name} of {refs[0]} is {_st(compute)}: merging computes on it, and float8 "
                      "has no arithmetic", source=str(refs[0]), field="dtype",
                      hint="add `dtype: bfloat16` (or float32) to the recipe: the inputs are upcast to it, "
                           "as mergekit 0.1.5 does (without it mergekit fails: 'Promotion for Float8 Types "
                           "is not supported')")


def build_plan(config: MergeConfig, inputs: dict[ModelReference, InputModel], *,
               tokenizer_dirs: dict[ModelReference, Path] | None = None) -> MergePlan:
    """Plan every output tensor. ``tokenizer_dirs``: the files of a ``tokenizer_source`` model that
    is not one of the inputs (resolved by the caller)."""
    method = get_method(config.merge_method)
    spec = method.spec
    _check_architectures(inputs)
    slices = normalize_slices(config, inputs)
    tok_plan: TokenizerPlan | None = None
    if config.tokenizer_choice is not None:
        from mergegate.merging.tokenizer_build import build_tokenizer_plan

        tok_plan = build_tokenizer_plan(config, inputs, tokenizer_dirs)
    compute_override = DTYPES[config.dtype] if config.dtype else None
    out_override = DTYPES[config.out_dtype] if config.out_dtype else None
    tasks: list[TensorTask] = []
    notes: list[str] = []

    def slice_base(sl: OutputSliceDefinition) -> ModelReference | None:
        return sl.base_model or config.base_model

    def plan_tensor(out_name: str, sl: OutputSliceDefinition, names: list[str], t: float, group: str) -> None:
        sources = sl.sources
        refs = [s.model for s in sources]
        if len(set(refs)) != len(refs):
            raise ConfigError(f"the same model appears twice among the inputs of {out_name}", field="slices",
                              hint="each model may appear once per slice")
        base = slice_base(sl)
        base_index: int | None = None
        if spec.base is not BasePolicy.IGNORED and base is not None:
            if base not in refs:
                raise ConfigError(f"base_model {base} is not among the sources of the slice producing {out_name}",
                                  field="base_model", hint="add the base model to every slice's sources")
            base_index = refs.index(base)
        if spec.base is BasePolicy.REQUIRED and base_index is None:
            raise ConfigError(f"merge_method '{spec.name}' needs a base model", field="base_model")
        _check_input_count(spec, len(refs), len(refs) - (base_index is not None))
        infos = []
        for ref, name in zip(refs, names):
            info = inputs[ref].reader.tensors.get(name)
            if info is None:
                raise ModelFilesError(f"tensor '{name}' is missing from {ref}", source=str(ref), field=name,
                                      hint="the models must share an architecture and tensor names")
            infos.append(info)
        alignment: VocabAlignment | None = None
        out_shape = infos[0].shape
        detail = ", ".join(f"{r}: {list(i.shape)}" for r, i in zip(refs, infos))
        if tok_plan is not None and vocabulary_axis(out_name) is not None:
            if len({info.shape[1:] for info in infos}) > 1 or not infos[0].shape:
                raise ModelFilesError(f"tensor size mismatch for {out_name} outside the vocabulary axis: {detail}",
                                      field=out_name)
            alignment = plan_alignment(tok_plan, refs, base, [info.shape[0] for info in infos], tensor=out_name)
            out_shape = alignment.output_shape(infos[0].shape)
        elif len({info.shape for info in infos}) > 1:
            vocab = vocabulary_axis(out_name) is not None
            raise ModelFilesError(f"tensor size mismatch for {out_name}: {detail}"
                                  + (" (the vocabularies differ)" if vocab else ""), field=out_name,
                                  hint="set tokenizer_source: union (or base, or one of the models) so the rows "
                                  "are aligned token by token, as mergekit does" if vocab else None)
        compute = _compute_dtype(out_name, refs, infos, compute_override)
        shared_scopes = (sl.parameters, config.module_parameters, config.parameters)
        shared = {p.name: resolve_parameter(p, shared_scopes, tensor_name=out_name, t=t) for p in spec.shared_params}
        per_input = []
        for idx, (src, name) in enumerate(zip(sources, names)):
            scopes = (src.parameters, sl.parameters, config.module_parameters, config.parameters)
            per_input.append({p.name: resolve_parameter(p, scopes, tensor_name=name, t=t, model=str(src.model))
                              for p in spec.input_params
                              if idx != base_index or p.scope is Scope.INPUT})
        out_dtype = compute if not compute.is_floating_point else (out_override or spec.result_dtype(compute))
        _check_float8(out_name, refs, infos, compute, spec.name, per_input)
        if not compute.is_floating_point and spec.name == "passthrough" and any(
                p.get("scale") is not None for p in per_input):
            raise ConfigError(f"passthrough 'scale' applies to floating-point tensors; {out_name} is "
                              f"{_st(compute)}", field="parameters.scale",
                              hint="restrict the scale with a filter (e.g. filter: down_proj)")
        tasks.append(TensorTask(OutputTensor(out_name, out_dtype, out_shape), list(zip(refs, names)),
                                base_index, per_input, shared, compute, group, alignment))

    def plan_outer(names: list[str], sl: OutputSliceDefinition, group: str) -> None:
        for name in names:
            resolved = []
            for s in sl.sources:
                tensors = inputs[s.model].reader.tensors
                if name in tensors:
                    resolved.append(name)
                    continue
                alias = next((a for a in TIED_ALIASES.get(name, ()) if a in tensors), None)
                if alias is None:
                    raise ModelFilesError(f"tensor '{name}' is missing from {s.model}", source=str(s.model),
                                          field=name, hint="the models must share an architecture")
                resolved.append(alias)
            plan_tensor(name, sl, resolved, 0.0, group)

    first, last = slices[0], slices[-1]
    lead = inputs[first.sources[0].model].layout
    pre = list(dict.fromkeys(n for s in first.sources for n in inputs[s.model].layout.pre))
    post = list(dict.fromkeys(n for s in last.sources for n in inputs[s.model].layout.post))
    # an untied head stored by some inputs only: plan it when any source of the last slice has it
    for name in TIED_ALIASES:
        if name not in post and any(name in inputs[s.model].reader.tensors for s in last.sources):
            post.append(name)
    plan_outer(pre, first, "pre")
    out_layer = 0
    out_prefix = lead.prefix
    for sl in slices:
        n = sl.sources[0].layer_range[1] - sl.sources[0].layer_range[0]
        for s in sl.sources:
            have = _num_layers(inputs[s.model])
            if s.layer_range[1] > have:
                raise ConfigError(f"layer_range {list(s.layer_range)} exceeds the {have} layers of {s.model}",
                                  field="slices.sources.layer_range")
        for i in range(n):
            t = i / (n - 1) if n > 1 else 1.0
            suffixes: dict[str, None] = {}  # union over sources, first source's order first
            for s in sl.sources:
                suffixes.update(dict.fromkeys(inputs[s.model].layout.layers.get(s.layer_range[0] + i, [])))
            for suffix in suffixes:
                names = [inputs[s.model].layout.layer_tensor(s.layer_range[0] + i, suffix) for s in sl.sources]
                assert out_prefix is not None
                plan_tensor(f"{out_prefix}{out_layer}.{suffix}", sl, names, t, f"layer {out_layer}")
            out_layer += 1
    plan_outer(post, last, "post")

    source = config.base_model or first.sources[0].model
    if source not in inputs:
        source = first.sources[0].model
    out_config = json.loads(json.dumps(inputs[source].config))
    from mergegate.merging.layers import set_num_layers

    if out_layer != _num_layers(inputs[source]):
        notes.append(f"output has {out_layer} layers (source config had {_num_layers(inputs[source])})")
    set_num_layers(out_config, out_layer)
    dtype_name = config.out_dtype or config.dtype
    if dtype_name:
        out_config["dtype"] = dtype_name  # transformers >= 4.56 reads "dtype"; older ones "torch_dtype"
        if "torch_dtype" in out_config:
            out_config["torch_dtype"] = dtype_name
    if tok_plan is not None:
        set_vocab_size(out_config, tok_plan.rows)
        notes.append(tok_plan.summary())
    names = [t.out.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError("the recipe produces the same output tensor twice", field="slices")
    notes.extend(config.compat_notes)
    return MergePlan(config, method, inputs, tasks, out_config, source, out_layer, notes, tok_plan,
                     dict(tokenizer_dirs or {}))


def set_vocab_size(config: dict[str, Any], rows: int) -> None:
    """mergekit writes the output vocabulary's size (padded) into the config (``_update_config_vocab``)."""
    text = config.get("text_config")
    if "vocab_size" not in config and isinstance(text, dict) and "vocab_size" in text:
        text["vocab_size"] = rows
    else:
        config["vocab_size"] = rows
