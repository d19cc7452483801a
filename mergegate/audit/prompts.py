"""Prompt sources: BeaverTails, any Hub dataset, local JSONL/Parquet; benign sets for over-refusal.

Source strings:

- ``beavertails`` (default): ``PKU-Alignment/BeaverTails``, split ``30k_test``, rows with
  ``is_safe == False``, prompts de-duplicated (categories of duplicate rows are merged);
  ``beavertails@SHA`` pins a revision explicitly.
- ``beavertails-rows[@SHA]``: the same rows *not* de-duplicated (every unsafe row is a prompt, as the
  seed paper judged 1,733 rows holding 1,483 distinct prompts: hammoudhasan/MergeAlign
  ``evaluation/llama_guard_eval/responses/beaver_tails_aaditya_Llama3_OpenBioLLM_8B.json``).
- ``xstest`` (default benign set): ``walledai/XSTest``, the split that exists (``test`` on the Hub copy
  evaluation harnesses load, e.g. stanford-crfm/helm ``src/helm/benchmark/scenarios/xstest_scenario.py``
  ``load_dataset("walledai/XSTest", split="test")``), rows with ``label == "safe"`` (and not of a
  ``contrast_*`` type: paul-rottger/exaggerated-safety ``xstest_prompts.csv`` has 250 safe and 200
  ``contrast_*`` unsafe prompts).
- ``hub:ID[:config][:split]`` (``hub:ID@REV...`` pins a revision): any Hub dataset with a ``prompt``
  column; an ``is_safe`` column, if present, keeps unsafe rows only (for unsafe prompt sets).
- a local ``.jsonl``, ``.jsonl.gz`` (as BeaverTails ships ``round0/30k/test.jsonl.gz``), ``.csv`` (as
  XSTest ships ``xstest_prompts.csv``) or ``.parquet`` file with a ``prompt`` column and an optional
  ``category`` (a string, a list of strings, or a BeaverTails-style dict of booleans).

The same label filters apply to local files as to the Hub: an unsafe set keeps rows with
``is_safe == false`` when the column exists; a benign set keeps rows with ``label == "safe"`` (and no
``contrast_*`` type) when those columns exist. How many rows were read, kept and why is recorded in
``DatasetRef`` (``rows``, ``kept``, ``filter``) and logged.

Hub datasets are pinned to a commit sha (``HfApi.dataset_info``), recorded in ``DatasetRef``.
"""

from __future__ import annotations

import csv
import gzip
import io
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

log = logging.getLogger(__name__)

BEAVERTAILS_ID = "PKU-Alignment/BeaverTails"
BEAVERTAILS_SPLIT = "30k_test"
# Commit of the dataset card "Re-upload BeaverTails-30k and refactoring" (safety-eval.md §2); used
# only when the Hub cannot be asked (HF_HUB_OFFLINE=1) and no revision was given.
BEAVERTAILS_REVISION = "8401fe609d288129cc684a9b3be6a93e41cfe678"
XSTEST_ID = "walledai/XSTest"
XSTEST_SPLIT: str | None = None  # whichever split the repo has ("test" preferred)
PREFERRED_SPLITS = ("test", "train")
UNSAFE_FILTER = "is_safe == false"
BENIGN_FILTER = "label == 'safe' and type not contrast_*"
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


def _is_false(value: Any) -> bool:
    """``is_safe`` as JSON (a bool) or as CSV/parquet text ("False", "false", "0")."""
    if isinstance(value, bool):
        return value is False
    if isinstance(value, (int, float)):
        return value == 0
    return isinstance(value, str) and value.strip().lower() in ("false", "0", "no")


@dataclass(frozen=True)
class FilterStats:
    rows: int  # rows read
    kept: int  # rows that passed the label filter
    filter: str | None  # the filter applied (None: no label column to filter on)


def filter_rows(rows: list[Mapping[str, Any]], columns: Iterable[str], *, unsafe_only: bool = False,
                safe_label_only: bool = False) -> tuple[list[Mapping[str, Any]], FilterStats]:
    """Apply the label filter of an unsafe set (``is_safe == false``) or a benign set (XSTest's safe
    label, contrast prompts dropped), when the rows have those columns."""
    columns = set(columns)
    applied: str | None = None
    kept = rows
    if unsafe_only and "is_safe" in columns:
        kept, applied = [r for r in kept if _is_false(r.get("is_safe"))], UNSAFE_FILTER
    if safe_label_only and ("label" in columns or "type" in columns):
        kept = [r for r in kept if ("label" not in columns or str(r.get("label")).strip().lower() == "safe")
                and not str(r.get("type") or "").startswith("contrast")]
        applied = BENIGN_FILTER
    return kept, FilterStats(rows=len(rows), kept=len(kept), filter=applied)


def rows_to_prompts(rows: Iterable[Mapping[str, Any]], *, source: str, columns: Iterable[str],
                    unsafe_only: bool = False, safe_label_only: bool = False, dedupe: bool = True) -> list[Prompt]:
    """Validate, filter and de-duplicate rows into prompts (first-seen order, categories merged).

    With ``dedupe=False`` every kept row is a prompt (duplicates stay, in row order).
    """
    columns = list(columns)
    if "prompt" not in columns:
        raise InputError(f"no 'prompt' column (columns found: {', '.join(columns) or 'none'})",
                         source=source, field="prompt",
                         hint="give a JSONL/CSV/Parquet file or dataset whose rows have a 'prompt' text field")
    kept, _ = filter_rows(list(rows), columns, unsafe_only=unsafe_only, safe_label_only=safe_label_only)
    merged: dict[str, set[str]] = {}
    every: list[Prompt] = []
    for i, row in enumerate(kept):
        text = row.get("prompt")
        if not isinstance(text, str):
            raise InputError(f"row {i}: 'prompt' is {type(text).__name__}, not text", source=source,
                             field="prompt")
        text = text.strip()
        if not text:
            continue
        cats = _categories(row.get("category"), source)
        merged.setdefault(text, set()).update(cats)
        every.append(Prompt(text, tuple(sorted(cats))))
    if not dedupe:
        return every
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


LOCAL_SUFFIXES = (".jsonl", ".jsonl.gz", ".csv", ".parquet")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in LOCAL_SUFFIXES if name.endswith(s)), path.suffix)


def _text_lines(path: Path, raw: bytes) -> list[str]:
    """The file's lines as text; a byte that is not UTF-8 is an error naming the file and the line."""
    lines = raw.split(b"\n")
    out = []
    for lineno, line in enumerate(lines, 1):
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InputError(f"line {lineno} is not valid UTF-8 (byte 0x{line[exc.start]:02x} at column "
                             f"{exc.start + 1})", source=str(path), field="encoding",
                             hint="save the prompt file as UTF-8") from None
    return out


def _read_bytes(path: Path) -> bytes:
    if _suffix(path) == ".jsonl.gz":
        try:
            with gzip.open(path, "rb") as fh:
                return fh.read()
        except (OSError, EOFError) as exc:
            raise InputError(f"not a readable gzip file: {exc}", source=str(path),
                             hint="give a gzip-compressed JSONL file (.jsonl.gz)") from None
    return path.read_bytes()


def read_local_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    suffix = _suffix(path)
    if suffix in (".jsonl", ".jsonl.gz"):
        rows: list[dict[str, Any]] = []
        for lineno, line in enumerate(_text_lines(path, _read_bytes(path)), 1):
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
    if suffix == ".csv":
        text = "\n".join(_text_lines(path, _read_bytes(path)))
        reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
        try:
            rows = [dict(r) for r in reader]
        except csv.Error as exc:
            raise InputError(f"line {reader.line_num}: not valid CSV: {exc}", source=str(path)) from None
        return rows, list(reader.fieldnames or [])
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return table.to_pylist(), list(table.column_names)
    raise InputError(f"unsupported prompt file type '{path.suffix}'", source=str(path),
                     hint="use a .jsonl, .jsonl.gz, .csv or .parquet file with a 'prompt' column")


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
        raise InputError(f"could not load the dataset: {type(exc).__name__}: {exc}", source=repo_id,
                         hint="check the id, config and split, and that you accepted its terms on the Hub")
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        split = next((n for n in PREFERRED_SPLITS if n in names), names[0])
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
        source: ``beavertails[@SHA]``, ``beavertails-rows[@SHA]``, ``xstest[@SHA]``,
            ``hub:ID[:config][:split]`` or a file path (.jsonl, .jsonl.gz, .csv, .parquet).
        limit: keep at most this many prompts, a seeded sample stratified by category.
        seed: seed of that sample.
        benign: the set is benign (over-refusal): XSTest's safe-label filter instead of ``is_safe``.

    Raises:
        InputError: missing file or ``prompt`` column, a file that is not UTF-8 (naming the line),
            empty set, unloadable dataset.
    """
    name, _, rev = source.partition("@")
    revision: str | None
    split: str | None
    dedupe = True
    if name in ("beavertails", "beavertails-rows"):
        dedupe = name == "beavertails"
        revision = resolve_dataset_revision(BEAVERTAILS_ID, rev or None)
        rows, cols, revision, split = _load_hub(BEAVERTAILS_ID, None, BEAVERTAILS_SPLIT, revision)
        origin = BEAVERTAILS_ID
        unsafe_only, safe_only = True, False
    elif name == "xstest":
        rows, cols, revision, split = _load_hub(XSTEST_ID, None, XSTEST_SPLIT, rev or None)
        origin = XSTEST_ID
        unsafe_only, safe_only = False, True
    elif source.startswith("hub:"):
        repo, hrev, config, hsplit = parse_hub_source(source)
        rows, cols, revision, split = _load_hub(repo, config, hsplit, hrev)
        origin = repo
        unsafe_only, safe_only = not benign, benign
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise InputError("prompt file not found", source=source,
                             hint="give 'beavertails', 'hub:ID[:config][:split]' or a .jsonl/.jsonl.gz/.csv/"
                                  ".parquet file")
        rows, cols = read_local_rows(path)
        if not rows:
            raise InputError("the prompt file has no rows: the prompt set is empty", source=source,
                             hint="add one JSON object with a 'prompt' field per line")
        origin = source
        unsafe_only, safe_only = not benign, benign
        revision, split = sha256_file(path, use_cache=False), None
    kept, stats = filter_rows(rows, cols, unsafe_only=unsafe_only, safe_label_only=safe_only)
    prompts = rows_to_prompts(kept, source=origin, columns=cols, dedupe=dedupe)
    log.info("%s: %d rows read, %d kept (%s), %d prompts%s", origin, stats.rows, stats.kept,
             stats.filter or "no label filter", len(prompts), "" if dedupe else " (not de-duplicated)")
    if not prompts:
        raise InputError("the prompt set is empty after filtering and de-duplication", source=source,
                         hint="check the file/split has non-empty 'prompt' values (and unsafe rows)")
    if limit is not None:
        prompts = stratified_sample(prompts, limit, seed)
    ref = DatasetRef(source=source, revision=revision, split=split, n=len(prompts),
                     seed=seed if limit is not None else None, rows=stats.rows, kept=stats.kept,
                     filter=stats.filter, deduplicated=dedupe)
    return PromptSet(prompts, ref)
