"""Output layout: shards and index, config/tokenizer/generation config, recipe and provenance, dry run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

from mergegate.cli.main import main
from mergegate.merging import run_merge

from merge_helpers import load_dir, write_config


def _recipe(f: dict[str, Path]) -> dict:
    return {"merge_method": "task_arithmetic", "base_model": str(f["base"]), "dtype": "bfloat16",
            "models": [{"model": str(f["e1"]), "parameters": {"weight": 0.5}},
                       {"model": str(f["e2"]), "parameters": {"weight": 0.5}}]}


def test_sharded_output_with_index(family, tmp_path):
    (family["base"] / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}))
    result = run_merge(_recipe(family), tmp_path / "out", out_shard_size="40K")
    out = result.out_dir
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 3 and all(s.name.endswith(f"-of-{len(shards):05d}.safetensors") for s in shards)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    assert index["metadata"]["total_size"] == result.total_bytes
    for shard in shards:
        with safe_open(str(shard), "pt") as f:
            assert f.metadata() == {"format": "pt"}
            assert all(index["weight_map"][k] == shard.name for k in f.keys())
    assert set(result.files) == {s.name for s in shards}
    # same tensors as a single-shard merge
    single = load_dir(run_merge(_recipe(family), tmp_path / "single").out_dir)
    sharded = load_dir(out)
    assert single.keys() == sharded.keys() and all(single[k].equal(sharded[k]) for k in single)
    # config, tokenizer, generation config, recipe, provenance
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 4 and config["torch_dtype"] == "bfloat16"
    assert (out / "tokenizer_config.json").is_file() and (out / "generation_config.json").is_file()
    assert yaml.safe_load((out / "mergekit_config.yml").read_text())["merge_method"] == "task_arithmetic"
    prov = json.loads((out / "mergegate_provenance.json").read_text())
    assert {Path(i["id"]).name for i in prov["inputs"]} == {"base", "expert1", "expert2"}
    assert all(len(h) == 64 for i in prov["inputs"] for h in i["files"].values())
    (family["base"] / "tokenizer_config.json").unlink()


def test_frankenmerge_layer_count_and_names(family, tmp_path):
    recipe = {"merge_method": "passthrough", "slices": [
        {"sources": [{"model": str(family["e1"]), "layer_range": [0, 3]}]},
        {"sources": [{"model": str(family["e2"]), "layer_range": [1, 4]}]}]}
    out = run_merge(recipe, tmp_path / "out").out_dir
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 6
    merged, e1, e2 = load_dir(out), load_dir(family["e1"]), load_dir(family["e2"])
    assert merged["model.layers.2.mlp.up_proj.weight"].equal(e1["model.layers.2.mlp.up_proj.weight"])
    assert merged["model.layers.3.mlp.up_proj.weight"].equal(e2["model.layers.1.mlp.up_proj.weight"])
    assert merged["model.layers.5.mlp.up_proj.weight"].equal(e2["model.layers.3.mlp.up_proj.weight"])
    assert merged["lm_head.weight"].equal(e2["lm_head.weight"])  # post weights from the last slice
    assert merged["model.embed_tokens.weight"].equal(e1["model.embed_tokens.weight"])


def test_chat_template_literal_is_written(family, tmp_path):
    recipe = {**_recipe(family), "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}
    out = run_merge(recipe, tmp_path / "out").out_dir
    assert (out / "chat_template.jinja").read_text().startswith("{% for m in messages")


def test_cli_merge_and_dry_run(family, tmp_path, capsys):
    cfg = write_config(_recipe(family), tmp_path / "recipe.yml")
    assert main(["merge", str(cfg), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "task_arithmetic" in plan and "output:" in plan and "expert1" in plan
    assert not (tmp_path / "out").exists()
    assert main(["merge", str(cfg), str(tmp_path / "out"), "--out-shard-size", "100K"]) == 0
    assert "merged" in capsys.readouterr().out
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    assert (tmp_path / "out" / "mergekit_config.yml").read_text() == cfg.read_text()


def test_cuda_without_gpu_is_bad_input(family, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    cfg = write_config(_recipe(family), tmp_path / "recipe.yml")
    assert main(["merge", str(cfg), str(tmp_path / "out"), "--device", "cuda"]) == 2
    assert "CUDA" in capsys.readouterr().err


@pytest.mark.gpu
def test_cuda_merge_matches_cpu(family, tmp_path):
    cpu = load_dir(run_merge(_recipe(family), tmp_path / "cpu").out_dir)
    gpu = load_dir(run_merge(_recipe(family), tmp_path / "gpu", device="cuda").out_dir)
    for k in cpu:
        assert (cpu[k].float() - gpu[k].float()).abs().max() < 2e-2
