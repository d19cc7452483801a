"""Tiny random Llama-shaped checkpoints (and tiny tokenizers), written without transformers, for tests,
benchmarks and the example.

``make_family`` builds a base plus "fine-tunes" (base + small random task vectors), which is what
real merges look like: task vectors much smaller than the weights, partly shared between experts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file


@dataclass(frozen=True)
class LlamaShape:
    hidden: int = 64
    intermediate: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    vocab: int = 128

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        head_dim = self.hidden // self.heads
        kv = self.kv_heads * head_dim
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab, self.hidden)}
        for i in range(self.layers):
            p = f"model.layers.{i}."
            shapes.update({
                p + "input_layernorm.weight": (self.hidden,),
                p + "self_attn.q_proj.weight": (self.hidden, self.hidden),
                p + "self_attn.k_proj.weight": (kv, self.hidden),
                p + "self_attn.v_proj.weight": (kv, self.hidden),
                p + "self_attn.o_proj.weight": (self.hidden, self.hidden),
                p + "post_attention_layernorm.weight": (self.hidden,),
                p + "mlp.gate_proj.weight": (self.intermediate, self.hidden),
                p + "mlp.up_proj.weight": (self.intermediate, self.hidden),
                p + "mlp.down_proj.weight": (self.hidden, self.intermediate),
            })
        shapes["model.norm.weight"] = (self.hidden,)
        shapes["lm_head.weight"] = (self.vocab, self.hidden)
        return shapes

    def config(self, dtype: str) -> dict[str, object]:
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": self.hidden, "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "vocab_size": self.vocab,
            "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "hidden_act": "silu",
            "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": dtype,
        }

    @property
    def num_params(self) -> int:
        total = 0
        for shape in self.tensor_shapes().values():
            n = 1
            for d in shape:
                n *= d
            total += n
        return total


def shape_for_params(target: int, *, layers: int = 8, vocab: int = 32000) -> LlamaShape:
    """The smallest Llama shape (hidden size a multiple of 64) with at least ``target`` parameters."""

    def shape(hidden: int) -> LlamaShape:
        return LlamaShape(hidden=hidden, intermediate=hidden * 8 // 3 // 64 * 64, layers=layers,
                          heads=max(1, hidden // 64), kv_heads=max(1, hidden // 128), vocab=vocab)

    hidden = 64
    while shape(hidden).num_params < target:
        hidden += 64
    return shape(hidden)


def _save(path: Path, state: dict[str, torch.Tensor], shape: LlamaShape, dtype: str, shard_bytes: int | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(shape.config(dtype), indent=2))
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    if shard_bytes is None:
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def make_family(root: str | Path, n_experts: int = 3, *, shape: LlamaShape | None = None, seed: int = 0,
                dtype: str = "bfloat16", task_scale: float = 0.02, shared_scale: float = 0.01,
                shard_bytes: int | None = None) -> tuple[Path, list[Path]]:
    """Write ``root/base`` and ``root/expert{i}``; returns their paths."""
    shape = shape or LlamaShape()
    tdtype = getattr(torch, dtype)
    root = Path(root)
    gen = torch.Generator().manual_seed(seed)
    base: dict[str, torch.Tensor] = {}
    for name, s in shape.tensor_shapes().items():
        if len(s) == 1:
            base[name] = 1.0 + 0.1 * torch.randn(s, generator=gen)
        else:
            base[name] = torch.randn(s, generator=gen) * (1.0 / s[-1] ** 0.5)
    shared = {n: torch.randn(t.shape, generator=gen) for n, t in base.items()}
    _save(root / "base", {n: t.to(tdtype) for n, t in base.items()}, shape, dtype, shard_bytes)
    experts = []
    for e in range(n_experts):
        state = {}
        for n, t in base.items():
            scale = t.abs().mean()
            delta = task_scale * torch.randn(t.shape, generator=gen) + shared_scale * shared[n]
            state[n] = (t + scale * delta).to(tdtype)
        path = root / f"expert{e + 1}"
        _save(path, state, shape, dtype, shard_bytes)
        experts.append(path)
    return root / "base", experts


# --- tiny tokenizers, for recipes that align vocabularies -----------------------------------------

TOKENIZER_CHARS = [chr(i) for i in range(33, 127)]  # printable ASCII without space: 94 tokens
TOKENIZER_SPECIALS = ["<unk>", "<s>", "</s>"]


def write_tokenizer(path: str | Path, *, added_special: tuple[str, ...] = (), added: tuple[str, ...] = (),
                    chat_template: str | None = None, drop: tuple[str, ...] = ()) -> int:
    """A character-level BPE tokenizer (``tokenizer.json`` + ``tokenizer_config.json``) written with
    the ``tokenizers`` library only: 3 specials + 94 characters (minus ``drop``), then the added
    tokens. Returns its length (the ``vocab_size`` a matching model needs)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    path = Path(path)
    chars = [c for c in TOKENIZER_CHARS if c not in drop]
    vocab = {t: i for i, t in enumerate(TOKENIZER_SPECIALS + chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in TOKENIZER_SPECIALS])
    if added_special:
        tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in added_special])
    if added:
        tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in added])
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    config: dict[str, object] = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
                                 "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": 256}
    if chat_template is not None:
        config["chat_template"] = chat_template
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return int(tok.get_vocab_size(with_added_tokens=True))


def resize_vocab(path: str | Path, rows: int, *, seed: int = 0) -> None:
    """Give a single-file model ``rows`` embedding / LM-head rows (new rows random, like a
    fine-tune's added tokens) and set ``vocab_size`` in its config."""
    from safetensors.torch import load_file

    path = Path(path)
    state = load_file(str(path / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        t = state[name]
        if rows > t.shape[0]:
            extra = torch.randn(rows - t.shape[0], *t.shape[1:], generator=gen) * float(t.float().std())
            state[name] = torch.cat([t, extra.to(t.dtype)])
        else:
            state[name] = t[:rows].clone()
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    config["vocab_size"] = rows
    (path / "config.json").write_text(json.dumps(config, indent=2))
