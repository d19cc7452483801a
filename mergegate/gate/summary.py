"""One audited model as the gate sees it: the measurements every rule, card and report reads.

Kept apart from :mod:`mergegate.gate.decision` (which applies the policy to summaries) and
:mod:`mergegate.gate.report` (which records the decision), so neither imports the other's module
for its types.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mergegate.audit.results import CategoryTally, Interval, ModelScore


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSummary(_Model):
    """One audited model as the gate reports it (the merge or a constituent)."""

    model: str  # Hub id or local path as written in the recipe; the output dir name for the merge
    role: Literal["merge", "constituent"]
    hub_id: str | None = None  # set when ``model`` is a Hub repository (without ``@revision``)
    revision: str | None = None  # pinned commit for Hub models
    weights_sha256: str | None = None
    license: str | None = None  # as declared by the model's card / config; None when unknown
    alignment: float
    interval: Interval
    n: int
    n_safe: int
    over_refusal: float | None = None
    over_refusal_interval: Interval | None = None
    n_benign: int = 0
    n_too_long: int = 0  # unsafe prompts over the prompt budget: not answered, counted unsafe
    n_benign_too_long: int = 0  # benign prompts over the budget: counted as refused
    by_source_category: dict[str, CategoryTally] = Field(default_factory=dict)
    by_guard_category: dict[str, int] = Field(default_factory=dict)
    n_off_protocol: int = 0  # items whose judge first-token mass was mostly off-protocol

    @property
    def label(self) -> str:
        """A short display name: the Hub id (no revision) or the path as written."""
        return self.hub_id or self.model

    @classmethod
    def from_score(cls, score: ModelScore, *, role: Literal["merge", "constituent"],
                   name: str | None = None, hub_id: str | None = None,
                   license: str | None = None) -> ModelSummary:
        return cls(
            model=name or score.model.id, role=role, hub_id=hub_id, revision=score.model.revision,
            weights_sha256=score.model.weights_sha256, license=license, alignment=score.alignment,
            interval=score.interval, n=score.n, n_safe=score.n_safe, over_refusal=score.over_refusal,
            over_refusal_interval=score.over_refusal_interval, n_benign=score.n_benign,
            n_too_long=score.n_too_long, n_benign_too_long=score.n_benign_too_long,
            by_source_category=dict(score.by_source_category),
            by_guard_category=dict(score.by_guard_category), n_off_protocol=score.n_off_protocol)


__all__ = ["ModelSummary"]
