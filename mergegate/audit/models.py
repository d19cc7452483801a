"""Resolve a model argument (local dir or Hub ``id[@revision]``) to files on disk, pinned and hashed."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from mergegate.audit.cache import AuditCache
from mergegate.audit.results import ModelRef
from mergegate.errors import InputError, ModelFilesError

log = logging.getLogger(__name__)

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
SAFE_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.model", "*.tiktoken", "*.txt"]
PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth"]
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


def weight_files(path: Path, *, allow_pickle: bool = False) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    if not files and allow_pickle:
        files = sorted(f for pat in PICKLE_PATTERNS for f in path.glob(pat) if "training_args" not in f.name)
    return files


def weights_sha256(files: list[Path], cache: AuditCache) -> str:
    """sha256 over the sorted per-file sha256 of the weight files (name-independent order)."""
    per_file = sorted(cache.file_sha256(f) for f in files)
    return hashlib.sha256("\n".join(per_file).encode()).hexdigest()


def aux_fingerprint(path: Path, cache: AuditCache) -> str:
    h = hashlib.sha256()
    for name in AUX_FILES:
        f = path / name
        if f.is_file():
            h.update(f"{name}:{cache.file_sha256(f)}\n".encode())
    return h.hexdigest()


def _download(repo_id: str, revision: str | None, allow_pickle: bool) -> tuple[Path, str]:
    from huggingface_hub import HfApi, snapshot_download

    from mergegate.audit.prompts import hub_offline

    patterns = SAFE_PATTERNS + (PICKLE_PATTERNS if allow_pickle else [])
    sha = revision if revision and _SHA_RE.match(revision) else None
    if sha is None and not hub_offline():
        info = HfApi().model_info(repo_id, revision=revision)
        sha = info.sha
    try:
        folder = Path(snapshot_download(repo_id, revision=sha or revision, allow_patterns=patterns))
    except Exception as exc:  # hub errors: not found, gated, offline without a cached snapshot
        raise InputError(f"could not download the model: {type(exc).__name__}: {exc}", source=repo_id,
                         hint="check the id/revision, your HF token for gated models, or (offline) that "
                              "the snapshot is in the HF cache") from exc
    return folder, sha or folder.name  # cache layout: snapshots/<commit sha>/


def resolve_model(spec: str, cache: AuditCache, *, allow_pickle: bool = False) -> ResolvedModel:
    """A local directory, or a Hub ``id[@revision]`` resolved to a commit sha and downloaded
    (config, tokenizer and safetensors only, unless ``allow_pickle``)."""
    local = Path(spec).expanduser()
    revision: str | None = None
    if local.is_dir():
        path = local.resolve()
    elif spec.startswith((".", "/", "~")) or local.exists():
        raise InputError("model directory not found", source=spec)
    else:
        repo_id, _, rev = spec.partition("@")
        if repo_id.count("/") != 1:
            raise InputError("neither a local model directory nor a Hub id 'owner/name[@revision]'", source=spec)
        path, revision = _download(repo_id, rev or None, allow_pickle)
    if not (path / "config.json").is_file():
        raise ModelFilesError("no config.json: not a transformers model directory", source=str(path))
    files = weight_files(path, allow_pickle=allow_pickle)
    if not files:
        pickled = weight_files(path, allow_pickle=True)
        hint = ("the model has only pickle weights (*.bin); convert it to safetensors or pass "
                "--allow-pickle if you trust it" if pickled else "the directory has no *.safetensors weights")
        raise ModelFilesError("no safetensors weight files", source=str(path), hint=hint)
    w_sha = weights_sha256(files, cache)
    key = hashlib.sha256(f"{w_sha}:{aux_fingerprint(path, cache)}".encode()).hexdigest()
    ref = ModelRef(id=spec, revision=revision, weights_sha256=w_sha, local_path=str(path))
    return ResolvedModel(ref=ref, path=path, key=key)


def read_chat_template(path: Path) -> str | None:
    """The chat template shipped with a model, read from its files (no tokenizer load)."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("tokenizer_config.json", "chat_template.json"):
        f = path / name
        if f.is_file():
            try:
                value = json.loads(f.read_text(encoding="utf-8")).get("chat_template")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(value, str):
                return value
            if isinstance(value, list):  # named templates
                for item in value:
                    if isinstance(item, dict) and item.get("name") == "default":
                        return str(item.get("template"))
    return None
