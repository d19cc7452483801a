"""The Hub side of a batch: which merges, at which commit, with which files.

* :func:`list_merges` asks ``HfApi.list_models(filter=..., sort="downloads", limit=N)`` (most
  downloaded first); :func:`read_models_file` reads an explicit list (``org/name[@revision]`` a line).
* :func:`pin` turns a repo id (and optional branch/tag) into a commit sha and its file list, from
  the Hub or, under ``HF_HUB_OFFLINE=1``, from the local HF cache (through huggingface_hub).
* :func:`fetch_metadata` downloads only the small files of a pinned merge (card, recipe,
  ``config.json``, provenance); weights are downloaded later, when the merge is audited.

Everything honours ``HF_ENDPOINT`` (through huggingface_hub) so tests can point it at a fake Hub.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from mergegate.errors import InputError

log = logging.getLogger(__name__)

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
RECIPE_FILES = ("mergekit_config.yml", "mergekit_config.yaml", "merge.yml")
METADATA_FILES = ["README.md", *RECIPE_FILES, "config.json", "mergegate_provenance.json"]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".h5", ".msgpack",
                   ".gguf", ".npz", ".onnx")


@dataclass(frozen=True)
class Target:
    """A merge to audit: as listed (or as written in the models file)."""

    repo_id: str
    revision: str | None = None  # requested branch/tag/sha (None: main)
    rank: int = 0
    downloads: int | None = None


@dataclass
class PinnedRepo:
    repo_id: str
    sha: str
    files: list[str] = field(default_factory=list)  # every file of the repo at that commit

    @property
    def spec(self) -> str:
        return f"{self.repo_id}@{self.sha}"

    def weight_files(self) -> list[str]:
        return [f for f in self.files if f.lower().endswith(WEIGHT_SUFFIXES) and "training_args" not in f]


def offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub sees it (``is_offline_mode``)."""
    from mergegate.models import hub_offline

    return hub_offline()


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (1 <= i <= n) -> (i, n); None -> None."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise InputError(f"malformed shard '{text}'", field="shard",
                         hint="write --shard i/n with 1 <= i <= n, e.g. --shard 2/4")
    i, n = int(match.group(1)), int(match.group(2))
    if n < 1 or not 1 <= i <= n:
        raise InputError(f"shard '{text}' is out of range", field="shard",
                         hint="write --shard i/n with 1 <= i <= n, e.g. --shard 1/4 .. 4/4")
    return i, n


def take_shard(targets: list[Target], shard: tuple[int, int] | None) -> list[Target]:
    """Every n-th merge starting at the i-th (stable: the listing order decides)."""
    if shard is None:
        return list(targets)
    i, n = shard
    return list(targets[i - 1::n])


def parse_spec(text: str, *, source: str = "<models>", line: int | None = None) -> tuple[str, str | None]:
    spec = text.strip()
    repo_id, _, revision = spec.partition("@")
    if not REPO_ID_RE.match(repo_id) or ".." in repo_id or (revision == "" and "@" in spec):
        where = f"line {line}: " if line else ""
        raise InputError(f"{where}'{spec}' is not a Hub model id 'org/name[@revision]'", source=source,
                         field="models")
    return repo_id, revision or None


def read_models_file(path: str | Path) -> list[Target]:
    """One ``org/name[@revision]`` per line; ``#`` starts a comment; duplicates are dropped."""
    p = Path(path)
    if not p.is_file():
        raise InputError("models file not found", source=str(p),
                         hint="give a text file with one Hub id (org/name[@revision]) per line")
    targets: list[Target] = []
    seen: set[str] = set()
    for number, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        repo_id, revision = parse_spec(text, source=str(p), line=number)
        if repo_id in seen:
            continue
        seen.add(repo_id)
        targets.append(Target(repo_id, revision, rank=len(targets)))
    if not targets:
        raise InputError("the models file lists no model", source=str(p))
    return targets


def list_merges(top: int, *, filter: str | list[str] = "mergekit", token: str | bool | None = None
                ) -> list[Target]:
    """The ``top`` most downloaded models matching ``filter`` (default: tagged ``mergekit``)."""
    if top < 1:
        raise InputError("--top must be at least 1", field="top")
    if offline():
        raise InputError("listing merges needs the Hub, but HF_HUB_OFFLINE is set", field="top",
                         hint="unset HF_HUB_OFFLINE, or pass --models FILE (cached models work offline)")
    from huggingface_hub import HfApi

    try:
        infos = list(HfApi().list_models(filter=filter, sort="downloads", limit=top, token=token))
    except Exception as exc:  # noqa: BLE001 - any listing failure is reported with its cause
        raise InputError(f"could not list models on the Hub: {type(exc).__name__}: {exc}", field="top",
                         hint="check the network / HF_ENDPOINT, or pass --models FILE") from None
    # the Hub sorts already; a stable sort keeps its order for ties and guards against odd mirrors
    order = sorted(range(len(infos)), key=lambda i: -(getattr(infos[i], "downloads", None) or 0))
    return [Target(infos[i].id, None, rank=r, downloads=getattr(infos[i], "downloads", None))
            for r, i in enumerate(order)]


def _pin_offline(repo_id: str, revision: str | None) -> PinnedRepo:
    """The cached snapshot of ``repo_id`` at ``revision`` (a branch, tag or sha; default main).

    huggingface_hub resolves the revision in its cache (``local_files_only=True``); the snapshot
    folder it returns is named after the commit sha.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except LocalEntryNotFoundError:
        what = f"revision {revision[:12]} of '{repo_id}'" if revision else f"'{repo_id}'"
        raise InputError(f"{what} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set",
                         source=repo_id, hint="run once online, or unset HF_HUB_OFFLINE") from None
    sha = snapshot.name
    if not SHA_RE.match(sha):
        raise InputError(f"the local Hugging Face cache has no commit for '{repo_id}'", source=repo_id,
                         hint="run once online, or unset HF_HUB_OFFLINE")
    files = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    return PinnedRepo(repo_id, sha, files)


def pin(repo_id: str, revision: str | None = None, *, token: str | bool | None = None) -> PinnedRepo:
    """The commit sha of ``repo_id`` at ``revision`` (default main) and its file list.

    Raises:
        InputError: the repo or revision does not exist (or is not cached when offline).
    """
    if offline():
        return _pin_offline(repo_id, revision)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().model_info(repo_id, revision=revision, token=token)
    except GatedRepoError:
        raise InputError(f"'{repo_id}' is gated and this token has no access", source=repo_id,
                         hint="accept its terms on the Hub and log in (`hf auth login` / HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise InputError(f"revision '{revision}' not found in '{repo_id}'", source=repo_id) from None
    except RepositoryNotFoundError:
        raise InputError(f"model '{repo_id}' not found on the Hub (or private)", source=repo_id,
                         hint="check the id; log in for private models") from None
    if not info.sha:
        raise InputError(f"the Hub did not report a commit for '{repo_id}'", source=repo_id)
    files = sorted(s.rfilename for s in (info.siblings or []))
    return PinnedRepo(repo_id, info.sha, files)


def fetch_metadata(repo: PinnedRepo, *, token: str | bool | None = None) -> Path:
    """Download the card, recipe, config and provenance of a pinned repo; returns the snapshot dir."""
    from huggingface_hub import snapshot_download

    wanted = [f for f in METADATA_FILES if not repo.files or f in repo.files]
    if not wanted:  # nothing small to read: still return the (possibly empty) snapshot folder
        wanted = ["config.json"]
    try:
        return Path(snapshot_download(repo.repo_id, revision=repo.sha, allow_patterns=wanted, token=token,
                                      local_files_only=offline()))
    except Exception as exc:  # noqa: BLE001 - hub errors become an input error on this merge
        raise InputError(f"could not download the card/recipe: {type(exc).__name__}: {exc}",
                         source=repo.spec) from None


__all__ = ["Target", "PinnedRepo", "parse_shard", "take_shard", "read_models_file", "list_merges", "pin",
           "fetch_metadata", "offline", "parse_spec", "RECIPE_FILES"]
