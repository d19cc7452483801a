"""Turn a recipe's model reference into local files, pinned and recorded.

* A local directory is used as it is (its weight files are hashed for provenance).
* A Hub id (``org/name`` or ``org/name@revision``) is resolved to a commit sha first, then only
  ``config.json``, tokenizer files, generation config and ``*.safetensors`` are downloaded at that
  sha. ``.bin`` weights are refused unless the caller opts in (then only read with
  ``weights_only=True``). With ``HF_HUB_OFFLINE=1`` everything comes from the local HF cache.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mergegate.errors import InputError, ModelFilesError
from mergegate.models.fingerprints import sha256_file, weights_digest
from mergegate.models.reference import ModelReference


class PinnedPart(Protocol):
    """Something applied to a model that records where it came from (a LoRA adapter)."""

    def provenance(self) -> dict[str, Any]: ...

log = logging.getLogger(__name__)

_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
# configs (model, generation, tokenizer, judge), tokenizer files, chat templates, card and recipe
METADATA_PATTERNS = ["*.json", "tokenizer*", "*.jinja", "*.model", "*.tiktoken", "*.txt", "README.md",
                     "mergekit_config.yml", "LICENSE*"]
SAFETENSORS_PATTERNS = ["*.safetensors"]
PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth"]


PICKLE_HINT = ("convert the model to safetensors, or pass --allow-pickle if you trust it (it is then read "
               "with torch.load(weights_only=True), never unpickled freely)")


@dataclass
class ResolvedModel:
    """A model ready to read: local files plus where they came from."""

    ref: ModelReference
    path: Path
    source: str  # "local" or "hub"
    revision: str | None = None  # commit sha (Hub)
    file_hashes: dict[str, str] = field(default_factory=dict)  # weight file name -> sha256
    adapter: PinnedPart | None = None  # the LoRA of a model+adapter reference (set by the merging engine)

    @property
    def name(self) -> str:
        return str(self.ref)

    def weight_files(self) -> list[Path]:
        files = sorted(self.path.glob("*.safetensors"))
        return files or pickle_weight_files(self.path)

    def hash_weights(self) -> dict[str, str]:
        """sha256 of each weight file (cached by path, size and mtime)."""
        if not self.file_hashes:
            self.file_hashes = {p.name: sha256_file(p) for p in self.weight_files()}
        return self.file_hashes

    @property
    def weights_sha256(self) -> str:
        return weights_digest(self.hash_weights().values())

    def provenance(self) -> dict[str, object]:
        record: dict[str, object] = {
            "id": self.ref.path, "requested_revision": self.ref.revision, "revision": self.revision,
            "source": self.source, "files": dict(self.hash_weights()), "weights_sha256": self.weights_sha256}
        if self.adapter is not None:
            record["lora"] = self.adapter.provenance()
        return record


def pickle_weight_files(path: Path) -> list[Path]:
    return sorted(f for pat in PICKLE_PATTERNS for f in path.glob(pat) if "training_args" not in f.name)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE=1``, read through huggingface_hub (whose helper moved between versions)."""
    try:
        from huggingface_hub import is_offline_mode
    except ImportError:  # older huggingface_hub
        from huggingface_hub.utils import is_offline_mode  # type: ignore[no-redef]
    return bool(is_offline_mode())


def is_local(ref: ModelReference) -> bool:
    return Path(ref.path).expanduser().is_dir()


def resolve_model(ref: ModelReference, *, allow_pickle: bool = False, token: str | bool | None = None,
                  cache_dir: str | Path | None = None) -> ResolvedModel:
    """Local directory or Hub download at a pinned commit sha. A ``model+adapter`` reference
    resolves its base model here; the merging engine resolves and applies the adapter
    (:func:`mergegate.merging.lora.resolve_adapter`)."""
    path = Path(ref.path).expanduser()
    if path.is_dir():
        if ref.revision:
            raise InputError(f"'{ref}' is a local directory; a revision (@{ref.revision}) only applies "
                             "to Hub ids", field="model", hint="drop the @revision suffix")
        model = ResolvedModel(ref=ref, path=path.resolve(), source="local")
        check_weight_files(model, allow_pickle=allow_pickle)
        return model
    if path.exists() or ref.path.startswith(("/", "./", "../", "~", ".")):
        raise InputError(f"model directory not found: '{ref.path}'", field="model",
                         hint="give a directory with config.json and *.safetensors, or a Hub id org/name[@revision]")
    if not _HUB_ID_RE.match(ref.path):
        raise InputError(f"model '{ref.path}' is neither a local directory nor a Hub id", field="model",
                         hint="give a directory with config.json and *.safetensors, or org/name[@revision]")
    return _resolve_hub(ref, allow_pickle=allow_pickle, token=token, cache_dir=cache_dir)


def _resolve_hub(ref: ModelReference, *, allow_pickle: bool, token: str | bool | None,
                 cache_dir: str | Path | None) -> ResolvedModel:
    import huggingface_hub
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    sha: str | None = ref.revision if ref.revision and _SHA_RE.match(ref.revision) else None
    lfs_hashes: dict[str, str] = {}
    filenames: list[str] = []
    if not hub_offline():
        try:
            info = huggingface_hub.HfApi().model_info(ref.path, revision=ref.revision, files_metadata=True,
                                                      token=token)
        except (RepositoryNotFoundError, GatedRepoError) as exc:
            raise InputError(f"Hub model '{ref.path}' not found or not accessible ({type(exc).__name__})",
                             field="model", hint="check the id; log in with `hf auth login` for gated models"
                             ) from None
        except RevisionNotFoundError:
            raise InputError(f"revision '{ref.revision}' not found in '{ref.path}'", field="model") from None
        sha = info.sha
        for sibling in info.siblings or []:
            filenames.append(sibling.rfilename)
            lfs = getattr(sibling, "lfs", None)
            if lfs is not None and getattr(lfs, "sha256", None):
                lfs_hashes[sibling.rfilename] = lfs.sha256
    has_st = any(f.endswith(".safetensors") for f in filenames) if filenames else True
    if filenames and not has_st and not allow_pickle:
        raise ModelFilesError(f"'{ref.path}' has no safetensors weight files (only pickled .bin files)",
                              field="model", hint=PICKLE_HINT)
    patterns = METADATA_PATTERNS + SAFETENSORS_PATTERNS + (PICKLE_PATTERNS if (allow_pickle and not has_st) else [])
    try:
        local = huggingface_hub.snapshot_download(ref.path, revision=sha or ref.revision, allow_patterns=patterns,
                                                  cache_dir=cache_dir, token=token,
                                                  local_files_only=hub_offline())
    except LocalEntryNotFoundError:
        raise InputError(f"could not download the model '{ref}': it is not in the local Hugging Face cache "
                         "and HF_HUB_OFFLINE is set", field="model",
                         hint="download it once online, or unset HF_HUB_OFFLINE") from None
    local_path = Path(local)
    sha = sha or local_path.name  # snapshot folders are named by commit sha
    model = ResolvedModel(ref=ref, path=local_path, source="hub", revision=sha)
    weight_names = {p.name for p in model.weight_files()}
    if lfs_hashes and weight_names <= set(lfs_hashes):
        model.file_hashes = {n: lfs_hashes[n] for n in sorted(weight_names)}
    check_weight_files(model, allow_pickle=allow_pickle)
    return model


def download_pinned(repo_id: str, revision: str | None, patterns: list[str], *, what: str,
                    token: str | bool | None = None, cache_dir: str | Path | None = None) -> tuple[Path, str]:
    """Files of a Hub repo matching ``patterns`` at one commit: (local snapshot dir, commit sha).

    The revision (a branch, tag or sha; default the main branch) is resolved to a sha first, then
    only that sha is downloaded. With ``HF_HUB_OFFLINE=1`` the files come from the local HF cache.
    """
    import huggingface_hub
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    if not _HUB_ID_RE.match(repo_id):
        raise InputError(f"{what} '{repo_id}' is neither a local directory nor a Hub id", field="model",
                         hint="give a local directory or a Hub id org/name[@revision]")
    sha: str | None = revision if revision and _SHA_RE.match(revision) else None
    if not hub_offline() and sha is None:
        try:
            sha = huggingface_hub.HfApi().model_info(repo_id, revision=revision, token=token).sha
        except (RepositoryNotFoundError, GatedRepoError) as exc:
            raise InputError(f"Hub {what} '{repo_id}' not found or not accessible ({type(exc).__name__})",
                             field="model", hint="check the id; log in with `hf auth login` for gated repos"
                             ) from None
        except RevisionNotFoundError:
            raise InputError(f"revision '{revision}' not found in '{repo_id}'", field="model") from None
    try:
        local = huggingface_hub.snapshot_download(repo_id, revision=sha or revision, allow_patterns=patterns,
                                                  cache_dir=cache_dir, token=token, local_files_only=hub_offline())
    except LocalEntryNotFoundError:
        raise InputError(f"could not download the {what} '{repo_id}': it is not in the local Hugging Face cache "
                         "and HF_HUB_OFFLINE is set", field="model",
                         hint="download it once online, or unset HF_HUB_OFFLINE") from None
    path = Path(local)
    return path, sha or path.name  # snapshot folders are named by commit sha


def resolve_tokenizer_files(ref: ModelReference, *, token: str | bool | None = None,
                            cache_dir: str | Path | None = None) -> Path:
    """Only the tokenizer (and config) files of a model: a local directory, or a Hub repo at a
    pinned commit (for a ``tokenizer_source`` that is not one of the merged models)."""
    path = Path(ref.path).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists() or ref.path.startswith(("/", "./", "../", "~", ".")):
        raise InputError(f"tokenizer source directory not found: '{ref.path}'", field="tokenizer_source",
                         hint="give a model directory with tokenizer files, or a Hub id org/name[@revision]")
    local, _sha = download_pinned(ref.path, ref.revision, METADATA_PATTERNS, what="tokenizer source",
                                  token=token, cache_dir=cache_dir)
    return local


def check_weight_files(model: ResolvedModel, *, allow_pickle: bool) -> None:
    if not (model.path / "config.json").is_file():
        raise ModelFilesError("no config.json", source=str(model.path),
                              hint="a model directory needs config.json next to its weights")
    if any(model.path.glob("*.safetensors")):
        return
    if pickle_weight_files(model.path):
        if not allow_pickle:
            raise ModelFilesError("no safetensors weight files: only pickled .bin weights found",
                                  source=str(model.path), hint=PICKLE_HINT)
        return
    raise ModelFilesError("no weight files (*.safetensors) found", source=str(model.path))
