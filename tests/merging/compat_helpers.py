"""A tiny model family for the compatibility corpus: bf16 Llama models with character-level
tokenizers (some with added tokens), and LoRA adapters in peft's file format written by hand.

Imported by module name (tests/merging is on sys.path).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mergegate.merging.random_models import LlamaShape, make_family, resize_vocab, write_tokenizer

SHAPE = LlamaShape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=97)
CHATML_LIKE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
               "{% endfor %}")
RECIPES = Path(__file__).parent / "compat_recipes"


def _adapter_config(**overrides: object) -> dict[str, object]:
    config: dict[str, object] = {
        "peft_type": "LORA", "task_type": None, "r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "bias": "none",
        "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "init_lora_weights": True,
        "inference_mode": True, "target_modules": ["q_proj", "v_proj"], "modules_to_save": None,
        "rank_pattern": {}, "alpha_pattern": {}, "base_model_name_or_path": None, "revision": None,
    }
    config.update(overrides)
    return config


def write_lora(path: Path, base: Path, *, dtype: torch.dtype = torch.float32, rank: int = 4,
               modules: tuple[str, ...] = ("self_attn.q_proj", "self_attn.v_proj"),
               rank_pattern: dict[str, int] | None = None, embedding: bool = False,
               lm_head_to_save: bool = False, pickle: bool = False, seed: int = 0,
               **config: object) -> Path:
    """A peft-format adapter for ``base``: random A and B (peft starts B at zero; a trained adapter has not)."""
    state = load_file(str(base / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    p = "base_model.model."
    for layer in range(SHAPE.layers):
        for module in modules:
            name = f"model.layers.{layer}.{module}"
            weight = state[f"{name}.weight"]
            r = next((v for k, v in (rank_pattern or {}).items() if module.endswith(k)), rank)
            tensors[f"{p}{name}.lora_A.weight"] = (torch.randn(r, weight.shape[1], generator=gen) * 0.1).to(dtype)
            tensors[f"{p}{name}.lora_B.weight"] = (torch.randn(weight.shape[0], r, generator=gen) * 0.1).to(dtype)
    targets = sorted({m.split(".")[-1] for m in modules})
    if embedding:  # peft's Embedding LoRA, saved with the base embedding (save_embedding_layers)
        embed = state["model.embed_tokens.weight"]
        tensors[f"{p}model.embed_tokens.lora_embedding_A"] = (
            torch.randn(rank, embed.shape[0], generator=gen) * 0.1).to(dtype)
        tensors[f"{p}model.embed_tokens.lora_embedding_B"] = (
            torch.randn(embed.shape[1], rank, generator=gen) * 0.1).to(dtype)
        tensors[f"{p}model.embed_tokens.base_layer.weight"] = embed.clone()
        targets.append("embed_tokens")
    if lm_head_to_save:
        head = state["lm_head.weight"]
        tensors[f"{p}lm_head.weight"] = (head.float() + 0.01 * torch.randn(head.shape, generator=gen)).to(head.dtype)
    path.mkdir(parents=True, exist_ok=True)
    if pickle:
        torch.save(tensors, path / "adapter_model.bin")
    else:
        save_file(tensors, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = _adapter_config(r=rank, target_modules=targets, rank_pattern=rank_pattern or {},
                          modules_to_save=["lm_head"] if lm_head_to_save else None, **config)
    (path / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return path


def make_compat_family(root: Path) -> dict[str, Path]:
    """base, e1, e2 (same tokenizer as the base), chat (+2 added special tokens), tool (+1 added
    token, one character fewer), padded (same tokenizer, 128 embedding rows) and adapters."""
    base, experts = make_family(root, 5, shape=SHAPE, seed=11)
    e1, e2, chat, tool, padded = experts
    assert write_tokenizer(base) == SHAPE.vocab
    write_tokenizer(e1)
    write_tokenizer(e2)
    resize_vocab(chat, write_tokenizer(chat, added_special=("<|im_start|>", "<|im_end|>"),
                                       chat_template=CHATML_LIKE), seed=1)
    resize_vocab(tool, write_tokenizer(tool, added=("<tool>",), drop=("~",)), seed=2)
    write_tokenizer(padded)
    resize_vocab(padded, 128, seed=3)
    family = {"base": base, "e1": e1, "e2": e2, "chat": chat, "tool": tool, "padded": padded}
    family["lora"] = write_lora(root / "lora", base, embedding=True, lm_head_to_save=True, seed=4)
    family["lora_rs"] = write_lora(root / "lora_rs", e2, dtype=torch.bfloat16, rank=4,
                                   modules=("self_attn.q_proj", "mlp.down_proj"), rank_pattern={"down_proj": 2},
                                   use_rslora=True, lora_alpha=16, alpha_pattern={"q_proj": 6}, seed=5)
    family["lora_bin"] = write_lora(root / "lora_bin", base, pickle=True, seed=6)
    family["lora_dora"] = write_lora(root / "lora_dora", base, use_dora=True, seed=7)
    return family


def render_recipe(path: Path, family: dict[str, Path]) -> str:
    return string.Template(path.read_text()).substitute({k: str(v) for k, v in family.items()})


def expected_refusal(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <message>'"
    return first.removeprefix("# expect: ")
