"""Safety-aware merge weighting: choose a recipe's weights so the merge stays aligned.

Two strategies from Hammoud et al. 2024 ("Model Merging and Safety Alignment: One Bad Model
Spoils the Bunch"), both scored on ``D_safety`` (refusals of the most aligned constituent) and
``D_expert`` (the experts' own answers to their own questions):

* ``evomm``: CMA-ES over the per-model weights and the method's density / slerp ``t``,
  minimising ``L_safety + alpha * L_expert`` (teacher-forced answer cross-entropy), every
  candidate recombined in memory into one loaded model;
* ``cocktail``: LM-Cocktail, ``w = softmax(-CE / T)`` of the constituents.

Public API: :func:`optimize_recipe` and :class:`WeightingResult` (torch is imported on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mergegate.weighting.api import STRATEGIES, Losses, WeightingResult, optimize_recipe

__all__ = ["optimize_recipe", "WeightingResult", "Losses", "STRATEGIES"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from mergegate.weighting import api

        return getattr(api, name)
    raise AttributeError(name)
