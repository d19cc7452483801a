"""The methods added for mergekit 0.1.5 parity (sce, arcee_fusion, karcher, nearswap, multislerp,
ram, ramplus_tl): accepted where mergekit accepts them, and refused where mergekit refuses them —
at planning time (``--dry-run`` and a real run agree), exit code 2, the message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mergegate.cli.main import main
from mergegate.errors import ConfigError
from mergegate.merging import run_merge
from mergegate.merging.api import plan_merge
from mergegate.merging.config import load_merge_config
from mergegate.merging.random_models import make_family

from merge_helpers import TINY, write_config

NEW_METHODS = ["sce", "arcee_fusion", "karcher", "nearswap", "multislerp", "ram", "ramplus_tl"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base, experts = make_family(tmp_path_factory.mktemp("new-methods"), 2, shape=TINY, seed=11)
    return {"base": str(base), "e1": str(experts[0]), "e2": str(experts[1])}


@pytest.mark.parametrize("method", NEW_METHODS)
def test_new_methods_are_accepted(method):
    params = {"t": 0.1} if method == "nearswap" else {"weight": 1.0} if method == "multislerp" else {}
    config, _ = load_merge_config({"merge_method": method, "base_model": "a/b",
                                   "models": [{"model": "a/c", "parameters": params}]})
    assert config.merge_method == method


@pytest.mark.parametrize("method", ["sce", "arcee_fusion", "nearswap", "ram", "ramplus_tl"])
def test_base_model_is_required(method):
    with pytest.raises(ConfigError, match="needs a 'base_model'"):
        load_merge_config({"merge_method": method, "models": [{"model": "a/c"}, {"model": "a/d"}]})


def _refusals(m: dict[str, str]) -> list[tuple[dict, str, str]]:
    b, e1, e2 = m["base"], m["e1"], m["e2"]
    return [
        ({"merge_method": "arcee_fusion", "base_model": b, "models": [{"model": e1}, {"model": e2}]},
         "models", "takes exactly 2 input models (counting the base), got 3"),
        ({"merge_method": "nearswap", "base_model": b, "parameters": {"t": 0.1},
          "models": [{"model": e1}, {"model": e2}]}, "models", "takes exactly 2 input models"),
        ({"merge_method": "nearswap", "base_model": b, "models": [{"model": e1}]}, "t",
         "missing required parameter 't'"),
        ({"merge_method": "multislerp", "models": [{"model": e1, "parameters": {"weight": 0.5}}, {"model": e2}]},
         "weight", "missing required parameter 'weight'"),
        ({"merge_method": "multislerp", "base_model": b, "models": [{"model": b}]}, "models",
         "takes at least 1 model(s) besides the base, got 0"),
        ({"merge_method": "karcher", "parameters": {"max_iter": 2.5}, "models": [{"model": e1}, {"model": e2}]},
         "max_iter", "expected an int, got 2.5"),
        ({"merge_method": "sce", "base_model": b, "parameters": {"select_topk": "most"},
          "models": [{"model": e1}]}, "select_topk", "expected a float"),
        ({"merge_method": "ramplus_tl", "base_model": b, "parameters": {"r": [{"filter": "mlp", "value": "x"}]},
          "models": [{"model": e1}]}, "r", "expected a float"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_refused_before_merging_with_the_field_named(case, models, tmp_path: Path, capsys):
    config, field, message = _refusals(models)[case]
    with pytest.raises(ConfigError) as info:
        plan_merge(config)
    assert info.value.field == field and message in info.value.message
    with pytest.raises(ConfigError):
        run_merge(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    path = write_config(config, tmp_path / "recipe.yml")
    assert main(["merge", "--dry-run", str(path)]) == 2
    assert main(["merge", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert field in err and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", NEW_METHODS)
def test_dry_run_plans_every_new_method(method, models, capsys):
    b, e1, e2 = models["base"], models["e1"], models["e2"]
    pair = method in ("arcee_fusion", "nearswap")
    config = {"merge_method": method, "base_model": b,
              "models": [{"model": e1, "parameters": {"weight": 0.6}}] + ([] if pair else [
                  {"model": e2, "parameters": {"weight": 0.4}}]),
              "parameters": {"t": 0.01} if method == "nearswap" else {}}
    if method != "multislerp":
        for m in config["models"]:
            m.pop("parameters")
    plan = plan_merge(config)
    assert plan.method.spec.name == method
    out_dtypes = {str(t.out.dtype) for t in plan.tasks}
    # arcee_fusion and ramplus_tl return float32 for bf16 inputs; mergekit writes that without out_dtype
    assert out_dtypes == ({"torch.float32"} if method in ("arcee_fusion", "ramplus_tl") else {"torch.bfloat16"})
    config["out_dtype"] = "bfloat16"
    assert {str(t.out.dtype) for t in plan_merge(config).tasks} == {"torch.bfloat16"}
