"""Architecture-agnostic view of a checkpoint: which tensors belong to which decoder layer.

mergekit keeps one JSON definition per architecture; mergegate reads the layout off the tensor
names instead (``<prefix><index>.<suffix>`` under ``layers``/``h``/``blocks``/``layer``), which covers
Llama, Mistral, Qwen, Gemma, Phi, GPT-2/NeoX-style checkpoints alike. Tensors outside the layers
are "pre" (embeddings, before the layers) or "post" (final norm, lm_head).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_LAYER_RE = re.compile(r"^(?P<prefix>(?:.*\.)?(?:layers|h|blocks|layer|decoder_layers)\.)(?P<idx>\d+)\.(?P<suffix>.+)$")
_PRE_MARKERS = ("embed", "wte", "wpe", "word_embeddings", "tok_embeddings")
# tied input/output embeddings: an output head may be stored only as the input embedding
TIED_ALIASES = {"lm_head.weight": ("model.embed_tokens.weight", "transformer.wte.weight", "embed_tokens.weight")}
NUM_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


@dataclass
class Layout:
    prefix: str | None = None  # e.g. "model.layers."
    layers: dict[int, list[str]] = field(default_factory=dict)  # index -> suffixes in file order
    pre: list[str] = field(default_factory=list)
    post: list[str] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return (max(self.layers) + 1) if self.layers else 0

    def layer_tensor(self, index: int, suffix: str) -> str:
        assert self.prefix is not None
        return f"{self.prefix}{index}.{suffix}"


def is_pre(name: str) -> bool:
    return any(marker in name for marker in _PRE_MARKERS)


def read_layout(names: Iterable[str]) -> Layout:
    layout = Layout()
    prefixes: set[str] = set()
    for name in names:
        m = _LAYER_RE.match(name)
        if m:
            prefixes.add(m["prefix"])
            layout.layers.setdefault(int(m["idx"]), []).append(m["suffix"])
        elif is_pre(name):
            layout.pre.append(name)
        else:
            layout.post.append(name)
    if len(prefixes) > 1:
        # e.g. an encoder-decoder or vision tower: several stacks of layers
        raise ValueError(f"several layer stacks ({', '.join(sorted(prefixes))}); multi-module models are "
                         "not supported yet")
    layout.prefix = next(iter(prefixes), None)
    return layout


def num_layers_from_config(config: dict) -> int | None:
    for key in NUM_LAYER_KEYS:
        if isinstance(config.get(key), int):
            return int(config[key])
    text = config.get("text_config")
    if isinstance(text, dict):
        return num_layers_from_config(text)
    return None


def set_num_layers(config: dict, n: int) -> None:
    for key in NUM_LAYER_KEYS:
        if key in config:
            config[key] = n
            return
    config["num_hidden_layers"] = n
