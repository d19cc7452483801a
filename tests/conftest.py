"""Shared test set-up: no network, no real HF cache or token, and the toy fleet built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every Hugging Face cache and token at a private temp dir."""
    home = tmp_path_factory.getbasetemp() / "hf_home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("MERGEGATE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "mergegate_cache"))


@pytest.fixture(scope="session")
def toy_fleet() -> Path:
    """The toy fleet (base, expert, guard, prompts), trained once and reused across runs.

    Built under ``.pytest_cache/`` so repeated local runs reuse it; ``ensure_fleet`` checks a
    version stamp and rebuilds when the recipe changed.
    """
    from mergegate.audit.toyfleet import ensure_fleet

    root = Path(__file__).resolve().parent.parent / ".pytest_cache" / "toy_fleet"
    return ensure_fleet(root)
