"""Check ``--weighting`` options before anything is merged or generated.

A weighting run answers prompts with every constituent and searches for minutes to hours; an option
it cannot use (a missing prompt file, an expert whose domain nobody named) must fail first, naming
the command-line option and the fix, not a keyword argument of :func:`optimize_recipe`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergegate.errors import InputError, MergegateError
from mergegate.weighting import data as wdata

STRATEGIES = ("evomm", "cocktail")

# optimize_recipe's keyword -> the `mergegate run` option that sets it
OPTION_FLAGS = {"safety_prompts": "--safety-prompts", "expert_prompts": "--expert-prompts",
                "budget": "--weighting-budget", "k": "--weighting-k", "alpha": "--alpha",
                "strategy": "--weighting", "expert_topic": "--expert-prompts", "expert_topics": "--expert-prompts"}

EXPERT_PROMPTS_HINT = ("pass --expert-prompts FILE (a .jsonl of the experts' domain questions, one {\"prompt\": ...} "
                       "per line, optionally with \"answer\"), --expert-prompts toy for the toy fleet, or name the "
                       "domain in the expert's model card (README.md front matter `mergegate_topic: <domain>`)")


@dataclass(frozen=True)
class ExpertModel:
    """A recipe model the weighting treats as an expert (every non-base model)."""

    reference: str
    path: Path | None  # the local directory, or None for a Hub model (its card is read later)


@dataclass(frozen=True)
class WeightingCheck:
    strategy: str
    safety_source: str
    safety_prompts: int | None  # how many D_safety prompts the source gives (None: data with answers)
    expert_source: str  # "self-questioning (topics: ...)", "toy" or the file
    k: int
    budget: int | None
    alpha: float


def as_option_error(exc: MergegateError) -> MergegateError:
    """The weighting library's error with its keyword (``field="budget"``) named as the option."""
    flag = OPTION_FLAGS.get(exc.field or "")
    if flag is None:
        return exc
    out = type(exc).__new__(type(exc))
    hint = EXPERT_PROMPTS_HINT if flag == "--expert-prompts" and exc.field in ("expert_topic", "expert_topics") \
        else exc.hint
    MergegateError.__init__(out, exc.message, source=exc.source, field=flag, hint=hint)
    return out


def _prompt_file(source: str, option: str) -> Path:
    path = Path(source).expanduser()
    if not path.is_file():
        raise InputError("file not found", source=source, field=option,
                         hint="give an existing .jsonl/.parquet file" + (
                             ", toy, beavertails-train or hub:ID[:config][:split]" if option == "--safety-prompts"
                             else ", or toy"))
    return path


def check_weighting_options(strategy: str, options: dict[str, Any], *, experts: Sequence[ExpertModel],
                            seed: int = 0, exclude: Sequence[str] = ()) -> WeightingCheck:
    """Check the options ``mergegate run --weighting STRATEGY`` passes to :func:`optimize_recipe`.

    Raises:
        InputError: naming the option (``--expert-prompts``, ``--safety-prompts``, ...) and the fix.
    """
    if strategy not in STRATEGIES:
        raise InputError(f"unknown weighting '{strategy}'", field="--weighting",
                         hint=f"use one of declared, {', '.join(STRATEGIES)}")
    k = int(options.get("k", 1000))
    budget = options.get("budget")
    alpha = float(options.get("alpha", 0.3))
    if k < 1:
        raise InputError(f"must be at least 1, got {k}", field="--weighting-k")
    if budget is not None and int(budget) < 1:
        raise InputError(f"must be at least 1, got {budget}", field="--weighting-budget")
    if not (alpha >= 0 and math.isfinite(alpha)):
        raise InputError(f"must be a finite number >= 0, got {alpha}", field="--alpha")
    if not experts:
        raise InputError("weighting needs at least two models in the recipe (a base and an expert)",
                         field="--weighting", hint="drop --weighting, or list the experts in the recipe")
    safety_source = str(options.get("safety_prompts") or wdata.DEFAULT_SAFETY_SOURCE)
    n_safety = _check_safety(safety_source, k=k, seed=seed, exclude=exclude)
    expert_source = _check_experts(options.get("expert_prompts"), experts)
    return WeightingCheck(strategy=strategy, safety_source=safety_source, safety_prompts=n_safety,
                          expert_source=expert_source, k=k, budget=None if budget is None else int(budget),
                          alpha=alpha)


def _check_safety(source: str, *, k: int, seed: int, exclude: Sequence[str]) -> int | None:
    name = source.partition("@")[0]
    if source != wdata.TOY_SAFETY_SOURCE and name != "beavertails-train" and not source.startswith("hub:"):
        if wdata.jsonl_has_answers(str(_prompt_file(source, "--safety-prompts"))):
            return None
    try:
        prompts, _, _ = wdata.load_safety_prompts(source, k=k, seed=seed, exclude=exclude)
    except MergegateError as exc:
        out = type(exc).__new__(type(exc))
        MergegateError.__init__(out, exc.message, source=exc.source, field="--safety-prompts",
                                hint=exc.hint or "give toy, beavertails-train, hub:ID[:config][:split] or a .jsonl")
        raise out from None
    return len(prompts)


def _check_experts(spec: Any, experts: Sequence[ExpertModel]) -> str:
    if spec is None:
        topics = []
        for expert in experts:
            if expert.path is None:
                topics.append(f"{expert.reference}: from its model card")
                continue
            topic = wdata.infer_topic(expert.path)
            if not topic:
                raise InputError(f"cannot tell the domain of expert '{expert.reference}': no --expert-prompts "
                                 "given and its model card names no topic", field="--expert-prompts",
                                 hint=EXPERT_PROMPTS_HINT)
            topics.append(f"{expert.reference}: {topic}")
        return "self-questioning (" + "; ".join(topics) + ")"
    spec = str(spec)
    if spec == "toy":
        return "toy"
    path = _prompt_file(spec, "--expert-prompts")
    if not wdata.jsonl_has_answers(str(path)):
        from mergegate.audit.prompts import load_prompts

        try:
            load_prompts(str(path))
        except InputError as exc:
            raise InputError(exc.message, source=exc.source, field="--expert-prompts",
                             hint=exc.hint) from None
    return spec


__all__ = ["ExpertModel", "WeightingCheck", "check_weighting_options", "as_option_error", "OPTION_FLAGS",
           "EXPERT_PROMPTS_HINT"]
