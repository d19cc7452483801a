"""``report.json``: the typed record of one gate run, and the only input of cards, pushes and CI.

Rates are fractions in [0, 1] (as in :mod:`mergegate.audit.results`); policy thresholds are in
percent. The report is written atomically and redacted: no token ever reaches it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mergegate import __version__
from mergegate.atomic import write_redacted_json
from mergegate.audit.results import DatasetRef, GenerationSettings, JudgeRef, OffProtocolSummary
from mergegate.errors import InputError
from mergegate.gate.decision import GateDecision
from mergegate.gate.policy import GatePolicy
from mergegate.gate.summary import ModelSummary, _Model

REPORT_FILENAME = "report.json"
CARD_FILENAME = "README.md"
PLOT_FILENAME = "mergegate_alignment.png"
RECIPE_FILENAME = "mergekit_config.yml"
SCHEMA_VERSION = 1

Decision = Literal["pass", "blocked", "error"]


class LicenseInfo(_Model):
    """The merge's license, derived from its constituents; never guessed."""

    license: str | None = None  # set only when every constituent declares the same license
    license_name: str | None = None
    license_link: str | None = None
    per_model: dict[str, str | None] = Field(default_factory=dict)  # model -> license (None: unknown)
    conflict: bool = False
    unknown: list[str] = Field(default_factory=list)  # models whose license could not be read


class MergeInfo(_Model):
    """The declared recipe."""

    method: str | None = None
    base_model: str | None = None
    config_name: str  # file name of the recipe (no directory: paths stay local)
    config_text: str  # the recipe as declared, redacted (tokens → "***", home directory → ~), valid YAML
    config_sha256: str  # of the recipe exactly as declared (before redaction): matches the user's file
    config_redacted: bool = False  # a secret was redacted: config_text and mergekit_config.yml differ from it
    models: list[str] = Field(default_factory=list)  # every model the recipe references, in order


class WeightingSide(_Model):
    """One column of the declared-vs-optimized comparison."""

    weights: dict[str, float] = Field(default_factory=dict)  # gene ("weight[model]", "density[model]", "t") -> value
    alignment: float | None = None  # audited alignment of that merge (fraction)
    safety_loss: float | None = None  # mean answer cross-entropy on D_safety (lower: closer to refusals)
    domain_loss: float | None = None  # mean answer cross-entropy on D_expert (lower: knows the domain)


class WeightingSummary(_Model):
    """Safety-aware weighting (``--weighting cocktail|evomm``): what was declared, what was built."""

    strategy: str
    alpha: float
    evaluations: int
    seconds: float
    declared: WeightingSide
    optimized: WeightingSide
    declared_recipe: str  # the recipe as declared (redacted); merge.config_text is the optimized one
    safety_examples: int
    expert_examples: int


class ErrorInfo(_Model):
    type: str
    message: str
    exit_code: int = 3
    stage: str | None = None  # "policy", "merge", "audit", "decide", "card", "report"


class RunReport(_Model):
    """Everything one ``mergegate run`` established. Serialised as ``report.json``."""

    schema_version: int = SCHEMA_VERSION
    mergegate_version: str = __version__
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    name: str  # the merged model's display name (the output directory name unless --name)
    decision: Decision
    reasons: list[str] = Field(default_factory=list)
    gate: GateDecision | None = None  # every rule with value, threshold and verdict
    error: ErrorInfo | None = None
    merged: ModelSummary | None = None
    constituents: list[ModelSummary] = Field(default_factory=list)
    best_input: str | None = None
    policy: GatePolicy = Field(default_factory=GatePolicy)
    policy_source: str | None = None
    judge: JudgeRef | None = None
    protocol: str = "default"  # the audit protocol preset ("default" or "mergealign")
    prompts: DatasetRef | None = None
    benign: DatasetRef | None = None
    generation: GenerationSettings | None = None
    over_refusal_judge: str | None = None  # "xstest-strmatch" when over-refusal was measured
    off_protocol: OffProtocolSummary | None = None  # how often the judge answered off-protocol
    merge: MergeInfo | None = None
    weighting: WeightingSummary | None = None
    license: LicenseInfo | None = None
    files: dict[str, str] = Field(default_factory=dict)  # output file (posix, relative) -> sha256
    command: str | None = None  # the command that reproduces this run
    card: str | None = None  # card file name, when one was written
    plot: str | None = None

    @property
    def exit_code(self) -> int:
        if self.decision == "pass":
            return 0
        if self.decision == "blocked":
            return 1
        return self.error.exit_code if self.error else 3

    def models(self) -> list[ModelSummary]:
        """Constituents first, then the merge."""
        return [*self.constituents, *([self.merged] if self.merged else [])]


def write_report(report: RunReport, path: str | Path) -> Path:
    """Write ``report`` as JSON atomically (temp file + rename), every string redacted."""
    return write_redacted_json(path, report)


def load_report(path: str | Path) -> RunReport:
    """Read a ``report.json`` (or the one inside a directory).

    Raises:
        InputError: missing, not JSON, or not a mergegate report (exit code 2).
    """
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_FILENAME
    if not path.is_file():
        raise InputError("no mergegate report here", source=str(path),
                         hint="run `mergegate run CONFIG --out DIR` first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunReport.model_validate(data)
    except (json.JSONDecodeError, ValidationError) as exc:
        raise InputError(f"not a valid mergegate report: {exc}", source=str(path)) from None


__all__ = ["RunReport", "ModelSummary", "LicenseInfo", "MergeInfo", "ErrorInfo", "Decision",
           "write_report", "load_report", "REPORT_FILENAME", "CARD_FILENAME", "PLOT_FILENAME",
           "RECIPE_FILENAME"]
