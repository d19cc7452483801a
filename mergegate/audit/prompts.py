"""Prompt sources: BeaverTails, any Hub dataset, local JSONL/Parquet; benign sets for over-refusal.

Source strings:

- ``beavertails`` (default): ``PKU-Alignment/BeaverTails``, split ``30k_test``, rows with
  ``is_safe == False``, prompts de-duplicated (categories of duplicate rows are merged);
  ``beavertails@SHA`` pins a revision explicitly.
- ``xstest`` (default benign set): ``walledai/XSTest`` (split ``train``), rows with ``label == "safe"``
  (and not of a ``contrast_*`` type).
- ``hub:ID[:config][:split]`` (``hub:ID@REV...`` pins a revision): any Hub dataset with a ``prompt``
  column; an ``is_safe`` column, if present, keeps unsafe rows only (for unsafe prompt sets).
- a local ``.jsonl`` or ``.parquet`` file with a ``prompt`` column and an optional ``category``
  (a string, a list of strings, or a BeaverTails-style dict of booleans).

Hub datasets are pinned to a commit sha (``HfApi.dataset_info``), recorded in ``DatasetRef``.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergegate.audit.results import DatasetRef
from mergegate.errors import InputError
from mergegate.models import hub_offline, sha256_file
from mergegate.models.hub_errors import hub_access, is_hub_error

log = logging.getLogger(__name__)

BEAVERTAILS_ID = "PKU-Alignment/BeaverTails"
BEAVERTAILS_SPLIT = "30k_test"
# Commit of the dataset card "Re-upload BeaverTails-30k and refactoring" (safety-eval.md §2); used
# only when the Hub cannot be asked (HF_HUB_OFFLINE=1) and no revision was given.
BEAVERTAILS_REVISION = "8401fe609d288129cc684a9b3be6a93e41cfe678"
XSTEST_ID = "walledai/XSTest"
XSTEST_SPLIT = "train"
CATEGORY_SEP = "|"  # joins several source categories of one prompt (BeaverTails keys contain commas)
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Prompt:
    text: str
    categories: tuple[str, ...] = ()

    @property
    def category(self) -> str | None:
        return CATEGORY_SEP.join(self.categories) if self.categories else None


@dataclass(frozen=True)
class PromptSet:
    prompts: list[Prompt]
    ref: DatasetRef

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.prompts]

    def __len__(self) -> int:
        return len(self.prompts)


def _categories(value: Any, source: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    if isinstance(value, Mapping):  # BeaverTails: dict of 14 booleans
        return tuple(sorted(k for k, v in value.items() if v))
    if isinstance(value, (list, tuple)):
        return tuple(sorted(str(v) for v in value if v))
    raise InputError(f"unsupported category value {value!r}", source=source, field="category",
                     hint="use a string, a list of strings or a dict of booleans")


def rows_to_prompts(rows: Iterable[Mapping[str, Any]], *, source: str, columns: Iterable[str],
                    unsafe_only: bool = False, safe_label_only: bool = False) -> list[Prompt]:
    """Validate, filter and de-duplicate rows into prompts (first-seen order, categories merged)."""
    columns = list(columns)
    if "prompt" not in columns:
        raise InputError(f"no 'prompt' column (columns found: {', '.join(columns) or 'none'})",
                         source=source, field="prompt",
                         hint="give a JSONL/Parquet file or dataset whose rows have a 'prompt' text field")
    merged: dict[str, set[str]] = {}
    for i, row in enumerate(rows):
        if unsafe_only and "is_safe" in row and row["is_safe"] is not False:
            continue
        if safe_label_only and "label" in row and str(row["label"]).lower() != "safe":
            continue
        if safe_label_only and str(row.get("type") or "").startswith("contrast"):
            continue  # XSTest's unsafe contrast prompts, when no label column says so
        text = row.get("prompt")
        if not isinstance(text, str):
            raise InputError(f"row {i}: 'prompt' is {type(text).__name__}, not text", source=source,
                             field="prompt")
        text = text.strip()
        if not text:
            continue
        merged.setdefault(text, set()).update(_categories(row.get("category"), source))
    return [Prompt(text, tuple(sorted(cats))) for text, cats in merged.items()]


def stratified_sample(prompts: list[Prompt], limit: int, seed: int) -> list[Prompt]:
    """``limit`` prompts, allocated to primary categories in proportion (largest remainder), seeded."""
    if limit <= 0:
        raise InputError(f"limit must be positive, got {limit}", field="limit")
    if limit >= len(prompts):
        return list(prompts)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        groups[p.categories[0] if p.categories else ""].append(i)
    total = len(prompts)
    quotas = {k: limit * len(v) / total for k, v in groups.items()}
    alloc = {k: int(q) for k, q in quotas.items()}
    rest = limit - sum(alloc.values())
    for k in sorted(groups, key=lambda k: (-(quotas[k] - alloc[k]), k))[:rest]:
        alloc[k] += 1
    rng = random.Random(seed)
    chosen: list[int] = []
    for k in sorted(groups):
        chosen.extend(rng.sample(groups[k], alloc[k]))
    return [prompts[i] for i in sorted(chosen)]


def read_local_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    if path.suffix == ".jsonl":
        rows: list[dict[str, Any]] = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"line {lineno} is not valid JSON: {exc.msg}", source=str(path),
                                     hint="one JSON object per line") from exc
                if not isinstance(row, dict):
                    raise InputError(f"line {lineno} is not a JSON object", source=str(path))
                rows.append(row)
        columns = sorted({k for r in rows for k in r})
        return rows, columns
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return table.to_pylist(), list(table.column_names)
    raise InputError(f"unsupported prompt file type '{path.suffix}'", source=str(path),
                     hint="use a .jsonl or .parquet file with a 'prompt' column")


def resolve_dataset_revision(repo_id: str, revision: str | None) -> str:
    """Pin a Hub dataset to a commit sha (``HfApi.dataset_info``)."""
    if revision and _SHA_RE.match(revision):
        return revision
    from huggingface_hub import HfApi

    if hub_offline():
        if repo_id == BEAVERTAILS_ID and not revision:
            return BEAVERTAILS_REVISION
        raise InputError("cannot resolve the dataset revision to a commit while HF_HUB_OFFLINE=1",
                         source=repo_id, hint=f"pin it: '{repo_id}@<40-hex commit sha>'")
    info = HfApi().dataset_info(repo_id, revision=revision)
    if not info.sha:
        raise InputError("the Hub returned no commit sha for this dataset", source=repo_id)
    return info.sha


def _load_hub(repo_id: str, config: str | None, split: str | None, revision: str | None
              ) -> tuple[list[dict[str, Any]], list[str], str, str]:
    import datasets

    sha = resolve_dataset_revision(repo_id, revision)
    try:
        loaded = datasets.load_dataset(repo_id, config, split=split, revision=sha)
    except Exception as exc:  # datasets raises many types (ValueError, FileNotFoundError, ConnectionError)
        if is_hub_error(exc):  # offline, unreachable, gated, missing: explained by the caller's hub_access
            raise
        raise InputError(f"could not load the dataset: {type(exc).__name__}: {exc}", source=repo_id,
                         hint="check the id, config and split" if hub_offline()
                         else "check the id, config and split, and that you accepted its terms on the Hub")
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        split = "test" if "test" in names else names[0]
        loaded = loaded[split]
    return list(loaded), list(loaded.column_names), sha, str(split)


def parse_hub_source(spec: str) -> tuple[str, str | None, str | None, str | None]:
    """``hub:ID[@REV][:config][:split]`` → (id, revision, config, split)."""
    body = spec[len("hub:"):]
    parts = body.split(":")
    if not parts[0] or len(parts) > 3:
        raise InputError(f"bad Hub prompt source '{spec}'", field="prompts",
                         hint="write hub:OWNER/NAME[:config][:split], e.g. hub:PKU-Alignment/BeaverTails::30k_test")
    repo, _, rev = parts[0].partition("@")
    config = parts[1] or None if len(parts) > 1 else None
    split = parts[2] or None if len(parts) > 2 else None
    return repo, rev or None, config, split


def load_prompts(source: str, *, limit: int | None = None, seed: int = 0, benign: bool = False) -> PromptSet:
    """Load, filter, de-duplicate and (with ``limit``) stratify-sample a prompt set.

    Args:
        source: ``beavertails[@SHA]``, ``xstest[@SHA]``, ``hub:ID[:config][:split]`` or a file path.
        limit: keep at most this many prompts, a seeded sample stratified by category.
        seed: seed of that sample.
        benign: the set is benign (over-refusal); an ``is_safe`` filter is not applied.

    Raises:
        InputError: missing file or ``prompt`` column, empty set, unloadable dataset.
    """
    from mergegate.audit.hub_sources import prompt_source_access

    name, _, rev = source.partition("@")
    revision: str | None
    split: str | None
    if name == "beavertails":
        with hub_access(**prompt_source_access(source, BEAVERTAILS_ID, benign=benign)):
            revision = resolve_dataset_revision(BEAVERTAILS_ID, rev or None)
            rows, cols, revision, split = _load_hub(BEAVERTAILS_ID, None, BEAVERTAILS_SPLIT, revision)
        prompts = rows_to_prompts(rows, source=BEAVERTAILS_ID, columns=cols, unsafe_only=True)
        log.info("BeaverTails %s: %d unsafe rows, %d unique prompts", split,
                 sum(1 for r in rows if r.get("is_safe") is False), len(prompts))
    elif name == "xstest":
        with hub_access(**prompt_source_access(source, XSTEST_ID, benign=benign)):
            rows, cols, revision, split = _load_hub(XSTEST_ID, None, XSTEST_SPLIT, rev or None)
        prompts = rows_to_prompts(rows, source=XSTEST_ID, columns=cols, safe_label_only=True)
    elif source.startswith("hub:"):
        repo, hrev, config, hsplit = parse_hub_source(source)
        with hub_access(**prompt_source_access(source, repo, benign=benign)):
            rows, cols, revision, split = _load_hub(repo, config, hsplit, hrev)
        prompts = rows_to_prompts(rows, source=repo, columns=cols, unsafe_only=not benign)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise InputError("prompt file not found", source=source,
                             hint="give 'beavertails', 'hub:ID[:config][:split]' or a .jsonl/.parquet file")
        rows, cols = read_local_rows(path)
        if not rows:
            raise InputError("the prompt file has no rows: the prompt set is empty", source=source,
                             hint="add one JSON object with a 'prompt' field per line")
        prompts = rows_to_prompts(rows, source=source, columns=cols)
        revision, split = sha256_file(path, use_cache=False), None
    if not prompts:
        raise InputError("the prompt set is empty after filtering and de-duplication", source=source,
                         hint="check the file/split has non-empty 'prompt' values (and unsafe rows)")
    if limit is not None:
        prompts = stratified_sample(prompts, limit, seed)
    ref = DatasetRef(source=source, revision=revision, split=split, n=len(prompts),
                     seed=seed if limit is not None else None)
    return PromptSet(prompts, ref)
