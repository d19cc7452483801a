"""Property tests (hypothesis) for the recipe parser and parameter resolution, plus end-to-end identities."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mergegate.merging import run_merge
from mergegate.merging.config import (ConditionalParameter, ModelReference, extract_recipe_from_readme,
                                      load_merge_config)
from mergegate.merging.methods.base import ParamSpec, Scope
from mergegate.merging.parameters import evaluate_setting, resolve_parameter

from merge_helpers import load_dir

WEIGHT = ParamSpec("weight", float, Scope.INPUT)
names = st.from_regex(r"[a-z][a-z0-9_\-]{0,8}/[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,12}", fullmatch=True)
floats = st.floats(min_value=-2, max_value=2, allow_nan=False, width=32)
unit = st.floats(min_value=0, max_value=1, allow_nan=False)
gradients = st.lists(floats, min_size=1, max_size=6)
filters = st.sampled_from(["self_attn", "mlp", "q_proj", "norm", "embed", "*"])
settings_ = st.one_of(floats, gradients,
                      st.lists(st.builds(lambda f, v: {"filter": f, "value": v}, filters, st.one_of(floats, gradients)),
                               min_size=1, max_size=3))


@st.composite
def recipes(draw):
    method = draw(st.sampled_from(["linear", "task_arithmetic", "ties", "dare_ties", "breadcrumbs"]))
    models = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    entries = [{"model": m, "parameters": {"weight": draw(settings_)}} for m in models]
    for e in entries:
        if method != "linear" and draw(st.booleans()):
            e["parameters"]["density"] = draw(unit)
    recipe = {"merge_method": method, "models": entries,
              "dtype": draw(st.sampled_from(["bfloat16", "float16", "float32"]))}
    if method != "linear":
        recipe["base_model"] = draw(names.filter(lambda n: n not in models))
    if draw(st.booleans()):
        recipe["parameters"] = {"normalize": draw(st.booleans())}
    return recipe


@settings(max_examples=60, deadline=None)
@given(recipes())
def test_recipe_roundtrips_through_yaml(recipe):
    config, _ = load_merge_config(recipe)
    again, _ = load_merge_config(config.to_yaml())
    assert again.model_dump() == config.model_dump()
    refs = config.referenced_models()
    assert len(refs) == len(set(refs))
    if config.base_model:
        assert refs[0] == config.base_model


@settings(max_examples=100, deadline=None)
@given(names, st.one_of(st.none(), st.from_regex(r"[0-9a-f]{40}|main|v[0-9]\.[0-9]", fullmatch=True)))
def test_model_reference_roundtrip(name, revision):
    text = f"{name}@{revision}" if revision else name
    ref = ModelReference.parse(text)
    assert ref.path == name and ref.revision == revision
    assert str(ref) == text


@settings(max_examples=200, deadline=None)
@given(gradients, unit)
def test_gradient_is_piecewise_linear_between_anchors(anchors, t):
    value = evaluate_setting("model.layers.0.mlp.up_proj.weight", anchors, t, WEIGHT)
    assert min(anchors) - 1e-6 <= value <= max(anchors) + 1e-6
    assert evaluate_setting("x", anchors, 0.0, WEIGHT) == pytest.approx(anchors[0])
    assert evaluate_setting("x", anchors, 1.0, WEIGHT) == pytest.approx(anchors[-1])
    n = len(anchors)
    for i, a in enumerate(anchors):  # every anchor is hit exactly at its position
        if n > 1:
            assert evaluate_setting("x", anchors, i / (n - 1), WEIGHT) == pytest.approx(a, abs=1e-5)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(filters, floats), min_size=1, max_size=4),
       st.sampled_from(["model.layers.3.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight",
                        "model.norm.weight", "model.embed_tokens.weight"]))
def test_first_matching_filter_wins(entries, tensor):
    setting = [ConditionalParameter(filter=f, value=v) for f, v in entries]
    expected = next((v for f, v in entries if f == "*" or f in tensor), None)
    got = evaluate_setting(tensor, setting, 0.0, WEIGHT)
    assert (got is None and expected is None) or got == pytest.approx(expected)


@settings(max_examples=100, deadline=None)
@given(floats, floats, floats)
def test_precedence_model_then_slice_then_global(model_v, slice_v, global_v):
    scopes = ({"weight": model_v}, {"weight": slice_v}, {"weight": global_v})
    assert resolve_parameter(WEIGHT, scopes, tensor_name="t", t=0) == pytest.approx(model_v)
    assert resolve_parameter(WEIGHT, (None, *scopes[1:]), tensor_name="t", t=0) == pytest.approx(slice_v)
    # a filter that matches nothing falls through to the next level
    unmatched = {"weight": [ConditionalParameter(filter="nomatch", value=model_v)]}
    assert resolve_parameter(WEIGHT, (unmatched, None, scopes[2]), tensor_name="t", t=0) == pytest.approx(global_v)


def test_recipe_from_model_card(tmp_path):
    card = tmp_path / "README.md"
    card.write_text("---\ntags: [merge]\n---\n# x\n\n```yaml\nmerge_method: linear\nmodels:\n"
                    "  - model: a/b\n    parameters:\n      weight: 1.0\n```\n")
    config, text = load_merge_config(card)
    assert config.merge_method == "linear" and "merge_method" in text
    assert extract_recipe_from_readme("no yaml here") is None


# --- merge identities, end to end --------------------------------------------------------------

@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.floats(min_value=0.1, max_value=3.0))
def test_linear_of_one_model_is_that_model(family, tmp_path_factory, weight):
    out = run_merge({"merge_method": "linear", "models": [{"model": str(family["e1"]),
                                                           "parameters": {"weight": weight}}]},
                    tmp_path_factory.mktemp("lin") / "out").out_dir
    merged, original = load_dir(out), load_dir(family["e1"])
    assert merged.keys() == original.keys()
    for k in original:
        torch.testing.assert_close(merged[k], original[k], rtol=0, atol=0)


@pytest.mark.slow
def test_task_arithmetic_weight_zero_is_base(family, tmp_path: Path):
    out = run_merge({"merge_method": "task_arithmetic", "base_model": str(family["base"]),
                     "models": [{"model": str(family["e1"]), "parameters": {"weight": 0.0}},
                                {"model": str(family["e2"]), "parameters": {"weight": 0.0}}]},
                    tmp_path / "out").out_dir
    merged, base = load_dir(out), load_dir(family["base"])
    for k in base:
        torch.testing.assert_close(merged[k], base[k], rtol=0, atol=0)


@pytest.mark.slow
def test_ties_density_one_single_model_is_task_arithmetic(family, tmp_path: Path):
    common = {"base_model": str(family["base"]), "dtype": "float32", "parameters": {"normalize": False},
              "models": [{"model": str(family["e1"]), "parameters": {"weight": 0.7, "density": 1.0}}]}
    ties = load_dir(run_merge({"merge_method": "ties", **common}, tmp_path / "t").out_dir)
    ta = load_dir(run_merge({"merge_method": "task_arithmetic", **common}, tmp_path / "a").out_dir)
    for k in ta:
        torch.testing.assert_close(ties[k], ta[k], rtol=0, atol=0)
