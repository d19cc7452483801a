"""Audit test helpers: one shared audit of the toy fleet (base + expert), reused by several tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from _audit_helpers import toy_kwargs


@pytest.fixture(scope="session")
def fleet_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fleet_audit_cache") / "audit.sqlite3"


@pytest.fixture(scope="session")
def fleet_report(toy_fleet: Path, fleet_cache: Path):  # noqa: ANN201 - AuditReport
    """base and expert audited on all 240 held-out unsafe and 60 benign prompts by the toy guard."""
    import torch

    from mergegate.audit import audit_models

    n = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures run before the function-scoped thread fixture
    try:
        return audit_models([str(toy_fleet / "base"), str(toy_fleet / "expert")],
                            **toy_kwargs(toy_fleet, cache=fleet_cache))
    finally:
        torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _one_torch_thread():  # noqa: ANN202
    """The toy models are tiny: one intra-op thread is as fast, and does not spin-wait on a shared CPU."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
