"""The search space: which recipe numbers a weighting strategy may change, and the recipe it emits.

Genes, one value each for the whole model (not per layer):

* ``weight`` of every input that takes one (task-arithmetic family, nuslerp, tsvm: every non-base
  model; linear: every model);
* ``density`` of every non-base input, for the methods that sparsify (ties, dare_*, breadcrumbs*,
  della*);
* ``t`` for slerp.

A method with none of these (passthrough, model_stock) cannot be weighted: ``ConfigError``.
A candidate is written back into the declared recipe (same models, base, dtype, tokenizer,
everything else untouched): per-model values go into each model's (or slice source's)
``parameters`` (the level that takes precedence), ``t`` into the top-level ``parameters`` (and
out of slice-level ones, which would override it). Values are rounded to :data:`DECIMALS`
decimals *before* the merge is built, so the emitted YAML is exactly the merge that was scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from mergegate.errors import ConfigError
from mergegate.merging.config import MergeConfig, parse_merge_config
from mergegate.merging.methods.base import Scope
from mergegate.merging.plan import MergePlan

DECIMALS = 4


@dataclass(frozen=True)
class Gene:
    param: str  # "weight", "density" or "t"
    model: str | None  # the model reference as the recipe writes it; None for shared params
    low: float
    high: float
    declared: float

    @property
    def name(self) -> str:
        return f"{self.param}[{self.model}]" if self.model is not None else self.param

    def to_unit(self, value: float) -> float:
        return 0.0 if self.high == self.low else min(1.0, max(0.0, (value - self.low) / (self.high - self.low)))

    def from_unit(self, u: float) -> float:
        return round(self.low + min(1.0, max(0.0, float(u))) * (self.high - self.low), DECIMALS)


def _declared(plan: MergePlan, param: str, model: str | None) -> float | None:
    """Mean of the declared value over the tensors (exact for scalar recipes)."""
    values: list[float] = []
    for task in plan.tasks:
        if model is None:
            if param in task.shared:
                values.append(float(task.shared[param]))
            continue
        for (ref, _), params in zip(task.inputs, task.per_input):
            if str(ref) == model and param in params and params[param] is not None:
                values.append(float(params[param]))
    return sum(values) / len(values) if values else None


def build_genes(plan: MergePlan, *, weight_bounds: tuple[float, float] = (0.0, 1.0),
                density_bounds: tuple[float, float] = (0.1, 1.0)) -> list[Gene]:
    spec = plan.method.spec
    params = {p.name: p for p in spec.params}
    sparsifies = getattr(getattr(plan.method, "variant", None), "sparsification", None)
    genes: list[Gene] = []
    sources = list(dict.fromkeys(str(ref) for task in plan.tasks for ref, _ in task.inputs))
    base_refs = {str(task.inputs[task.base_index][0]) for task in plan.tasks if task.base_index is not None}
    if "weight" in params:
        scope = params["weight"].scope
        lo, hi = weight_bounds
        if spec.name == "linear" and lo <= 0:
            lo = 0.01  # normalised weights that all reach 0 are not a merge
        for m in sources:
            if scope is Scope.NON_BASE and m in base_refs:
                continue
            declared = _declared(plan, "weight", m)
            if declared is None:
                continue
            genes.append(Gene("weight", m, lo, max(hi, declared), declared))
    if "density" in params and sparsifies:
        lo, hi = density_bounds
        if sparsifies == "della_magprune":  # DELLA needs density +- epsilon inside (0, 1)
            eps = max((_declared(plan, "epsilon", m) or 0.15) for m in sources if m not in base_refs)
            lo, hi = max(lo, eps + 1e-3), min(hi, 1 - eps - 1e-3)
        for m in sources:
            if m in base_refs:
                continue
            declared = _declared(plan, "density", m)
            if declared is None:
                continue
            genes.append(Gene("density", m, lo, hi, min(hi, max(lo, declared))))
    if "t" in params and params["t"].scope is Scope.SHARED:
        declared = _declared(plan, "t", None)
        genes.append(Gene("t", None, 0.0, 1.0, 0.5 if declared is None else declared))
    if not any(g.param in ("weight", "t") for g in genes):
        raise ConfigError(f"merge_method '{spec.name}' has no per-model weights (or slerp t) to optimise",
                          field="merge_method",
                          hint="safety-aware weighting supports linear, slerp, nuslerp, task_arithmetic, ties, "
                               "dare_ties, dare_linear, breadcrumbs*, della* and tsvm")
    return genes


def _set(params: dict[str, Any] | None, name: str, value: float) -> dict[str, Any]:
    out = dict(params or {})
    out[name] = value
    return out


def candidate_config(declared: MergeConfig, genes: Sequence[Gene], values: Sequence[float]) -> MergeConfig:
    """The declared recipe with the genes' values written in (already rounded)."""
    data = declared.model_dump(mode="json", exclude_none=True)
    for gene, value in zip(genes, values):
        value = round(float(value), DECIMALS)
        if gene.model is None:
            data["parameters"] = _set(data.get("parameters"), gene.param, value)
            for sl in data.get("slices") or []:
                if sl.get("parameters") and gene.param in sl["parameters"]:
                    del sl["parameters"][gene.param]
            continue
        hit = False
        for entry in data.get("models") or []:
            if str(entry["model"]) == gene.model:
                entry["parameters"] = _set(entry.get("parameters"), gene.param, value)
                hit = True
        for sl in data.get("slices") or []:
            for src in sl["sources"]:
                if str(src["model"]) == gene.model:
                    src["parameters"] = _set(src.get("parameters"), gene.param, value)
                    hit = True
        if not hit:
            raise ConfigError(f"model {gene.model} is not listed in the recipe, so its {gene.param} cannot be set",
                              field="models")
    return parse_merge_config(data, source="<weighted recipe>")


def recipe_yaml(config: MergeConfig, *, header: str = "") -> str:
    """mergekit YAML (plain keys, model references as strings)."""
    data = config.model_dump(mode="json", exclude_none=True)
    body = yaml.safe_dump(data, sort_keys=False)
    lines = "".join(f"# {line}\n" for line in header.splitlines()) if header else ""
    return lines + body


def values_by_name(genes: Sequence[Gene], values: Sequence[float]) -> dict[str, float]:
    return {g.name: round(float(v), DECIMALS) for g, v in zip(genes, values)}
