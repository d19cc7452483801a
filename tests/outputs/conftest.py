"""Fixtures of the output-safety tests: two tiny random Llama models and a recipe merging them."""

from __future__ import annotations

from pathlib import Path

import pytest
from _output_helpers import TINY, linear_recipe

from mergegate.merging.random_models import make_family


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("output_models")
    base, (expert,) = make_family(root, 1, shape=TINY, seed=11)
    return base, expert


@pytest.fixture()
def recipe(tmp_path: Path, models: tuple[Path, Path]) -> Path:
    return linear_recipe(tmp_path / "recipe.yml", *models)
