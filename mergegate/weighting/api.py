"""Library entry point: :func:`optimize_recipe` → :class:`WeightingResult`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from mergegate.atomic import write_redacted_json, write_redacted_yaml
from mergegate.errors import ConfigError, InputError
from mergegate.merging.config import MergeConfig, load_merge_config
from mergegate.weighting import data as wdata
from mergegate.weighting.search import DECIMALS, Gene, build_genes, recipe_yaml, values_by_name

log = logging.getLogger(__name__)

STRATEGIES = ("evomm", "cocktail")
SMALL_MODEL_PARAMS = 50_000_000
DEFAULT_JUDGE = "meta-llama/Llama-Guard-3-8B"


class Losses(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    safety: float  # mean answer CE on D_safety
    expert: float  # mean answer CE on D_expert
    total: float  # safety + alpha * expert


class GeneInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str  # "weight[<model>]", "density[<model>]" or "t"
    param: str
    model: str | None
    low: float
    high: float


class WeightingResult(BaseModel):
    """What a weighting run decided, and from what."""

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["evomm", "cocktail"]
    merge_method: str
    seed: int  # CMA-ES seed (cma gets seed + 1) and the merge seed of stochastic methods
    merge_seed: int | None  # pass to run_merge / `mergegate merge --seed` for DARE/DELLA; None otherwise
    alpha: float
    temperature: float | None = None  # cocktail only
    genes: list[GeneInfo]
    declared: dict[str, float]  # gene name -> declared value (mean over tensors for gradient recipes)
    optimized: dict[str, float]  # gene name -> chosen value (what recipe_yaml holds)
    declared_losses: Losses
    optimized_losses: Losses
    constituent_losses: dict[str, float] = Field(default_factory=dict)  # cocktail: model -> mean CE
    cocktail_weights: dict[str, float] = Field(default_factory=dict)  # cocktail: model -> softmax weight
    evaluations: int  # candidate evaluations (EvoMM: the budget; cocktail: one per constituent)
    merges: int  # distinct candidates recombined (the declared recipe included)
    seconds: float  # wall time of the whole call
    data_seconds: float  # building D_safety / D_expert (generation + judging, or cache lookups)
    recombine_seconds: float  # in-memory merges
    score_seconds: float  # teacher-forced loss passes
    history: list[float] = Field(default_factory=list)  # objective of every evaluation, in order
    safety_data: wdata.DataSummary
    expert_data: wdata.DataSummary
    device: str
    recipe_yaml: str  # a valid mergekit recipe: the declared one with the optimized values

    _merger: Any = PrivateAttr(default=None)

    @property
    def model(self) -> Any:
        """The loaded transformers model holding the chosen merge (None once the result was copied)."""
        return None if self._merger is None else self._merger.model

    @property
    def merger(self) -> Any:
        """The :class:`~mergegate.weighting.recombine.InMemoryMerger` (inputs kept on the device)."""
        return self._merger

    @property
    def improved(self) -> bool:
        return self.optimized_losses.total < self.declared_losses.total


@dataclass
class Constituent:
    """A recipe input as the answer engine sees it (``display`` is the recipe's reference)."""

    display: str
    path: Path
    key: str


def _constituents(plan: Any, store: Any) -> list[Constituent]:
    from mergegate.audit.models import resolve_model

    out = []
    for ref, im in plan.inputs.items():
        rm = resolve_model(str(im.model.path), store)
        out.append(Constituent(display=str(ref), path=Path(im.model.path), key=rm.key))
    return out


def _as_prompt_list(value: Any) -> list[str] | None:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v for v in value]
    return None


def _exclusions(exclude_prompts: str | Sequence[str] | None) -> list[str]:
    if exclude_prompts is None:
        return []
    listed = _as_prompt_list(exclude_prompts)
    if listed is not None:
        return listed
    from mergegate.audit.prompts import load_prompts

    return load_prompts(str(exclude_prompts)).texts


def optimize_recipe(
    config: str | Path | dict[str, Any] | MergeConfig,
    *,
    strategy: str = "evomm",
    judge: Any = DEFAULT_JUDGE,
    safety_prompts: str | Path | Sequence[str] = wdata.DEFAULT_SAFETY_SOURCE,
    expert_prompts: str | Path | Sequence[str] | None = None,
    expert_topics: Mapping[str, str] | None = None,
    experts: Sequence[str] | None = None,
    k: int = 1000,
    exclude_prompts: str | Sequence[str] | None = None,
    device: str = "cpu",
    seed: int = 0,
    budget: int = 100,
    alpha: float = 0.3,
    temperature: float = 1.0,
    sigma0: float = 1 / 6,
    popsize: int | None = None,
    weight_bounds: tuple[float, float] = (0.0, 1.0),
    density_bounds: tuple[float, float] = (0.1, 1.0),
    max_new_tokens: int = 512,
    batch_size: int | None = None,
    max_length: int = 2048,
    cache: str | Path | None = None,
    out_dir: str | Path | None = None,
    judge_protocol: str | None = None,
    generator_factory: Callable[[Any], Any] | None = None,
    on_eval: Callable[[Any], None] | None = None,
    cpu_threads: int | None = None,
) -> WeightingResult:
    """Choose a merge recipe's weights (and density / slerp ``t``) for safety and expertise.

    Args:
        config: the declared mergekit recipe (path, YAML text, dict or ``MergeConfig``).
        strategy: ``"evomm"`` (CMA-ES on ``L_safety + alpha * L_expert``) or ``"cocktail"``
            (LM-Cocktail: ``softmax(-CE / temperature)`` of the constituents on both sets).
        judge: Llama Guard path / Hub id (as ``audit_models``), ``"refusal-patterns"``, or any object
            with ``.key`` and ``.judge(pairs) -> [Verdict]``. Used to pick D_safety's refusals.
        safety_prompts: ``"beavertails-train[@SHA]"`` (default, BeaverTails 30k_train pinned),
            ``"toy"`` (toy fleet), ``"hub:ID[:config][:split]"``, a ``.jsonl``/``.parquet`` of prompts, a
            list of prompts, or a ``.jsonl`` with ``prompt`` and ``answer`` (used as D_safety as is).
        expert_prompts: ``None`` (self-questioning: each expert writes ``k // (N-1)`` questions on its
            topic), ``"toy"`` (toy-fleet domain questions), a list of questions or a ``.jsonl`` of
            ``prompt`` rows (answered by each expert), or a ``.jsonl`` with ``prompt`` and ``answer``.
        expert_topics: ``{model reference: topic}`` for self-questioning (else read from the model card).
        experts: the recipe references that are experts (default: every non-base model).
        k: number of safety prompts (and the expert question budget, split over the experts).
        exclude_prompts: the evaluation prompts (a prompt source or a list) D_safety must not contain.
        device: ``cpu`` or ``cuda[:N]``; the inputs, the model and the merges live there.
        seed: seeds the prompt samples, CMA-ES and the stochastic methods' masks.
        budget: EvoMM candidate evaluations (exact; the declared recipe is evaluated in addition).
        alpha: weight of L_expert.
        temperature: LM-Cocktail temperature.
        sigma0, popsize: CMA-ES step size in the unit cube and population (default 4 + 3 ln n).
        weight_bounds, density_bounds: search bounds (``weight``'s upper bound is raised to the
            declared value when that is higher).
        max_new_tokens: answer length when generating the data sets.
        batch_size: generation / loss batch size (default 16 on CPU, 32 on CUDA).
        max_length: truncation of a templated (question, answer) for the loss.
        cache: the audit cache (file or directory) answers and verdicts go through.
        out_dir: when given, ``safety.jsonl``, ``expert.jsonl``, ``recipe.yml`` and ``weighting.json``
            are written there.
        judge_protocol: force the judge's Llama Guard protocol.
        generator_factory: ``f(model) -> Generator`` replacing the transformers generator (tests).
        on_eval: called with every EvoMM evaluation (progress).
        cpu_threads: torch threads on CPU during the search (default: 1 for models under 50 M
            parameters, where extra OpenMP threads only spin-wait; torch's default otherwise).

    Returns:
        A :class:`WeightingResult`; ``recipe_yaml`` rebuilds the chosen merge with mergekit or
        ``run_merge`` (with ``seed=result.merge_seed`` for DARE/DELLA).

    Raises:
        InputError / ConfigError: bad strategy, budget, alpha, data, or a method without weights;
        no constituent refusing any safety prompt.
    """
    import torch

    from mergegate.audit.cache import AuditCache
    from mergegate.audit.generators import check_device
    from mergegate.merging.api import plan_merge
    from mergegate.weighting.recombine import InMemoryMerger

    started = time.perf_counter()
    if strategy not in STRATEGIES:
        raise InputError(f"unknown weighting strategy '{strategy}'", field="strategy",
                         hint=f"use one of {', '.join(STRATEGIES)} (or 'declared' to keep the recipe)")
    if strategy == "evomm" and budget < 1:
        raise InputError(f"budget must be at least 1, got {budget}", field="budget")
    if not (alpha >= 0 and alpha == alpha and alpha != float("inf")):
        raise InputError(f"alpha must be a finite number >= 0, got {alpha}", field="alpha")
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}", field="temperature")
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}", field="k")
    if not sigma0 > 0:
        raise InputError(f"sigma0 must be > 0, got {sigma0}", field="sigma0")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)
    bs = batch_size or (32 if device.startswith("cuda") else 16)

    declared = config if isinstance(config, MergeConfig) else load_merge_config(config)[0]
    plan = plan_merge(declared)
    genes = build_genes(plan, weight_bounds=weight_bounds, density_bounds=density_bounds)
    store = AuditCache(cache)
    members = _constituents(plan, store)
    if len(members) < 2:
        raise ConfigError("weighting needs at least two models in the recipe", field="models")
    base_ref = str(declared.base_model) if declared.base_model else None
    engine = wdata.AnswerEngine(store, device=device, max_new_tokens=max_new_tokens, batch_size=bs,
                                generator_factory=generator_factory)
    judge_obj = wdata.JudgeSpec(judge, judge_protocol) if isinstance(judge, str) else judge

    # ---- data ----
    t_data = time.perf_counter()
    safety = _safety_data(safety_prompts, members, judge_obj, engine, k=k, seed=seed,
                          exclude=_exclusions(exclude_prompts))
    expert_members = _experts(members, experts, base_ref)
    expert = _expert_data(expert_prompts, expert_members, engine, k=k, n=len(members), seed=seed,
                          topics=expert_topics, exclude=[e.prompt for e in safety.examples])
    data_seconds = time.perf_counter() - t_data
    if out_dir is not None:
        out = Path(out_dir)
        wdata.save_jsonl(safety, out / "safety.jsonl")
        wdata.save_jsonl(expert, out / "expert.jsonl")

    # ---- model ----
    threads = torch.get_num_threads()
    try:
        merger = InMemoryMerger(plan, device=device)
        if device == "cpu" and cpu_threads is None:
            n_params = sum(p.numel() for p in merger.params.values())
            # tiny matrices: a second OpenMP thread only spin-waits (measured 30x slower on a loaded
            # 2-core machine for the toy fleet); large models keep torch's default
            cpu_threads = 1 if n_params < SMALL_MODEL_PARAMS else None
        if device == "cpu" and cpu_threads:
            torch.set_num_threads(cpu_threads)
        return _optimize(merger, plan=plan, declared=declared, genes=genes, safety=safety, expert=expert,
                         strategy=strategy, alpha=alpha, seed=seed, device=device, bs=bs, max_length=max_length,
                         budget=budget, sigma0=sigma0, popsize=popsize, on_eval=on_eval,
                         temperature=temperature, base_ref=base_ref, out_dir=out_dir, started=started,
                         data_seconds=data_seconds)
    finally:
        torch.set_num_threads(threads)


def _optimize(merger: Any, *, plan: Any, declared: MergeConfig, genes: list[Gene], safety: wdata.Dataset,
              expert: wdata.Dataset, strategy: str, alpha: float, seed: int, device: str, bs: int,
              max_length: int, budget: int, sigma0: float, popsize: int | None,
              on_eval: Callable[[Any], None] | None, temperature: float, base_ref: str | None,
              out_dir: str | Path | None, started: float, data_seconds: float) -> WeightingResult:
    from mergegate.audit.generators import load_tokenizer
    from mergegate.weighting.loss import Encoded, encode_pairs
    from mergegate.weighting.strategies import (Objective, cocktail_values, constituent_losses,
                                                        run_evomm, softmax_weights)

    tok = load_tokenizer(merger.source_path)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    enc_s = encode_pairs(tok, safety.pairs, max_length=max_length)
    enc_e = encode_pairs(tok, expert.pairs, max_length=max_length)
    stochastic = plan.method.spec.stochastic
    objective = Objective(merger=merger, declared=declared, genes=genes, safety=enc_s, expert=enc_e, alpha=alpha,
                          seed=seed if stochastic else None, device=device, batch_size=bs, pad_id=pad)

    cons_losses: dict[str, float] = {}
    cw: dict[str, float] = {}
    if strategy == "evomm":
        declared_eval = objective.evaluate([g.declared for g in genes], count=False)
        best = run_evomm(objective, budget=budget, seed=seed, sigma0=sigma0, popsize=popsize, on_eval=on_eval)
    else:
        both = Encoded(enc_s.ids + enc_e.ids, enc_s.prompt_lens + enc_e.prompt_lens)
        t0 = time.perf_counter()
        cons_losses = constituent_losses(merger, list(plan.inputs), both, device=device, batch_size=bs, pad_id=pad)
        objective.score_seconds += time.perf_counter() - t0
        objective.evaluations = len(cons_losses)
        weights = softmax_weights(list(cons_losses.values()), temperature)
        cw = {m: round(w, 6) for m, w in zip(cons_losses, weights)}
        declared_eval = objective.evaluate([g.declared for g in genes], count=False)
        best = objective.evaluate(cocktail_values(genes, cw, base_ref), count=False)
    best_config = objective.config(best.values)
    if objective.memo and list(objective.memo)[-1] != best.values:
        objective.recombine_seconds += merger.apply(best_config, seed=objective.seed)  # leave the best in place

    header = (f"mergekit recipe chosen by mergegate safety-aware weighting ({strategy}, seed {seed}"
              + (f", alpha {alpha:g}" if strategy == "evomm" else f", temperature {temperature:g}") + ")"
              + (f"\nrebuild with --seed {seed} (stochastic method)" if stochastic else ""))
    result = WeightingResult(
        strategy=strategy,  # type: ignore[arg-type]
        merge_method=declared.merge_method, seed=seed, merge_seed=seed if stochastic else None, alpha=alpha,
        temperature=temperature if strategy == "cocktail" else None,
        genes=[GeneInfo(name=g.name, param=g.param, model=g.model, low=g.low, high=g.high) for g in genes],
        declared={g.name: round(g.declared, DECIMALS) for g in genes},
        optimized=values_by_name(genes, best.values),
        declared_losses=_losses(declared_eval), optimized_losses=_losses(best),
        constituent_losses={m: round(v, 6) for m, v in cons_losses.items()}, cocktail_weights=cw,
        evaluations=objective.evaluations, merges=objective.merges,
        seconds=round(time.perf_counter() - started, 3), data_seconds=round(data_seconds, 3),
        recombine_seconds=round(objective.recombine_seconds, 3), score_seconds=round(objective.score_seconds, 3),
        history=[round(e.total, 6) for e in objective.history],
        safety_data=safety.summary, expert_data=expert.summary, device=device,
        recipe_yaml=recipe_yaml(best_config, header=header))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_redacted_yaml(out / "recipe.yml", result.recipe_yaml)  # still a valid recipe
        write_redacted_json(out / "weighting.json", result.model_dump(mode="json"))
    result._merger = merger
    return result


def _losses(ev: Any) -> Losses:
    return Losses(safety=round(ev.safety, 6), expert=round(ev.expert, 6), total=round(ev.total, 6))


def _experts(members: list[Constituent], experts: Sequence[str] | None, base: str | None) -> list[Constituent]:
    if experts is None:
        chosen = [m for m in members if m.display != base]
        return chosen or members[1:]
    by = {m.display: m for m in members}
    unknown = [e for e in experts if e not in by]
    if unknown:
        raise InputError(f"experts not in the recipe: {', '.join(unknown)}", field="experts",
                         hint=f"use the recipe's references: {', '.join(by)}")
    return [by[e] for e in experts]


def _safety_data(spec: Any, members: list[Constituent], judge: Any, engine: wdata.AnswerEngine, *, k: int, seed: int,
                 exclude: list[str]) -> wdata.Dataset:
    listed = _as_prompt_list(spec)
    if listed is not None:
        excluded = set(exclude)
        prompts = [p for p in listed if p not in excluded][:k]
        return wdata.build_safety_set(prompts, members, judge, engine, source="list")
    spec = str(spec)
    if wdata.jsonl_has_answers(spec):
        return wdata.read_pairs_jsonl(spec, "safety")
    prompts, source, revision = wdata.load_safety_prompts(spec, k=k, seed=seed, exclude=exclude)
    return wdata.build_safety_set(prompts, members, judge, engine, source=source, revision=revision)


def _expert_data(spec: Any, experts: list[Constituent], engine: wdata.AnswerEngine, *, k: int, n: int, seed: int,
                 topics: Mapping[str, str] | None, exclude: list[str]) -> wdata.Dataset:
    if spec is None:
        return wdata.build_expert_set(experts, engine, k=k, n_constituents=n, seed=seed, topics=topics,
                                      exclude=exclude)
    listed = _as_prompt_list(spec)
    if listed is None:
        spec = str(spec)
        if spec == "toy":
            per = max(1, k // max(1, n - 1))
            listed = wdata.toy_expert_questions(per * len(experts), seed=seed)
            return wdata.build_expert_set(experts, engine, k=k, n_constituents=n, seed=seed, questions=listed,
                                          exclude=exclude, source="toy")
        if wdata.jsonl_has_answers(spec):
            return wdata.read_pairs_jsonl(spec, "expert")
        from mergegate.audit.prompts import load_prompts

        listed = load_prompts(spec).texts
    return wdata.build_expert_set(experts, engine, k=k, n_constituents=n, seed=seed, questions=listed,
                                  exclude=exclude, source="questions")
