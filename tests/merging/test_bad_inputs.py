"""Every bad input the merge engine handles: a clear error naming the file/field, exit code 2, and
no output directory left behind that could pass for a finished merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mergegate.cli.main import main
from mergegate.errors import ConfigError, InputError, ModelFilesError
from mergegate.merging import run_merge
from mergegate.merging.config import load_merge_config
from mergegate.merging.random_models import LlamaShape, make_family

from merge_helpers import TINY, write_config


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    base, (e1, e2) = make_family(tmp_path / "m", 2, shape=TINY, seed=5)
    return base, e1, e2


def _ta(base: Path, *experts: Path) -> dict:
    return {"merge_method": "task_arithmetic", "base_model": str(base),
            "models": [{"model": str(e), "parameters": {"weight": 0.5}} for e in experts]}


def _assert_no_output(out: Path) -> None:
    assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    assert leftovers == []


def _rewrite(model: Path, fn) -> None:
    file = model / "model.safetensors"
    state = load_file(str(file))
    fn(state)
    save_file(state, str(file), metadata={"format": "pt"})


def test_shape_mismatch(pair, tmp_path):
    base, e1, _ = pair
    _rewrite(e1, lambda s: s.__setitem__("model.layers.0.mlp.up_proj.weight", torch.zeros(64, 64, dtype=torch.bfloat16)))
    with pytest.raises(ModelFilesError, match=r"size mismatch for model\.layers\.0\.mlp\.up_proj\.weight"):
        run_merge(_ta(base, e1), tmp_path / "out")
    _assert_no_output(tmp_path / "out")


def test_vocab_mismatch_mentions_vocabulary(pair, tmp_path):
    base, e1, _ = pair
    _rewrite(e1, lambda s: s.__setitem__("model.embed_tokens.weight", torch.zeros(130, 64, dtype=torch.bfloat16)))
    with pytest.raises(ModelFilesError, match="the vocabularies differ") as exc:
        run_merge(_ta(base, e1), tmp_path / "out")
    assert "tokenizer_source: union" in (exc.value.hint or "")


def test_missing_tensor(pair, tmp_path):
    base, e1, _ = pair
    _rewrite(e1, lambda s: s.pop("model.layers.2.self_attn.k_proj.weight"))
    with pytest.raises(ModelFilesError, match=r"model\.layers\.2\.self_attn\.k_proj\.weight' is missing") as exc:
        run_merge(_ta(base, e1), tmp_path / "out")
    assert str(e1) in exc.value.render()
    _assert_no_output(tmp_path / "out")


def test_architecture_mismatch(pair, tmp_path):
    base, e1, _ = pair
    cfg = json.loads((e1 / "config.json").read_text())
    cfg["architectures"] = ["MistralForCausalLM"]
    (e1 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFilesError, match="different architectures"):
        run_merge(_ta(base, e1), tmp_path / "out")


def test_layer_count_mismatch(pair, tmp_path):
    base, _, _ = pair
    deep, (deep_e,) = make_family(tmp_path / "deep", 1, shape=LlamaShape(hidden=64, intermediate=128, layers=5,
                                                                          heads=4, kv_heads=2, vocab=128), seed=9)
    with pytest.raises(ModelFilesError, match="different numbers of layers"):
        run_merge(_ta(base, deep_e), tmp_path / "out")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_in_inputs(pair, tmp_path, bad):
    base, e1, e2 = pair

    def poison(state):
        t = state["model.layers.3.mlp.down_proj.weight"].clone()
        t[0, 0] = bad
        state["model.layers.3.mlp.down_proj.weight"] = t

    _rewrite(e2, poison)
    with pytest.raises(ModelFilesError, match="NaN/Inf") as exc:
        run_merge(_ta(base, e1, e2), tmp_path / "out")
    assert "model.layers.3.mlp.down_proj.weight" in exc.value.render()
    assert str(e2) in exc.value.render()
    _assert_no_output(tmp_path / "out")


def test_truncated_safetensors(pair, tmp_path):
    base, e1, _ = pair
    file = e1 / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelFilesError, match="truncated") as exc:
        run_merge(_ta(base, e1), tmp_path / "out")
    assert "model.safetensors" in exc.value.render() and "re-download" in exc.value.render()
    _assert_no_output(tmp_path / "out")


@pytest.mark.parametrize("garbage", [b"\xff" * 8 + b"{}", b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"])
def test_corrupt_safetensors_header(pair, tmp_path, garbage):
    base, e1, _ = pair
    (e1 / "model.safetensors").write_bytes(garbage)
    with pytest.raises(ModelFilesError, match="corrupt|truncated"):
        run_merge(_ta(base, e1), tmp_path / "out")


def test_missing_shard_listed_in_index(tmp_path):
    base, (e1,) = make_family(tmp_path / "m", 1, shape=TINY, seed=2, shard_bytes=40_000)
    shard = sorted(e1.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(ModelFilesError, match="missing"):
        run_merge(_ta(base, e1), tmp_path / "out")


def test_no_weights_only_bin_is_refused(pair, tmp_path):
    base, e1, _ = pair
    state = load_file(str(e1 / "model.safetensors"))
    (e1 / "model.safetensors").unlink()
    torch.save(state, e1 / "pytorch_model.bin")
    with pytest.raises(ModelFilesError, match="pickled"):
        run_merge(_ta(base, e1), tmp_path / "out")
    # opting in reads it with weights_only=True
    result = run_merge(_ta(base, e1), tmp_path / "out", allow_pickle=True)
    assert (result.out_dir / "model.safetensors").is_file()


def test_failed_merge_keeps_previous_output_intact(pair, tmp_path):
    base, e1, e2 = pair
    out = tmp_path / "out"
    good = run_merge(_ta(base, e1), out)
    before = dict(good.files)
    _rewrite(e2, lambda s: s.pop("model.layers.0.mlp.up_proj.weight"))
    with pytest.raises(ModelFilesError):
        run_merge(_ta(base, e1, e2), out)
    assert json.loads((out / "mergegate_provenance.json").read_text())["outputs"] == before


# --- config errors: named field, exit code 2, before any model is touched -------------------------

@pytest.mark.parametrize("config, field, message", [
    ({"merge_method": "linear", "modules": {"text": {"models": [{"model": "a/b"}]}, "vision": {"models": [
        {"model": "a/b"}]}}}, "modules", "multi-module recipes are not supported"),
    ({"merge_method": "linear", "modules": {"decoder": {"models": [{"model": "a/b"}]}}}, "modules.decoder",
     "single-module form"),
    ({"merge_method": "linear", "models": [{"model": "a/b"}], "modules": {"default": {"models": [{"model": "a/c"}]}}},
     "modules", "exactly one of 'models', 'slices' or 'modules'"),
    ({"merge_method": "linear", "models": [{"model": "a/b"}], "chat_template": "vicuna"}, "chat_template",
     "invalid chat template"),
    ({"merge_method": "linear", "models": [{"model": "a/b+c/d+e/f"}]}, "model", "exactly one '+'"),
    ({"merge_method": "linear", "models": [{"model": "a/b"}], "tokenizer": {"source": "union",
                                                                             "pad_to_multiple_of": 0}},
     "pad_to_multiple_of", "positive"),
    ({"merge_method": "linear", "models": [{"model": "a/b"}], "tokenizer": {"tokens": {"<x>": {"source": {
        "kind": "model_token", "model": "a/b"}}}}}, "tokens", "exactly one of 'token_id' or 'token'"),
    ({"merge_method": "dare-ties", "models": [{"model": "a/b"}]}, "merge_method", "did you mean"),
    ({"merge_method": "linear", "models": [{"model": "a/b", "parameters": {"density": 1.5}}]}, "density", "[0, 1]"),
    ({"merge_method": "linear", "slices": [{"sources": [{"model": "a/b", "layer_range": [4, 2]}]}]}, "layer_range",
     "start < end"),
    ({"merge_method": "linear", "models": [{"model": "a/b"}], "dtype": "float8"}, "dtype", "unknown dtype"),
    ({"merge_method": "ties", "models": [{"model": "a/b"}]}, "", "needs a 'base_model'"),
    ({"merge_method": "linear"}, "", "exactly one of 'models', 'slices' or 'modules'"),
    ({"merge_method": "linear", "slices": [{"sources": [{"model": "a/b", "layer_range": [0, 2]},
                                                        {"model": "a/c", "layer_range": [0, 3]}]}]},
     "slices", "same number of layers"),
])
def test_config_errors_name_the_field(config, field, message, tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_merge_config(config)
    text = exc.value.render()
    assert field in text and message in text


def test_cli_exit_code_2_for_bad_config(tmp_path, capsys):
    cfg = write_config({"merge_method": "linear", "models": [{"model": "a/b", "parameters": {"weight": 1}}],
                        "dtype": "bfloat17"}, tmp_path / "bad.yml")
    assert main(["merge", str(cfg), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bad.yml" in err and "dtype" in err and "bfloat17" in err


def test_cli_warns_about_ignored_fields_and_names_them(tmp_path, capsys, caplog):
    """mergekit ignores unknown keys; mergegate ignores them too but says which, with a did-you-mean."""
    cfg = write_config({"merge_method": "linear", "models": [{"model": str(tmp_path / "nope"),
                                                              "parameters": {"weight": 1}}],
                        "dytpe": "bfloat16"}, tmp_path / "typo.yml")
    assert main(["merge", str(cfg), "--dry-run"]) == 2  # the model is missing: ignored keys are no error
    assert "nope" in capsys.readouterr().err
    assert "typo.yml: 'dytpe': unknown field, ignored" in caplog.text and "did you mean 'dtype'" in caplog.text


def test_cli_exit_code_2_for_bad_yaml(tmp_path, capsys):
    cfg = tmp_path / "broken.yml"
    cfg.write_text("merge_method: linear\nmodels: [\n")
    assert main(["merge", str(cfg), str(tmp_path / "out")]) == 2
    assert "line" in capsys.readouterr().err


def test_cli_exit_code_2_for_missing_local_model(tmp_path, capsys):
    cfg = write_config({"merge_method": "linear", "models": [{"model": str(tmp_path / "nope"),
                                                              "parameters": {"weight": 1.0}}]}, tmp_path / "c.yml")
    assert main(["merge", str(cfg), str(tmp_path / "out")]) == 2
    assert "nope" in capsys.readouterr().err


def test_missing_required_parameter(pair, tmp_path):
    base, e1, e2 = pair
    config = {"merge_method": "linear", "models": [{"model": str(e1), "parameters": {"weight": 1.0}},
                                                   {"model": str(e2)}]}
    with pytest.raises(ConfigError, match="missing required parameter 'weight'"):
        run_merge(config, tmp_path / "out")
    _assert_no_output(tmp_path / "out")


@pytest.mark.parametrize("where", ["same", "inside"])
def test_output_overlapping_an_input_is_refused(pair, where):
    base, e1, _ = pair
    before = (e1 / "model.safetensors").read_bytes()
    out = e1 if where == "same" else e1 / "merged"
    with pytest.raises(InputError, match="refusing to write here: this (is|directory is inside) the input model"):
        run_merge(_ta(base, e1), out)
    assert (e1 / "model.safetensors").read_bytes() == before
