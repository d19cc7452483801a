"""Typed audit results. These are the contract between audit, gate, templates and batch.

All rates are fractions in [0, 1]; cards and tables render them as percentages.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelRef(_Frozen):
    """A model as audited: where it came from, pinned."""

    id: str  # Hub id or local path as the user wrote it
    revision: str | None = None  # commit sha for Hub models; None for local dirs
    weights_sha256: str | None = None  # sha256 over the sorted per-file sha256 of the weight files
    local_path: str | None = None


class DatasetRef(_Frozen):
    """A prompt set: source, pinned revision and what was drawn from it."""

    source: str  # "beavertails", "hub:ID[:config][:split]" or a local file path
    revision: str | None = None  # Hub dataset commit sha, or sha256 of a local file
    split: str | None = None
    n: int  # prompts used after filtering, de-duplication and --limit
    seed: int | None = None  # seed of the stratified sample when --limit was given
    rows: int | None = None  # rows read from the source, before any filter
    kept: int | None = None  # rows that passed the label filter
    filter: str | None = None  # the label filter applied, e.g. "is_safe == false"; None: none applied
    deduplicated: bool = True  # identical prompts judged once (False: every row, as the seed paper)


class JudgeRef(_Frozen):
    id: str
    revision: str | None = None
    protocol: str  # "llama-guard-1" | "llama-guard-2" | "llama-guard-3" | "llama-guard-4" | "refusal-patterns"
    # how a verdict is read: "first-token" (P(unsafe) / (P(safe) + P(unsafe)) of the first answer token),
    # "generate" ('unsafe' in the greedy answer, the seed paper's rule) or "refusal-patterns"
    scoring: str = "first-token"
    categories: dict[str, str] = Field(default_factory=dict)  # code -> the judge's name for it


class GenerationSettings(_Frozen):
    backend: str = "transformers"
    max_new_tokens: int = 512
    greedy: bool = True
    chat_template: str | None = None  # set only when the user overrode the model's own template
    # prompts over min(this, context - max_new_tokens) tokens are not answered (count against the model);
    # not part of the answer cache key: an answer does not depend on it
    max_prompt_tokens: int | None = None


class Interval(_Frozen):
    low: float
    high: float
    confidence: float = 0.95
    method: str = "wilson"


class CategoryTally(_Frozen):
    n: int  # prompts (source category) or answers flagged (guard category)
    unsafe: int = 0


class Verdict(_Frozen):
    """One judged answer."""

    unsafe: bool
    p_unsafe: float  # P(unsafe) / (P(safe) + P(unsafe)) over the first answer token (1/0 when generated)
    categories: tuple[str, ...] = ()  # guard category codes, e.g. ("S1",); empty when safe
    p_unsafe_token: float | None = None  # raw probability of the 'unsafe' first tokens
    off_protocol: float | None = None  # probability of first tokens that are neither 'safe' nor 'unsafe'
    top_token: str | None = None  # the most likely first token, recorded when it is off-protocol

    @property
    def off_protocol_dominant(self) -> bool:
        """The judge put most of its first-token mass on something other than safe/unsafe."""
        return self.off_protocol is not None and self.off_protocol > 0.5


class ItemResult(_Frozen):
    prompt: str
    category: str | None = None  # source (BeaverTails) category
    answer: str
    verdict: Verdict
    # why the prompt was not put to the model ("prompt_too_long"); such an item counts as unsafe
    skipped: str | None = None


class ModelScore(_Frozen):
    """The audit of one model on one prompt set."""

    model: ModelRef
    n: int
    n_safe: int
    alignment: float  # n_safe / n
    interval: Interval
    over_refusal: float | None = None  # share of benign prompts refused; None when not measured
    over_refusal_interval: Interval | None = None
    n_benign: int = 0
    # prompts longer than the model's prompt budget, not answered: unsafe ones count as unsafe
    # answers (in n, not in n_safe), benign ones as refusals (fail closed)
    n_too_long: int = 0
    n_benign_too_long: int = 0
    by_source_category: dict[str, CategoryTally] = Field(default_factory=dict)
    by_guard_category: dict[str, int] = Field(default_factory=dict)
    n_off_protocol: int = 0  # items whose judge first-token mass was mostly off-protocol
    items: list[ItemResult] = Field(default_factory=list)  # kept for reports; may be dropped for size


class PairedComparison(_Frozen):
    """McNemar's exact test between two models answered on the same prompts."""

    model_a: str
    model_b: str
    a_safe_b_unsafe: int
    a_unsafe_b_safe: int
    p_value: float
    n: int = 0  # prompts both answered


class OffProtocolExample(_Frozen):
    prompt: str
    answer: str
    off_protocol: float
    top_token: str | None = None


class OffProtocolSummary(_Frozen):
    """How often the judge's first-token mass went mostly to tokens other than safe/unsafe."""

    n: int  # judged items
    n_dominant: int  # items with off-protocol mass > 0.5
    share: float
    max_share: float  # above this share (and at least MIN_OFF_PROTOCOL_ITEMS items) the audit fails
    examples: list[OffProtocolExample] = Field(default_factory=list)


class AuditReport(_Frozen):
    scores: list[ModelScore]
    judge: JudgeRef
    prompts: DatasetRef
    benign: DatasetRef | None = None
    generation: GenerationSettings
    comparisons: list[PairedComparison] = Field(default_factory=list)
    protocol: str = "default"  # the audit protocol preset ("default" or "mergealign")
    over_refusal_judge: str | None = None  # e.g. "xstest-strmatch"; None when not measured
    off_protocol: OffProtocolSummary | None = None  # Llama Guard judges only
    mergegate_version: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    def score_for(self, model_id: str) -> ModelScore:
        for score in self.scores:
            if score.model.id == model_id:
                return score
        raise KeyError(model_id)
