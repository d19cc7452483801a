"""End to end: mergegate's rebuild of a recipe equals mergekit 0.1.5's output for the same recipe.

Every deterministic method, with gradients, filters, slices and layer ranges, is run through both
tools on tiny random Llama models; every output tensor must have mergekit's dtype, shape and bytes.
The only tolerated difference is the documented one: for magnitude top-k (ties, breadcrumbs) which
of several *equal* magnitudes exactly at the threshold survive — at most 1% of a tensor's elements.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mergegate.merging import run_merge

from merge_helpers import load_dir, run_mergekit

TIE_TOLERANT = {"ties", "breadcrumbs", "breadcrumbs_ties"}


def _recipes(f: dict[str, Path]) -> dict[str, dict]:
    b, e1, e2, e3 = (str(f[k]) for k in ("base", "e1", "e2", "e3"))
    # magnitude top-k recipes use float32 inputs: bf16 task vectors are so coarsely quantized that
    # 5-15% of elements tie at the threshold (see test_bf16_ties_differ_only_at_threshold_ties)
    b32, f1, f2, f3 = (str(f[k]) for k in ("base32", "f1", "f2", "f3"))
    return {
        "linear": {"merge_method": "linear", "dtype": "bfloat16", "models": [
            {"model": e1, "parameters": {"weight": 1.0}},
            {"model": e2, "parameters": {"weight": [0.2, 0.8]}},  # gradient
            {"model": e3, "parameters": {"weight": [{"filter": "mlp", "value": 0.5}, {"value": 0.1}]}},
        ]},
        "linear_fp32_no_normalize": {"merge_method": "linear", "dtype": "float32", "out_dtype": "bfloat16",
                                     "parameters": {"normalize": False}, "models": [
            {"model": e1, "parameters": {"weight": 0.6}}, {"model": e2, "parameters": {"weight": 0.3}}]},
        "slerp_gradient": {"merge_method": "slerp", "base_model": b, "dtype": "bfloat16",
                           "slices": [{"sources": [{"model": b, "layer_range": [0, 4]},
                                                   {"model": e1, "layer_range": [0, 4]}]}],
                           "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                                                {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                                                {"value": 0.5}]}},
        "nuslerp": {"merge_method": "nuslerp", "dtype": "float32", "models": [
            {"model": e1, "parameters": {"weight": 0.7}}, {"model": e2, "parameters": {"weight": 0.3}}]},
        "nuslerp_base_rowwise": {"merge_method": "nuslerp", "base_model": b, "dtype": "float32",
                                 "parameters": {"nuslerp_row_wise": True, "nuslerp_flatten": False},
                                 "models": [{"model": e1, "parameters": {"weight": 0.4}},
                                            {"model": e2, "parameters": {"weight": 0.6}}]},
        "task_arithmetic": {"merge_method": "task_arithmetic", "base_model": b, "dtype": "bfloat16",
                            "parameters": {"lambda": 0.8}, "models": [
            {"model": e1, "parameters": {"weight": 0.5}}, {"model": e2, "parameters": {"weight": -0.3}},
            {"model": e3, "parameters": {"weight": [0.1, 0.9]}}]},
        "ties": {"merge_method": "ties", "base_model": b32, "dtype": "float32", "out_dtype": "bfloat16",
                 "parameters": {"normalize": True, "int8_mask": True}, "models": [
            {"model": f1, "parameters": {"density": [1, 0.7, 0.1], "weight": 1.0}},
            {"model": f2, "parameters": {"density": 0.5, "weight": [0, 0.3, 0.7, 1]}},
            {"model": f3, "parameters": {"density": 0.33,
                                         "weight": [{"filter": "mlp", "value": 0.5}, {"value": 0}]}}]},
        "ties_fp32": {"merge_method": "ties", "base_model": b32, "dtype": "float32",
                      "parameters": {"normalize": False, "lambda": 1.2},
                      "models": [{"model": f1, "parameters": {"density": 0.4, "weight": 0.7}},
                                 {"model": f2, "parameters": {"density": 0.6, "weight": -0.5}}]},
        "breadcrumbs": {"merge_method": "breadcrumbs", "base_model": b32, "dtype": "float32", "models": [
            {"model": f1, "parameters": {"density": 0.8, "gamma": 0.02, "weight": 0.6}},
            {"model": f2, "parameters": {"density": 0.9, "weight": 0.4}}]},
        "breadcrumbs_ties": {"merge_method": "breadcrumbs_ties", "base_model": b32, "dtype": "float32",
                             "models": [{"model": f1, "parameters": {"density": 0.7, "gamma": 0.05, "weight": 0.5}},
                                        {"model": f2, "parameters": {"density": 0.8, "weight": 0.5}},
                                        {"model": f3, "parameters": {"density": 0.9, "weight": 0.3}}]},
        "task_arithmetic_bf16_inputs_fp32_compute": {
            "merge_method": "task_arithmetic", "base_model": b, "dtype": "float32", "out_dtype": "bfloat16",
            "models": [{"model": e1, "parameters": {"weight": 0.5}}, {"model": e2, "parameters": {"weight": 0.5}}]},
        "model_stock": {"merge_method": "model_stock", "base_model": b, "dtype": "float32",
                        "models": [{"model": e1}, {"model": e2}, {"model": e3}]},
        "model_stock_filter_wise": {"merge_method": "model_stock", "base_model": b, "dtype": "bfloat16",
                                    "parameters": {"filter_wise": True},
                                    "models": [{"model": e1}, {"model": e2}, {"model": e3}]},
        "passthrough_frankenmerge": {"merge_method": "passthrough", "dtype": "bfloat16", "slices": [
            {"sources": [{"model": e1, "layer_range": [0, 3]}]},
            {"sources": [{"model": e2, "layer_range": [1, 4],
                          "parameters": {"scale": [{"filter": "o_proj", "value": 0.5}, {"value": 1.0}]}}]}]},
        "linear_slices_layer_ranges": {"merge_method": "linear", "dtype": "bfloat16", "slices": [
            {"sources": [{"model": e1, "layer_range": [0, 2], "parameters": {"weight": 0.3}},
                         {"model": e2, "layer_range": [2, 4], "parameters": {"weight": 0.7}}]},
            {"sources": [{"model": e3, "layer_range": [1, 4], "parameters": {"weight": [0.9, 0.1]}},
                         {"model": e1, "layer_range": [1, 4], "parameters": {"weight": 0.5}}]}]},
        "sharded_inputs_fp32": {"merge_method": "task_arithmetic", "base_model": str(f["base32"]),
                                "models": [{"model": str(f["f1"]), "parameters": {"weight": 0.5}},
                                           {"model": str(f["f2"]), "parameters": {"weight": 0.5}}]},
        **_new_method_recipes(f),
    }


def _new_method_recipes(f: dict[str, Path]) -> dict[str, dict]:
    """sce, arcee_fusion, karcher, nearswap, multislerp, ram, ramplus_tl, each computed in bfloat16
    and float16 (from the bf16 models) and in float32 (from the float32, sharded models)."""
    out = {}
    for suffix, dtype, family in (("bf16", "bfloat16", ("base", "e1", "e2", "e3")),
                                  ("fp16", "float16", ("base", "e1", "e2", "e3")),
                                  ("fp32", "float32", ("base32", "f1", "f2", "f3"))):
        b, m1, m2, m3 = (str(f[k]) for k in family)
        recipes = {
            "sce": {"merge_method": "sce", "base_model": b,
                    "parameters": {"select_topk": [0.3, 0.9], "int8_mask": True},
                    "models": [{"model": m1}, {"model": m2}, {"model": m3}]},
            "arcee_fusion": {"merge_method": "arcee_fusion", "base_model": b, "models": [{"model": m1}]},
            "karcher": {"merge_method": "karcher", "base_model": b, "parameters": {"max_iter": 5},
                        "models": [{"model": m1}, {"model": m2}]},  # the base is an ordinary input
            "nearswap": {"merge_method": "nearswap", "base_model": b, "models": [{"model": m1}],
                         "parameters": {"t": [{"filter": "mlp", "value": [0.0001, 0.01]}, {"value": 0.001}]}},
            "multislerp": {"merge_method": "multislerp", "base_model": b, "models": [
                {"model": m1, "parameters": {"weight": [0.2, 0.8]}}, {"model": m2, "parameters": {"weight": 0.5}},
                {"model": m3, "parameters": {"weight": 0.3}}]},
            "multislerp_no_base": {"merge_method": "multislerp", "parameters": {"normalize_weights": False},
                                   "models": [{"model": m1, "parameters": {"weight": 0.6}},
                                              {"model": m2, "parameters": {"weight": 0.4}}]},
            "ram": {"merge_method": "ram", "base_model": b, "parameters": {"epsilon": 1e-3},
                    "models": [{"model": m1}, {"model": m2}, {"model": m3}]},
            "ramplus_tl": {"merge_method": "ramplus_tl", "base_model": b,
                           "parameters": {"epsilon": 1e-3, "r": 0.5, "alpha": [0.1, 0.6]},
                           "models": [{"model": m1}, {"model": m2}]},
        }
        out.update({f"{name}_{suffix}": dict(recipe, dtype=dtype) for name, recipe in recipes.items()})
    return out


RECIPE_NAMES = list(_recipes({k: Path(k) for k in ("base", "e1", "e2", "e3", "base32", "f1", "f2", "f3")}))


def _assert_same_model(ours: Path, theirs: Path, method: str) -> None:
    a, b = load_dir(ours), load_dir(theirs)
    assert set(a) == set(b), f"tensor names differ: {set(a) ^ set(b)}"
    for name in sorted(b):
        x, y = a[name], b[name]
        assert x.dtype == y.dtype, f"{name}: dtype {x.dtype} vs mergekit {y.dtype}"
        assert x.shape == y.shape, name
        if method in TIE_TOLERANT:
            xf, yf = x.float(), y.float()
            rtol = 1.6e-2 if y.dtype in (torch.bfloat16, torch.float16) else 1e-4
            atol = rtol * max(float(yf.abs().max()), 1e-6) * 0.1
            close = torch.isclose(xf, yf, rtol=rtol, atol=atol)
            frac = 1.0 - close.float().mean().item()
            assert frac <= 0.01, f"{name}: {frac:.2%} of elements differ (> 1% threshold-tie allowance)"
        else:
            differ = x.reshape(-1).view(torch.uint8) != y.reshape(-1).view(torch.uint8)
            worst = float((x.double() - y.double()).abs().max())
            assert not bool(differ.any()), (f"{name}: {int(differ.sum())} of {differ.numel()} bytes differ from "
                                            f"mergekit's (max abs diff {worst:.3g})")


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_matches_mergekit(recipe: str, family: dict[str, Path], tmp_path: Path) -> None:
    config = _recipes(family)[recipe]
    theirs = run_mergekit(config, tmp_path / "mergekit")
    result = run_merge(config, tmp_path / "ours")
    _assert_same_model(result.out_dir, theirs, config["merge_method"])
    ours_cfg = json.loads((result.out_dir / "config.json").read_text())
    their_cfg = json.loads((theirs / "config.json").read_text())
    assert ours_cfg["num_hidden_layers"] == their_cfg["num_hidden_layers"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dare_ties", "dare_linear", "della", "della_linear"])
def test_random_methods_match_mergekit_statistically(method: str, family: dict[str, Path], tmp_path: Path) -> None:
    """DARE/DELLA draw random masks: compare kept fraction and task-vector norm, not bits."""
    b, e1, e2 = (str(family[k]) for k in ("base", "e1", "e2"))
    config = {"merge_method": method, "base_model": b, "dtype": "float32", "models": [
        {"model": e1, "parameters": {"weight": 0.6, "density": 0.5}},
        {"model": e2, "parameters": {"weight": 0.4, "density": 0.7}}]}
    theirs = load_dir(run_mergekit(config, tmp_path / "mergekit", seed=7))
    ours = load_dir(run_merge(config, tmp_path / "ours", seed=7).out_dir)
    base = load_dir(Path(b))
    for name in ("model.layers.1.mlp.up_proj.weight", "model.layers.2.self_attn.q_proj.weight"):
        d_ours = ours[name].float() - base[name].float()
        d_theirs = theirs[name].float() - base[name].float()
        kept_ours = (d_ours != 0).float().mean().item()
        kept_theirs = (d_theirs != 0).float().mean().item()
        assert abs(kept_ours - kept_theirs) < 0.03, (kept_ours, kept_theirs)
        n_ours, n_theirs = d_ours.abs().sum().item(), d_theirs.abs().sum().item()
        assert abs(n_ours - n_theirs) / n_theirs < 0.05, (n_ours, n_theirs)


@pytest.mark.slow
def test_random_methods_are_reproducible_with_seed(family: dict[str, Path], tmp_path: Path) -> None:
    b, e1, e2 = (str(family[k]) for k in ("base", "e1", "e2"))
    config = {"merge_method": "dare_ties", "base_model": b, "models": [
        {"model": e1, "parameters": {"weight": 0.5, "density": 0.5}},
        {"model": e2, "parameters": {"weight": 0.5, "density": 0.5}}]}
    first = run_merge(config, tmp_path / "a", seed=3)
    again = run_merge(config, tmp_path / "b", seed=3)
    other = run_merge(config, tmp_path / "c", seed=4)
    assert first.files == again.files  # bit-identical shards
    assert first.files != other.files
    assert first.seed == 3
    provenance = json.loads((first.out_dir / "mergegate_provenance.json").read_text())
    assert provenance["seed"] == 3


@pytest.mark.slow
def test_bf16_ties_differ_only_at_threshold_ties(family: dict[str, Path], tmp_path: Path) -> None:
    """With bf16 inputs many magnitudes tie at the top-k threshold; mergekit keeps an arbitrary
    subset of them (unstable argsort). Everywhere else the outputs must be equal."""
    b, e1, e2 = (str(family[k]) for k in ("base", "e1", "e2"))
    densities = {e1: 0.5, e2: 0.3}
    config = {"merge_method": "ties", "base_model": b, "dtype": "bfloat16",
              "models": [{"model": m, "parameters": {"density": d, "weight": 0.5}} for m, d in densities.items()]}
    theirs = load_dir(run_mergekit(config, tmp_path / "mergekit"))
    ours = load_dir(run_merge(config, tmp_path / "ours").out_dir)
    inputs = {m: load_dir(Path(m)) for m in (b, *densities)}
    for name in theirs:
        tied = torch.zeros(theirs[name].shape, dtype=torch.bool)
        for m, d in densities.items():
            delta = (inputs[m][name] - inputs[b][name]).abs().float()
            k = max(1, int(d * delta.numel()))
            threshold = delta.reshape(-1).kthvalue(delta.numel() - k + 1).values
            tied |= delta == threshold
        differ = ~torch.isclose(ours[name].float(), theirs[name].float(), rtol=1.6e-2, atol=1e-4)
        assert not bool((differ & ~tied).any()), f"{name}: differs away from threshold ties"
