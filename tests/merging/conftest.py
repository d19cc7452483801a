"""Fixtures for merge tests: tiny random Llama families and a mergekit reference runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from merge_helpers import TINY

from mergegate.merging.random_models import make_family


@pytest.fixture(scope="session")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """base + expert1..3 in bfloat16, and base32 + f1..f3 in float32 stored as small shards."""
    root = tmp_path_factory.mktemp("family")
    base, experts = make_family(root / "bf16", 3, shape=TINY, seed=1)
    base32, experts32 = make_family(root / "fp32", 3, shape=TINY, seed=2, dtype="float32",
                                    shard_bytes=40_000)
    return {"base": base, "e1": experts[0], "e2": experts[1], "e3": experts[2],
            "base32": base32, "f1": experts32[0], "f2": experts32[1], "f3": experts32[2]}
