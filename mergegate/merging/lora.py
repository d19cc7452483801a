"""LoRA adapters of ``model+adapter`` references, applied to the base weights as they are read.

mergekit 0.1.5 (arcee-ai/mergekit mergekit/common.py ``ModelReference.merged``) loads the base
with transformers (``dtype`` left to transformers: the config's dtype), wraps it with
``peft.PeftModel.from_pretrained`` and calls ``merge_and_unload()``, then merges from the saved
result. peft (huggingface/peft src/peft/tuners/lora/layer.py) computes, per adapted module,
``delta = transpose(B @ A, fan_in_fan_out) * scaling`` with ``scaling = lora_alpha / r``
(``lora_alpha / sqrt(r)`` with ``use_rslora``; ``rank_pattern`` / ``alpha_pattern`` per module)
in float32 (adapter weights are up-cast when loaded) and adds it in place: ``W += delta`` for
linear layers, ``W += delta.to(W.dtype)`` for embeddings; ``modules_to_save`` weights replace the
base's. mergegate does the same arithmetic on each tensor as it is read — no transformers, no
peft, no temporary copy of the model — so the merged bytes equal mergekit's.

Adapters are read from ``adapter_model.safetensors`` + ``adapter_config.json`` (peft's format);
a pickled ``adapter_model.bin`` only with ``--allow-pickle`` (then ``weights_only=True``). Hub
adapters are resolved to a commit sha and recorded like models.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mergegate.errors import InputError, ModelFilesError
from mergegate.models.fingerprints import sha256_file
from mergegate.models import AdapterReference
from mergegate.models.weight_files import load_pickled_weights, read_safetensors_header

CONFIG_FILE = "adapter_config.json"
SAFETENSORS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"
PEFT_PREFIX = "base_model.model."

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>A|B)(?:\.[^.]+)?\.weight$")
_EMBED_KEY = re.compile(r"^(?P<module>.+)\.lora_embedding_(?P<part>A|B)(?:\.[^.]+)?$")
_UNSUPPORTED_KEYS = (("lora_magnitude_vector", "DoRA (use_dora)"), ("lora_B.bias", "lora_bias"),
                     ("trainable_tokens", "trainable_token_indices"))


@dataclass(frozen=True)
class LoraDelta:
    """One adapted weight: ``target += transpose(B @ A) * scale``."""

    target: str  # tensor name in the base checkpoint
    a: str  # adapter tensor names
    b: str
    scale: float
    embedding: bool  # peft's Embedding layer: always transposed, delta cast to the weight's dtype
    fan_in_fan_out: bool


@dataclass
class LoraAdapter:
    """A resolved, validated adapter, its tensors in memory (adapters are small)."""

    ref: AdapterReference
    path: Path
    source: str  # "local" or "hub"
    revision: str | None
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    deltas: dict[str, LoraDelta] = field(default_factory=dict)  # target tensor -> delta
    replacements: dict[str, str] = field(default_factory=dict)  # target tensor -> adapter tensor
    file_hashes: dict[str, str] = field(default_factory=dict)

    def provenance(self) -> dict[str, object]:
        return {"id": self.ref.path, "requested_revision": self.ref.revision, "revision": self.revision,
                "source": self.source, "files": dict(self.file_hashes),
                "r": self.config.get("r"), "lora_alpha": self.config.get("lora_alpha"),
                "use_rslora": bool(self.config.get("use_rslora"))}

    def bind(self, base_tensors: set[str], label: str) -> None:
        """Map every adapter tensor onto a base tensor; anything unmappable is an error."""
        self.deltas, self.replacements = _plan_adapter(self, base_tensors, label)


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """peft's ``get_pattern_key``: the first pattern that matches the end of the module name."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return patterns[key]
    return default


def _scale(config: dict[str, Any], module: str) -> float:
    r = _pattern_value(config.get("rank_pattern") or {}, module, config.get("r"))
    alpha = _pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha"))
    if config.get("use_rslora"):
        return alpha / math.sqrt(r)
    return alpha / r


def _plan_adapter(adapter: LoraAdapter, base: set[str], label: str
                  ) -> tuple[dict[str, LoraDelta], dict[str, str]]:
    parts: dict[tuple[str, bool], dict[str, str]] = {}
    replacements: dict[str, str] = {}
    for key in adapter.tensors:
        name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
        for marker, what in _UNSUPPORTED_KEYS:
            if marker in name:
                raise ModelFilesError(f"adapter tensor '{key}' belongs to {what}, which is not supported",
                                      source=str(adapter.ref), field=key,
                                      hint="merge this adapter into its base with peft first and reference "
                                      "the merged model")
        m = _LORA_KEY.match(name) or _EMBED_KEY.match(name)
        if m:
            embedding = m.re is _EMBED_KEY
            parts.setdefault((m["module"], embedding), {})[m["part"]] = key
            continue
        # modules_to_save, and the base weights peft saves with embedding LoRAs (".base_layer."):
        # full replacements of the base weight
        full = name.replace(".base_layer.", ".")
        if full in base:
            replacements[full] = key
            continue
        raise ModelFilesError(f"adapter tensor '{key}' matches no tensor of {label}", source=str(adapter.ref),
                              field=key, hint="the adapter must have been trained on this base model")
    deltas: dict[str, LoraDelta] = {}
    fan_in_fan_out = bool(adapter.config.get("fan_in_fan_out"))
    for (module, embedding), ab in parts.items():
        target = f"{module}.weight"
        if set(ab) != {"A", "B"}:
            raise ModelFilesError(f"adapter has lora_{'/'.join(sorted(ab))} but not both A and B for '{module}'",
                                  source=str(adapter.ref), field=module)
        if target not in base:
            raise ModelFilesError(f"adapter targets '{module}' but {label} has no tensor '{target}'",
                                  source=str(adapter.ref), field=module,
                                  hint="the adapter must have been trained on this base model")
        a, b = adapter.tensors[ab["A"]], adapter.tensors[ab["B"]]
        if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0]:
            raise ModelFilesError(f"lora_A {list(a.shape)} and lora_B {list(b.shape)} of '{module}' do not "
                                  "multiply", source=str(adapter.ref), field=module)
        deltas[target] = LoraDelta(target, ab["A"], ab["B"], _scale(adapter.config, module), embedding,
                                   fan_in_fan_out)
    if not deltas and not replacements:
        raise ModelFilesError("the adapter holds no LoRA weights", source=str(adapter.ref))
    return deltas, replacements


def apply_adapter(adapter: LoraAdapter, name: str, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (owned by the caller, in the model's load dtype) with the adapter applied."""
    if name in adapter.replacements:  # loaded into the layer first; a LoRA on the same layer adds to it
        weight = adapter.tensors[adapter.replacements[name]].to(device=weight.device, dtype=weight.dtype,
                                                                copy=True)
    delta = adapter.deltas.get(name)
    if delta is None:
        return weight
    a, b = adapter.tensors[delta.a], adapter.tensors[delta.b]
    compute = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    product = b.to(weight.device, compute) @ a.to(weight.device, compute)
    if delta.embedding or delta.fan_in_fan_out:
        product = product.T
    product = product * delta.scale
    if tuple(product.shape) != tuple(weight.shape):
        raise ModelFilesError(f"LoRA delta {list(product.shape)} does not fit '{name}' {list(weight.shape)}",
                              source=str(adapter.ref), field=name)
    if delta.embedding:
        weight += product.to(weight.dtype)
    else:
        weight += product
    return weight


# --- reading and resolving ----------------------------------------------------------------------

def _read_config(path: Path, label: str) -> dict[str, Any]:
    file = path / CONFIG_FILE
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFilesError(f"no {CONFIG_FILE}: not a peft adapter", source=label,
                              hint="a LoRA reference model+adapter needs adapter_config.json and "
                              "adapter_model.safetensors (peft's save_pretrained format)") from None
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not JSON or not UTF-8
        raise ModelFilesError(f"cannot read {CONFIG_FILE} ({type(exc).__name__}: {str(exc)[:200]})",
                              source=label) from None
    if not isinstance(config, dict):
        raise ModelFilesError(f"{CONFIG_FILE} is not a JSON object", source=label)
    kind = str(config.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        raise ModelFilesError(f"peft_type '{config.get('peft_type')}' adapters are not supported (only LORA)",
                              source=label, field="peft_type")
    for flag, what in (("use_dora", "DoRA"), ("lora_bias", "lora_bias"),
                       ("trainable_token_indices", "trainable_token_indices")):
        if config.get(flag):
            raise ModelFilesError(f"{what} adapters are not supported", source=label, field=flag,
                                  hint="merge this adapter into its base with peft first and reference the "
                                  "merged model")
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ModelFilesError(f"'{key}' must be a positive number, got {value!r}", source=label, field=key)
    for key in ("rank_pattern", "alpha_pattern"):
        patterns = config.get(key) or {}
        if not isinstance(patterns, dict) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in patterns.values()):
            raise ModelFilesError(f"'{key}' must map module patterns to positive numbers", source=label, field=key)
    return config


def _read_tensors(path: Path, label: str, *, allow_pickle: bool) -> tuple[dict[str, torch.Tensor], Path]:
    st = path / SAFETENSORS_FILE
    if st.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            read_safetensors_header(st)  # strict: a malformed header is refused before any tensor is read
        except ModelFilesError as exc:
            raise ModelFilesError(f"cannot read {SAFETENSORS_FILE} ({exc.message})", source=label, field=exc.field,
                                  hint=exc.hint) from None
        try:
            return load_file(str(st)), st
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFilesError(f"cannot read {SAFETENSORS_FILE} ({exc})", source=label,
                                  hint="re-download the adapter") from None
    pickled = path / PICKLE_FILE
    if pickled.is_file():
        if not allow_pickle:
            raise ModelFilesError(f"the adapter has only a pickled {PICKLE_FILE}", source=label,
                                  hint="convert it to adapter_model.safetensors, or pass --allow-pickle if you "
                                  "trust it (then read with torch.load(weights_only=True))")
        return load_pickled_weights(pickled), pickled  # weights_only=True; a mapping of tensors
    raise ModelFilesError(f"no {SAFETENSORS_FILE} in the adapter directory", source=label,
                          hint="a LoRA adapter is adapter_config.json + adapter_model.safetensors (peft format)")


def load_adapter(ref: AdapterReference, path: Path, *, source: str, revision: str | None,
                 allow_pickle: bool) -> LoraAdapter:
    label = str(ref)
    config = _read_config(path, label)
    tensors, file = _read_tensors(path, label, allow_pickle=allow_pickle)
    for key, t in tensors.items():
        if not t.is_floating_point():
            raise ModelFilesError(f"adapter tensor '{key}' is not floating point ({t.dtype})", source=label,
                                  field=key)
        if not bool(torch.isfinite(t).all()):
            raise ModelFilesError(f"adapter tensor '{key}' contains NaN/Inf", source=label, field=key)
    return LoraAdapter(ref=ref, path=path, source=source, revision=revision, config=config, tensors=tensors,
                       file_hashes={file.name: sha256_file(file), CONFIG_FILE: sha256_file(path / CONFIG_FILE)})


def resolve_adapter(ref: AdapterReference, *, allow_pickle: bool = False, token: str | bool | None = None,
                    cache_dir: str | Path | None = None) -> LoraAdapter:
    """A local adapter directory, or a Hub adapter downloaded at a pinned commit sha."""
    from mergegate.models.resolver import download_pinned

    path = Path(ref.path).expanduser()
    if path.is_dir():
        if ref.revision:
            raise InputError(f"LoRA adapter '{ref}' is a local directory; a revision only applies to Hub ids",
                             field="lora", hint="drop the @revision suffix")
        return load_adapter(ref, path.resolve(), source="local", revision=None, allow_pickle=allow_pickle)
    patterns = [CONFIG_FILE, SAFETENSORS_FILE] + ([PICKLE_FILE] if allow_pickle else [])
    local, sha = download_pinned(ref.path, ref.revision, patterns, what="LoRA adapter", token=token,
                                 cache_dir=cache_dir)
    return load_adapter(ref, local, source="hub", revision=sha, allow_pickle=allow_pickle)


class AdaptedModelReader:
    """A :class:`~mergegate.merging.tensor_io.ModelReader` of the base with the adapter applied.

    Like the model mergekit merges from (saved by transformers after ``merge_and_unload``), every
    floating tensor is in the model's load dtype: the config's ``dtype`` / ``torch_dtype``, which
    transformers >= 5 uses when mergekit passes no dtype (huggingface/transformers
    src/transformers/modeling_utils.py ``_get_dtype``). When the config names none, transformers
    takes the checkpoint's first floating dtype; checkpoints hold one, so the stored dtype is kept.
    """

    def __init__(self, inner: Any, adapter: LoraAdapter, *, load_dtype: torch.dtype | None) -> None:
        self.inner = inner
        self.adapter = adapter
        self.label = f"{inner.label}+{adapter.ref}"
        self.load_dtype = load_dtype
        adapter.bind(set(inner.tensors), inner.label)
        self.tensors = {name: (replace(info, dtype=load_dtype) if load_dtype is not None
                               and info.dtype.is_floating_point else info)
                        for name, info in inner.tensors.items()}

    @property
    def directory(self) -> Path:
        return Path(self.inner.directory)

    def get(self, name: str) -> torch.Tensor:
        t = self.inner.get(name)
        if t.is_floating_point() and self.load_dtype is not None and t.dtype != self.load_dtype:
            t = t.to(self.load_dtype)
        if name in self.adapter.deltas or name in self.adapter.replacements:
            t = apply_adapter(self.adapter, name, t)
        return t


__all__ = ["LoraAdapter", "LoraDelta", "AdaptedModelReader", "apply_adapter", "load_adapter", "resolve_adapter"]
