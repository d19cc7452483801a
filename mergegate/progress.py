"""Progress a user can follow: tqdm bars on a terminal, plain lines in a log, groups in GitHub Actions.

A gate runs for minutes to hours, mostly in CI logs where a tqdm bar prints nothing useful (it
redraws itself with carriage returns, or is disabled). When stderr is not a terminal, mergegate
writes instead:

- one line when a stage starts (``mergegate: [12:00:01] merge: ...``) and one when it ends, with its
  duration; in GitHub Actions (``GITHUB_ACTIONS=true``) each top-level stage is a collapsible log group
  (``::group::`` / ``::endgroup::``, GitHub's workflow commands);
- within a long loop, a line every :data:`DEFAULT_INTERVAL` seconds with done/total, rate and ETA,
  and a last line with the total time.

Libraries' own bars (transformers' weight loading/saving, datasets, huggingface_hub downloads) are
silenced in that mode (:func:`quiet_library_bars`): they would only add carriage-return noise.

Environment: ``MERGEGATE_PROGRESS`` = ``auto`` (default: bars on a terminal, lines otherwise),
``bars``, ``lines`` or ``off``; ``MERGEGATE_PROGRESS_INTERVAL`` = seconds between lines (default 15).
"""

from __future__ import annotations

import os
import sys
import time
from types import TracebackType
from typing import Any, Literal, TextIO

Mode = Literal["bars", "lines", "off"]
DEFAULT_INTERVAL = 15.0
PREFIX = "mergegate:"


def mode() -> Mode:
    """How progress is shown now: ``MERGEGATE_PROGRESS``, else bars on a terminal and lines in a log."""
    wanted = os.environ.get("MERGEGATE_PROGRESS", "auto").strip().lower()
    if wanted in ("bars", "lines", "off"):
        return wanted  # type: ignore[return-value]
    return "bars" if _stream().isatty() else "lines"


def interval() -> float:
    try:
        return max(0.0, float(os.environ.get("MERGEGATE_PROGRESS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _stream() -> TextIO:
    return sys.stderr


def _say(text: str) -> None:
    from mergegate.redact import scrub

    print(scrub(text), file=_stream(), flush=True)  # a log leaves the machine: no token, home as ~


def _clock() -> str:
    return time.strftime("%H:%M:%S")


def duration(seconds: float) -> str:
    """``42.0 s``, ``3m05s``, ``2h01m``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def note(text: str, *, enabled: bool = True) -> None:
    """One line of progress (lines and bars modes; nothing when off)."""
    if enabled and mode() != "off":
        _say(f"{PREFIX} [{_clock()}] {text}")


class Stages:
    """The stages of one long operation, each announced as it starts and timed when it ends.

    ``start(name)`` ends the previous stage; ``finish()`` ends the last one. Top-level stages are
    GitHub Actions log groups in Actions (groups do not nest there: inner ones are plain lines).
    """

    _open_groups = 0  # across instances: GitHub groups cannot nest

    def __init__(self, title: str = "", *, enabled: bool = True) -> None:
        self.title = title
        self.enabled = enabled and mode() != "off"
        self.current: str | None = None
        self.started = 0.0
        self.grouped = False

    def start(self, name: str, detail: str = "") -> None:
        self.finish()
        if not self.enabled:
            return
        self.current, self.started = name, time.monotonic()
        label = f"{self.title} {name}".strip()
        if mode() == "lines" and in_github_actions() and Stages._open_groups == 0:
            _say(f"::group::mergegate: {label}")
            Stages._open_groups += 1
            self.grouped = True
        _say(f"{PREFIX} [{_clock()}] {label}" + (f": {detail}" if detail else ""))

    def finish(self, outcome: str = "done") -> None:
        if self.current is None:
            return
        label = f"{self.title} {self.current}".strip()
        _say(f"{PREFIX} [{_clock()}] {label}: {outcome} in {duration(time.monotonic() - self.started)}")
        if self.grouped:
            _say("::endgroup::")
            Stages._open_groups -= 1
            self.grouped = False
        self.current = None


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LineBar(_NoBar):
    """Done/total, rate and ETA as a line every :func:`interval` seconds, and a last line at the end."""

    def __init__(self, total: int, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self.started = self.last = time.monotonic()
        self.every = interval()
        self.closed = False
        _say(f"{PREFIX} [{_clock()}] {desc}: 0/{total} {unit}s")

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            _say(f"{PREFIX} [{_clock()}] {self.desc}: {self.status(now)}")

    def status(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.done}/{self.total} {self.unit}s ({rate:.2f}/s"
        if 0 < self.done < self.total and rate > 0:
            text += f", ETA {duration((self.total - self.done) / rate)}"
        return text + ")"

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        elapsed = time.monotonic() - self.started
        _say(f"{PREFIX} [{_clock()}] {self.desc}: {self.done}/{self.total} {self.unit}s in {duration(elapsed)}")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.closed = True


def bar(total: int, desc: str, *, unit: str = "item", enabled: bool = True) -> Any:
    """A progress bar: tqdm on a terminal, :class:`LineBar` in a log, nothing when disabled/empty.

    Use as a context manager with ``update(n)``.
    """
    m = mode()
    if not enabled or m == "off" or total <= 0:
        return _NoBar()
    if m == "bars":
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=_stream(), leave=False)
    return LineBar(total, desc, unit)


LIBRARY_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # huggingface_hub downloads (and transformers, which follows it)
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # datasets (read at import)
}


def quiet_library_bars() -> None:
    """Silence the bars of huggingface_hub, transformers and datasets when mergegate writes lines.

    Sets their environment switches (read when they are imported, and inherited by child
    processes) and, for the ones already imported, their switch functions."""
    if mode() == "bars":
        return
    for key, value in LIBRARY_ENV.items():
        os.environ.setdefault(key, value)
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()


__all__ = ["Stages", "LineBar", "bar", "note", "mode", "interval", "duration", "quiet_library_bars",
           "in_github_actions", "DEFAULT_INTERVAL"]
