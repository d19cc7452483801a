"""Resolve a model argument (local dir or Hub ``id[@revision]``) to files on disk, pinned and hashed."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from mergegate.audit.cache import AuditCache
from mergegate.audit.results import ModelRef
from mergegate.errors import InputError
from mergegate.models import ModelReference, read_chat_template, sha256_file, weights_digest
from mergegate.models import resolve_model as resolve_files
from mergegate.models.weight_files import check_finite_weights

log = logging.getLogger(__name__)

# files (besides weights) whose content changes what a model answers
AUX_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", "chat_template.jinja", "chat_template.json", "tokenizer.model",
             "mergegate_judge.json")


@dataclass(frozen=True)
class ResolvedModel:
    ref: ModelRef
    path: Path
    key: str  # cache key: weights hash + answer-relevant files

    @property
    def display(self) -> str:
        return self.ref.id


def weights_sha256(files: list[Path]) -> str:
    """sha256 over the sorted per-file sha256 of the weight files (name-independent order)."""
    return weights_digest(sha256_file(f) for f in files)


def aux_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    for name in AUX_FILES:
        f = path / name
        if f.is_file():
            h.update(f"{name}:{sha256_file(f)}\n".encode())
    return h.hexdigest()


def check_weights(files: list[Path], weights_sha: str, cache: AuditCache, *, source: str) -> None:
    """Refuse malformed weight files and NaN/Inf weights before anything is generated or looked up:
    a broken model's cached answers are not trusted either. One aminmax pass per tensor, done once
    per distinct set of weights (remembered in the cache by the weights' sha256).

    Raises:
        ModelFilesError: a weight file is malformed (naming it), or weights are not finite (naming
            the model and the first bad tensors); exit code 2.
    """
    if cache.weights_finite(weights_sha):
        return
    check_finite_weights(files, source=source)
    cache.mark_weights_finite(weights_sha)


def resolve_model(spec: str, cache: AuditCache, *, allow_pickle: bool = False) -> ResolvedModel:
    """A local directory, or a Hub ``id[@revision]`` pinned to a commit sha and downloaded (config,
    tokenizer and safetensors only, unless ``allow_pickle``) by the shared resolver; its weights
    checked (:func:`check_weights`)."""
    try:
        reference = ModelReference.parse(spec)
    except ValueError as exc:
        raise InputError(str(exc), source=spec) from None
    model = resolve_files(reference, allow_pickle=allow_pickle)
    w_sha = weights_sha256(model.weight_files())
    check_weights(model.weight_files(), w_sha, cache, source=spec)
    key = hashlib.sha256(f"{w_sha}:{aux_fingerprint(model.path)}".encode()).hexdigest()
    ref = ModelRef(id=spec, revision=model.revision, weights_sha256=w_sha, local_path=str(model.path))
    return ResolvedModel(ref=ref, path=model.path, key=key)
