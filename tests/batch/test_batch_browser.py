"""The leaderboard in a real headless Chromium: loads from file:// with no network, sorts on click,
never runs the script a hostile model name carries, and renders to a non-empty PNG."""

from __future__ import annotations

from pathlib import Path

from _batch_cdp import Browser
from _batch_records import HOSTILE, sample_records
from mergegate.batch.leaderboard import write_leaderboard

ROWS = "Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(r => r.dataset.model)"


def test_leaderboard_sorts_in_a_real_browser(chromium: str, tmp_path: Path) -> None:
    page = write_leaderboard(tmp_path / "leaderboard.html", sample_records())
    with Browser(chromium, page.resolve().as_uri()) as browser:
        browser.wait_for("document.readyState === 'complete' && !!document.getElementById('leaderboard')")
        initial = browser.evaluate(ROWS)
        assert initial == ["org/merge-a", "org/merge-b", HOSTILE, "org/merge-d", "org/no-recipe"]  # by rank

        browser.click('th[data-key="merge"]')  # ascending merge alignment; no value sorts last
        browser.wait_for("document.querySelector('th[data-key=\"merge\"]').getAttribute('aria-sort') !== null")
        ascending = browser.evaluate(ROWS)
        assert ascending == [HOSTILE, "org/merge-a", "org/merge-d", "org/merge-b", "org/no-recipe"]
        assert browser.evaluate("document.querySelector('th[data-key=\"merge\"]').getAttribute('aria-sort')") \
            == "ascending"

        browser.click('th[data-key="merge"]')  # again: descending
        assert browser.evaluate(ROWS) == ["org/merge-b", "org/merge-d", "org/merge-a", HOSTILE, "org/no-recipe"]

        browser.click('th[data-key="model"]')  # text column
        assert browser.evaluate(ROWS)[:2] == [HOSTILE, "org/merge-a"]  # '<' sorts before letters

        # the hostile name is text, not markup: no injected element or script ran
        assert browser.evaluate("window.__pwned === undefined") is True
        assert browser.evaluate("document.querySelectorAll('img').length") == 0
        assert browser.evaluate("document.scripts.length") == 1
        assert browser.evaluate("document.querySelectorAll('#chart .chart-row').length") == 4

        shot = browser.screenshot(tmp_path / "leaderboard.png")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
