"""Gate tests never talk to the real GitHub of a CI run: its environment is hidden from them."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_ambient_github(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("GITHUB_", "INPUT_")) or name in ("GH_TOKEN", "MERGEGATE_GITHUB_TOKEN"):
            monkeypatch.delenv(name, raising=False)
