"""Card lint for published merges: the defects a merge's metadata most often has.

- ``base-model-missing``: the card has no ``base_model`` (the Hub cannot draw the model tree);
- ``base-model-tags-only``: the parents appear only as tags (LazyMergekit-style cards);
- ``base-model-incomplete``: ``base_model`` omits some Hub constituents of the recipe;
- ``license-missing`` / ``license-conflict``: no license, or one that differs from what the
  constituents declare (or the constituents disagree among themselves);
- ``local-path``: the recipe names local paths (``./out``, ``G:/7B/x``), so nobody can rebuild it;
- ``non-safetensors``: pickled weights (``.bin``/``.pt``/...) are published, or no safetensors at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mergegate.batch.records import LintFlag
from mergegate.gate.licenses import DeclaredLicense, read_card_metadata

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def card_metadata(readme: Path | None) -> dict[str, Any]:
    """The YAML front matter of a model card ({} when absent or unreadable), via huggingface_hub."""
    return read_card_metadata(readme)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def _strip_revision(ref: str) -> str:
    return ref.split("@", 1)[0].strip().lower()


def lint_card(meta: Mapping[str, Any], *, hub_constituents: Sequence[str], local_paths: Sequence[str],
              files: Sequence[str], constituent_licenses: Mapping[str, DeclaredLicense | None]) -> list[LintFlag]:
    """Lint one merge. ``hub_constituents`` are the recipe's Hub ids (no revision)."""
    flags: list[LintFlag] = []
    base = {_strip_revision(b) for b in _as_list(meta.get("base_model"))}
    tags = {_strip_revision(t).removeprefix("base_model:") for t in _as_list(meta.get("tags"))}
    parents = {_strip_revision(c) for c in hub_constituents}
    if not base:
        in_tags = sorted(p for p in parents if p in tags)
        if in_tags:
            flags.append(LintFlag(code="base-model-tags-only",
                                  message="the constituents are named only as tags, not in base_model: "
                                          + ", ".join(in_tags)))
        else:
            flags.append(LintFlag(code="base-model-missing", message="the card declares no base_model"))
    elif parents - base:
        flags.append(LintFlag(code="base-model-incomplete",
                              message="base_model omits constituent(s): " + ", ".join(sorted(parents - base))))

    declared = meta.get("license")
    if isinstance(declared, list) and len(declared) == 1:
        declared = declared[0]
    declared = str(declared).strip().lower() if declared else None
    known = {m: lic.license for m, lic in constituent_licenses.items() if lic is not None}
    distinct = sorted(set(known.values()))
    if declared is None:
        flags.append(LintFlag(code="license-missing", message="the card declares no license"
                              + (f" (constituents: {', '.join(distinct)})" if distinct else "")))
    elif len(distinct) > 1:
        flags.append(LintFlag(code="license-conflict",
                              message=f"constituents disagree ({'; '.join(f'{m}: {v}' for m, v in known.items())})"
                                      f"; the card says {declared}"))
    elif distinct and declared != distinct[0]:
        flags.append(LintFlag(code="license-conflict",
                              message=f"the card says {declared} but the constituents declare {distinct[0]}"))

    if local_paths:
        flags.append(LintFlag(code="local-path",
                              message="the recipe names local path(s), not Hub ids: " + ", ".join(local_paths)))

    weights = [f for f in files if f.lower().endswith((".safetensors", *PICKLE_SUFFIXES))
               and "training_args" not in f]
    pickled = [f for f in weights if f.lower().endswith(PICKLE_SUFFIXES)]
    if pickled:
        flags.append(LintFlag(code="non-safetensors",
                              message="pickled weights are published: " + ", ".join(pickled[:5])
                                      + (" …" if len(pickled) > 5 else "")))
    elif files and not weights:
        flags.append(LintFlag(code="non-safetensors", message="no *.safetensors weights are published"))
    return flags


__all__ = ["lint_card", "card_metadata"]
