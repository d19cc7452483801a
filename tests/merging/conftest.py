"""Fixtures for merge tests: tiny random Llama families and a mergekit reference runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from mergegate.merging.random_models import LlamaShape, make_family

TINY = LlamaShape(hidden=64, intermediate=128, layers=4, heads=4, kv_heads=2, vocab=128)


@pytest.fixture(scope="session")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """base + expert1..3 in bfloat16, plus a float32 pair and a sharded copy."""
    root = tmp_path_factory.mktemp("family")
    base, experts = make_family(root / "bf16", 3, shape=TINY, seed=1)
    base32, experts32 = make_family(root / "fp32", 2, shape=TINY, seed=2, dtype="float32",
                                    shard_bytes=40_000)
    return {"base": base, "e1": experts[0], "e2": experts[1], "e3": experts[2],
            "base32": base32, "f1": experts32[0], "f2": experts32[1]}


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
    return out


def run_mergekit(config: dict, out: Path, seed: int | None = None) -> Path:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    text = yaml.safe_dump(config)
    run_merge(MergeConfiguration.model_validate(yaml.safe_load(text)), str(out),
              options=MergeOptions(copy_tokenizer=False, write_model_card=False, random_seed=seed, quiet=True),
              config_source=text)
    return out


def write_config(config: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
