"""Helpers shared by the merge tests (imported by module name: tests/merging is on sys.path)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from safetensors import safe_open

from mergegate.merging.random_models import LlamaShape

TINY = LlamaShape(hidden=64, intermediate=128, layers=4, heads=4, kv_heads=2, vocab=128)


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
