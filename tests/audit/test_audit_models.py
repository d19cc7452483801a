"""Model resolution: local dirs, Hub ids pinned to a commit from the HF cache (offline), weight hashes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from mergegate.audit.cache import AuditCache
from mergegate.audit.models import resolve_model
from mergegate.errors import InputError, ModelFilesError

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_local_model_hash(toy_fleet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mergegate.models import fingerprints

    cache = AuditCache(tmp_path)
    rm = resolve_model(str(toy_fleet / "base"), cache)
    per_file = sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in (toy_fleet / "base").glob("*.safetensors"))
    assert rm.ref.weights_sha256 == hashlib.sha256("\n".join(per_file).encode()).hexdigest()
    assert rm.ref.revision is None and rm.ref.local_path == str((toy_fleet / "base").resolve())
    assert resolve_model(str(toy_fleet / "expert"), cache).key != rm.key
    reads: list[Path] = []
    real = fingerprints._hash_bytes
    monkeypatch.setattr(fingerprints, "_hash_bytes", lambda p: reads.append(p) or real(p))
    assert resolve_model(str(toy_fleet / "base"), cache).key == rm.key
    assert reads == []  # re-hashing unchanged files is a lookup in the one hash cache


def test_hub_id_resolves_offline_from_the_hf_cache(toy_fleet: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    repo = hub / "models--toy--base"
    shutil.copytree(toy_fleet / "base", repo / "snapshots" / SHA)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = AuditCache(tmp_path / "c")
    rm = resolve_model("toy/base", cache)
    assert rm.ref.id == "toy/base" and rm.ref.revision == SHA
    assert rm.path == repo / "snapshots" / SHA
    pinned = resolve_model(f"toy/base@{SHA}", cache)
    assert pinned.ref.revision == SHA and pinned.key == rm.key
    assert rm.ref.weights_sha256 == resolve_model(str(toy_fleet / "base"), cache).ref.weights_sha256
    with pytest.raises(InputError, match="could not download the model"):
        resolve_model("toy/not-cached", cache)


def test_pickle_only_model_is_refused(toy_fleet: Path, tmp_path: Path) -> None:
    d = tmp_path / "pickled"
    shutil.copytree(toy_fleet / "base", d)
    from safetensors.torch import load_file

    for f in d.glob("*.safetensors"):  # the same weights, pickled (a real .bin: the audit reads it)
        torch.save(load_file(str(f)), f.with_suffix(".bin"))
        f.unlink()
    with pytest.raises(ModelFilesError, match="no safetensors weight files") as exc:
        resolve_model(str(d), AuditCache(tmp_path / "c"))
    assert "--allow-pickle" in (exc.value.hint or "")
    assert resolve_model(str(d), AuditCache(tmp_path / "c"), allow_pickle=True).ref.weights_sha256
