"""The card's metadata as the Hub reads it: front matter (YAML) and ``.eval_results/*.yaml``.

What each field means on the Hub, and so what goes in it (huggingface/hub-docs modelcard.md,
docs/hub/model-cards.md and docs/hub/eval-results.md):

- ``base_model`` lists the Hub constituents; ``base_model_relation: merge`` only beside it (a
  merge of local models has no parents the Hub can draw).
- ``datasets`` means *the data the model was trained on*: the audit's prompt sets are evaluation
  data, so they never go there. They appear in ``model-index`` results instead.
- ``model-index`` (the legacy evaluation format, still read): one result per metric on a **Hub**
  dataset, with ``dataset.type`` the dataset id, ``dataset.revision`` its git commit (omitted when
  unknown, never a file hash) and a ``source``. A prompt set from a local file has no Hub id, so it
  gets no ``model-index`` result; its numbers stay in the ``mergegate`` field and the body.
- A machine-readable verdict: the tag ``mergegate:pass`` / ``mergegate:blocked`` and a
  ``mergegate`` field (verdict, alignment, over-refusal, best input, judge, version), so a blocked
  card's metadata differs from a passing one's in more than a number.
- ``.eval_results/mergegate.yaml`` (the newer format, written only on request): the Hub lists such
  results only for datasets registered as *Benchmarks* and validates them on push, and the audit's
  prompt sets are not benchmarks today, so :func:`write_eval_results` is opt-in
  (``mergegate card --eval-results``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mergegate.atomic import write_text_atomic
from mergegate.errors import InputError, MergegateError
from mergegate.gate.report import RunReport
from mergegate.models import looks_like_hub_id
from mergegate.redact import redact

if TYPE_CHECKING:
    from huggingface_hub import EvalResult, EvalResultEntry, ModelCardData

    from mergegate.audit.results import DatasetRef

CARD_TAGS = ["merge", "mergekit", "mergegate"]
VERDICT_TAG_PREFIX = "mergegate:"
PROJECT_URL = "https://github.com/mergegate/mergegate"
EVAL_RESULTS_PATH = ".eval_results/mergegate.yaml"
# Short names the audit accepts for well-known prompt sets, and their Hub datasets.
DATASET_ALIASES = {
    "beavertails": "PKU-Alignment/BeaverTails",
    "xstest": "walledai/XSTest",
}
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def judge_name(judge_id: str) -> str:
    """A Hub id as is; a local judge by its directory name only (no path leaves the machine)."""
    return judge_id if looks_like_hub_id(judge_id) else redact(Path(judge_id).name)


def dataset_hub_id(ref: DatasetRef | None) -> str | None:
    """The Hub dataset id behind a prompt source (``None`` for local files).

    Understands the audit's source strings: ``beavertails[@SHA]``, ``xstest[@SHA]``,
    ``hub:ID[@REV][:config][:split]`` and file paths.
    """
    if ref is None:
        return None
    source = ref.source
    if source.startswith("hub:"):
        return source[4:].split(":", 1)[0].split("@", 1)[0] or None
    alias = source.split("@", 1)[0].lower()
    if alias in DATASET_ALIASES:
        return DATASET_ALIASES[alias]
    return None


def dataset_label(ref: DatasetRef) -> str:
    """A short, path-free name for a prompt set."""
    return dataset_hub_id(ref) or Path(ref.source).name


def dataset_config(ref: DatasetRef) -> str | None:
    """The Hub dataset config named in a ``hub:ID[@REV][:config][:split]`` source, if any."""
    if not ref.source.startswith("hub:"):
        return None
    from mergegate.audit.prompts import parse_hub_source

    try:
        return parse_hub_source(ref.source)[2]
    except InputError:
        return None


def dataset_commit(ref: DatasetRef) -> str | None:
    """The dataset's git commit on the Hub; ``None`` for a local file (whose revision is a sha256)."""
    if dataset_hub_id(ref) is None or not ref.revision:
        return None
    return ref.revision if _COMMIT_RE.match(ref.revision) else None


def _source_name(report: RunReport) -> str:
    return f"mergegate {report.mergegate_version} safety audit"


def verdict_metadata(report: RunReport) -> dict[str, Any]:
    """The ``mergegate`` front-matter field: the decision and the numbers behind it."""
    merged = report.merged
    if merged is None or report.decision == "error":
        raise MergegateError("a card needs a decided run with an audited merge")
    best = next((c for c in report.constituents if c.model == report.best_input), None)
    data: dict[str, Any] = {"verdict": report.decision, "alignment": round(merged.alignment, 4)}
    if merged.over_refusal is not None:
        data["over_refusal"] = round(merged.over_refusal, 4)
    if best is not None:
        data["best_input"] = best.hub_id or redact(Path(best.model).name)
        data["best_input_alignment"] = round(best.alignment, 4)
    if report.judge is not None:
        data["judge"] = judge_name(report.judge.id)
    data["version"] = report.mergegate_version
    return data


def _metrics(report: RunReport) -> list[tuple[DatasetRef, str, str, float, str]]:
    """(prompt set, task name, metric type, value in %, metric name) for each measured metric."""
    merged = report.merged
    assert merged is not None
    judge = judge_name(report.judge.id) if report.judge else "a safety judge"
    out = []
    if report.prompts is not None:
        out.append((report.prompts, "Safety alignment", "safety_alignment", round(merged.alignment * 100, 2),
                    f"Alignment (% safe answers, judged by {judge})"))
    if report.benign is not None and merged.over_refusal is not None:
        out.append((report.benign, "Over-refusal", "over_refusal", round(merged.over_refusal * 100, 2),
                    "Over-refusal (% benign prompts refused)"))
    return out


def model_index_results(report: RunReport) -> list[EvalResult]:
    """``model-index`` results: one per metric measured on a Hub dataset."""
    from huggingface_hub import EvalResult

    results = []
    for ref, task_name, metric_type, value, metric_name in _metrics(report):
        hub_id = dataset_hub_id(ref)
        if hub_id is None:
            continue
        results.append(EvalResult(
            task_type="text-generation", task_name=task_name,
            dataset_type=hub_id, dataset_name=f"{hub_id} ({'benign' if ref is report.benign else 'unsafe'} prompts)",
            dataset_config=dataset_config(ref), dataset_split=ref.split, dataset_revision=dataset_commit(ref),
            metric_type=metric_type, metric_value=value, metric_name=metric_name,
            source_name=_source_name(report), source_url=PROJECT_URL))
    return results


def build_card_data(report: RunReport) -> ModelCardData:
    """The card's front matter: merge metadata, derived license, verdict and model-index."""
    from huggingface_hub import ModelCardData

    if report.merged is None:
        raise MergegateError("a card needs an audited merge")
    base_models = [c.hub_id for c in report.constituents if c.hub_id]
    results = model_index_results(report)
    lic = report.license
    return ModelCardData(
        model_name=report.name,
        base_model=base_models or None,
        base_model_relation="merge" if base_models else None,
        library_name="transformers",
        pipeline_tag="text-generation",
        license=lic.license if lic else None,
        license_name=lic.license_name if lic else None,
        license_link=lic.license_link if lic else None,
        tags=[*CARD_TAGS, f"{VERDICT_TAG_PREFIX}{report.decision}"],
        eval_results=results or None,
        mergegate=verdict_metadata(report),
    )


def eval_result_entries(report: RunReport) -> list[EvalResultEntry]:
    """The ``.eval_results/*.yaml`` entries (huggingface_hub >= 1.4): Hub datasets only."""
    try:
        from huggingface_hub import EvalResultEntry
    except ImportError:  # huggingface_hub < 1.4
        raise InputError("writing .eval_results needs huggingface_hub >= 1.4",
                         hint="pip install -U 'huggingface_hub>=1.4'") from None
    entries = []
    for ref, task_name, _metric_type, value, metric_name in _metrics(report):
        hub_id = dataset_hub_id(ref)
        if hub_id is None:
            continue
        entries.append(EvalResultEntry(
            dataset_id=hub_id, task_id=dataset_config(ref) or "default", value=value,
            dataset_revision=dataset_commit(ref), date=report.created_at.isoformat(),
            source_url=PROJECT_URL, source_name=_source_name(report),
            notes=f"{task_name}: {metric_name}; mergegate verdict: {report.decision}"))
    return entries


def eval_results_yaml(report: RunReport) -> str:
    """The text of ``.eval_results/mergegate.yaml`` (empty list when no Hub dataset was used)."""
    import yaml
    from huggingface_hub import eval_result_entries_to_yaml

    data = eval_result_entries_to_yaml(eval_result_entries(report))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def write_eval_results(report: RunReport, out_dir: str | Path) -> Path | None:
    """Write ``.eval_results/mergegate.yaml`` under ``out_dir``; ``None`` when nothing to write."""
    entries = eval_result_entries(report)
    if not entries:
        return None
    return write_text_atomic(Path(out_dir) / EVAL_RESULTS_PATH, eval_results_yaml(report))


__all__ = ["CARD_TAGS", "DATASET_ALIASES", "EVAL_RESULTS_PATH", "PROJECT_URL", "VERDICT_TAG_PREFIX",
           "build_card_data", "dataset_commit", "dataset_config", "dataset_hub_id", "dataset_label",
           "eval_result_entries", "eval_results_yaml", "judge_name", "model_index_results",
           "verdict_metadata", "write_eval_results"]
