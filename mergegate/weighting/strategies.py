"""EvoMM (CMA-ES over the recipe's weights) and LM-Cocktail (softmax of the constituents' losses).

EvoMM: minimise ``L_safety + alpha * L_expert`` over the genes of :mod:`.search` with pycma
(``cma.CMAEvolutionStrategy``), seeded, population ``4 + floor(3 ln n)`` (cma's default), exactly
``budget`` candidate evaluations (the last generation is cut short rather than overshooting as
``maxfevals`` does; a cut generation is not told to cma). The search runs in the unit cube (every
gene scaled to [0, 1], start = the declared recipe, ``sigma0 = 1/6`` as mergekit-evolve and
Optuna's CMA-ES use); bounds are enforced with cma's ``BoundTransform`` (the boundary handler cma
itself uses for its ``bounds`` option), applied explicitly because cma 4.5 rejects ``bounds`` for a
one-gene problem. cma's seed option treats 0 as "time", so the cma seed is ``seed + 1``.

LM-Cocktail: each constituent's mean answer CE on ``D_safety ∪ D_expert`` (same loss as EvoMM),
``w = softmax(-CE / T)``; the weights go into the declared method: every ``weight`` gene gets its
model's ``w`` and slerp's ``t`` the non-base model's ``w``; densities keep their declared values.
For task arithmetic this is exactly LM-Cocktail's ``sum_i w_i theta_i`` (the base's weight is
``1 - sum`` of the others).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mergegate.merging.config import MergeConfig
from mergegate.weighting.loss import Encoded, mean_ce
from mergegate.weighting.recombine import InMemoryMerger
from mergegate.weighting.search import Gene, candidate_config

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    values: tuple[float, ...]
    safety: float
    expert: float
    total: float


@dataclass
class Objective:
    """Recombine a candidate into the model, score it; keeps timings and a memo of rounded candidates."""

    merger: InMemoryMerger
    declared: MergeConfig
    genes: Sequence[Gene]
    safety: Encoded
    expert: Encoded
    alpha: float
    seed: int | None
    device: str
    batch_size: int
    pad_id: int
    recombine_seconds: float = 0.0
    score_seconds: float = 0.0
    evaluations: int = 0
    merges: int = 0
    history: list[Evaluation] = field(default_factory=list)
    memo: dict[tuple[float, ...], Evaluation] = field(default_factory=dict)

    def config(self, values: Sequence[float]) -> MergeConfig:
        return candidate_config(self.declared, self.genes, values)

    def score_model(self) -> tuple[float, float]:
        t0 = time.perf_counter()
        ls = mean_ce(self.merger.model, self.safety, device=self.device, batch_size=self.batch_size, pad_id=self.pad_id)
        le = mean_ce(self.merger.model, self.expert, device=self.device, batch_size=self.batch_size, pad_id=self.pad_id)
        self.score_seconds += time.perf_counter() - t0
        return ls, le

    def evaluate(self, values: Sequence[float], *, count: bool = True) -> Evaluation:
        key = tuple(round(float(v), 4) for v in values)
        if count:
            self.evaluations += 1
        hit = self.memo.get(key)
        if hit is None:
            self.recombine_seconds += self.merger.apply(self.config(key), seed=self.seed)
            self.merges += 1
            ls, le = self.score_model()
            total = ls + self.alpha * le
            hit = Evaluation(key, ls, le, total if math.isfinite(total) else float("inf"))
            self.memo[key] = hit
        if count:
            self.history.append(hit)
        return hit


def run_evomm(objective: Objective, *, budget: int, seed: int, sigma0: float = 1 / 6,
              popsize: int | None = None, on_eval: Callable[[Evaluation], None] | None = None) -> Evaluation:
    """CMA-ES; returns the best evaluated candidate (the declared recipe included, evaluated first)."""
    import cma
    import numpy as np
    from cma.boundary_handler import BoundTransform

    genes = objective.genes
    n = len(genes)
    lam = popsize or 4 + int(3 * math.log(n))
    bt = BoundTransform([[0.0] * n, [1.0] * n])
    x0 = np.array([g.to_unit(g.declared) for g in genes])
    y0 = bt.inverse(x0)
    # cma's stop criteria are not consulted: the loop runs the budget out (exactly ``budget`` evaluations)
    opts = {"seed": seed + 1, "popsize": lam, "verbose": -9, "maxfevals": budget}
    es = cma.CMAEvolutionStrategy(list(y0), sigma0, opts)
    best = objective.evaluate([g.declared for g in genes], count=False)
    while objective.evaluations < budget:
        ys = es.ask()
        remaining = budget - objective.evaluations
        fs = []
        for y in ys[:remaining]:
            x = bt.transform(np.asarray(y))
            ev = objective.evaluate([g.from_unit(u) for g, u in zip(genes, x)])
            fs.append(ev.total)
            if ev.total < best.total:
                best = ev
            if on_eval is not None:
                on_eval(ev)
        if len(fs) == len(ys):
            es.tell(ys, fs)
    return best


def softmax_weights(losses: Sequence[float], temperature: float) -> list[float]:
    """``softmax(-loss / T)`` (stable)."""
    z = [-float(v) / temperature for v in losses]
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def cocktail_values(genes: Sequence[Gene], weights: dict[str, float], base: str | None) -> list[float]:
    """The genes' values for LM-Cocktail weights ``{model: w}`` (``base``: the recipe's base model)."""
    out: list[float] = []
    for g in genes:
        if g.param == "weight" and g.model is not None:
            out.append(round(weights[g.model], 4))
        elif g.param == "t":
            # slerp: t is the share of the model that is not the base (t = 0 is the base)
            other = [m for m in weights if m != base]
            out.append(round(weights[other[0]], 4) if len(other) == 1 else g.declared)
        else:
            out.append(g.declared)
    return out


def constituent_losses(merger: InMemoryMerger, refs: Sequence[Any], data: Encoded, *, device: str, batch_size: int,
                       pad_id: int) -> dict[str, float]:
    out = {}
    for ref in refs:
        merger.load_constituent(ref)
        out[str(ref)] = mean_ce(merger.model, data, device=device, batch_size=batch_size, pad_id=pad_id)
    return out
