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
from typing import Any

import torch

from mergegate.errors import ConfigError, ModelFilesError
from mergegate.merging.config import (InputSliceDefinition, MergeConfig, ModelReference,
                                      OutputSliceDefinition)
from mergegate.merging.layers import TIED_ALIASES, Layout, num_layers_from_config, read_layout
from mergegate.merging.methods import get_method
from mergegate.merging.methods.base import BasePolicy, MergeMethod, MethodSpec, Scope
from mergegate.merging.parameters import resolve_parameter
from mergegate.merging.resolver import ResolvedModel
from mergegate.merging.tensor_io import ModelReader, OutputTensor

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


@dataclass
class InputModel:
    model: ResolvedModel
    reader: ModelReader
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
    try:
        return json.loads((model.path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelFilesError(f"cannot read config.json ({exc})", source=str(model.path)) from None


def load_inputs(models: dict[ModelReference, ResolvedModel], *, allow_pickle: bool) -> dict[ModelReference, InputModel]:
    out: dict[ModelReference, InputModel] = {}
    for ref, model in models.items():
        reader = ModelReader(model.path, allow_pickle=allow_pickle, label=str(ref))
        try:
            layout = read_layout(reader.tensors)
        except ValueError as exc:
            raise ModelFilesError(str(exc), source=str(ref)) from None
        out[ref] = InputModel(model, reader, layout, _read_config(model))
    return out


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


def build_plan(config: MergeConfig, inputs: dict[ModelReference, InputModel]) -> MergePlan:
    method = get_method(config.merge_method)
    spec = method.spec
    _check_architectures(inputs)
    slices = normalize_slices(config, inputs)
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
        shapes = {info.shape for info in infos}
        if len(shapes) > 1:
            detail = ", ".join(f"{r}: {list(i.shape)}" for r, i in zip(refs, infos))
            vocab = " (vocabulary sizes differ; tokenizer alignment is not supported yet)" \
                if any(k in out_name for k in ("embed", "lm_head", "wte")) else ""
            raise ModelFilesError(f"tensor size mismatch for {out_name}: {detail}{vocab}", field=out_name)
        compute = compute_override
        if compute is None:
            compute = infos[0].dtype
            for i in infos[1:]:
                compute = torch.promote_types(compute, i.dtype)
        shared_scopes = (sl.parameters, config.parameters)
        shared = {p.name: resolve_parameter(p, shared_scopes, tensor_name=out_name, t=t) for p in spec.shared_params}
        per_input = []
        for idx, (src, name) in enumerate(zip(sources, names)):
            scopes = (src.parameters, sl.parameters, config.parameters)
            per_input.append({p.name: resolve_parameter(p, scopes, tensor_name=name, t=t, model=str(src.model))
                              for p in spec.input_params
                              if idx != base_index or p.scope is Scope.INPUT})
        out_dtype = out_override or spec.result_dtype(compute)
        tasks.append(TensorTask(OutputTensor(out_name, out_dtype, infos[0].shape), list(zip(refs, names)),
                                base_index, per_input, shared, compute, group))

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
    names = [t.out.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError("the recipe produces the same output tensor twice", field="slices")
    return MergePlan(config, method, inputs, tasks, out_config, source, out_layer, notes)
