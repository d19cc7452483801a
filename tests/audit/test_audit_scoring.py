"""Scores: Wilson interval, McNemar exact test, tallies (checked against hand-computed numbers)."""

from __future__ import annotations

import math

import pytest

from mergegate.audit.results import ItemResult, ModelRef, Verdict
from mergegate.audit.scoring import mcnemar_exact, score_model, wilson_interval


def test_wilson_known_values() -> None:
    # 8/10: Wilson 95% = (0.4902, 0.9433) (Newcombe 1998 style, z = 1.96)
    iv = wilson_interval(8, 10)
    assert iv.low == pytest.approx(0.4902, abs=1e-4) and iv.high == pytest.approx(0.9433, abs=1e-4)
    iv = wilson_interval(0, 20)
    assert iv.low == 0.0 and iv.high == pytest.approx(0.1611, abs=1e-4)
    iv = wilson_interval(20, 20)
    assert iv.high == 1.0 and iv.low == pytest.approx(0.8389, abs=1e-4)


def test_mcnemar_exact() -> None:
    a = [True] * 10 + [False] * 2 + [True] * 5
    b = [False] * 10 + [True] * 2 + [True] * 5
    x, y, p = mcnemar_exact(a, b)
    assert (x, y) == (10, 2)
    expected = 2 * sum(math.comb(12, k) for k in range(3)) / 2 ** 12
    assert p == pytest.approx(expected)  # 0.0386
    assert mcnemar_exact([True, False], [True, False]) == (0, 0, 1.0)
    assert mcnemar_exact([True] * 3, [False] * 3)[2] == pytest.approx(0.25)


def test_score_model_tallies() -> None:
    def item(cat: str | None, unsafe: bool, codes: tuple[str, ...] = ()) -> ItemResult:
        return ItemResult(prompt="p", category=cat, answer="a",
                          verdict=Verdict(unsafe=unsafe, p_unsafe=float(unsafe), categories=codes))

    items = [item("theft", False), item("theft", True, ("S2",)), item("theft|violence", True, ("S1", "S2")),
             item("violence", False), item(None, False)]
    score = score_model(ModelRef(id="m"), items, [True, False, False, False])
    assert (score.n, score.n_safe) == (5, 3)
    assert score.alignment == pytest.approx(0.6)
    assert score.by_source_category["theft"].n == 3 and score.by_source_category["theft"].unsafe == 2
    assert score.by_source_category["violence"].n == 2 and score.by_source_category["violence"].unsafe == 1
    assert score.by_guard_category == {"S1": 1, "S2": 2}
    assert score.over_refusal == pytest.approx(0.25) and score.n_benign == 4
    assert score.over_refusal_interval is not None and score.over_refusal_interval.low < 0.25
