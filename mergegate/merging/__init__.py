"""Rebuilding declared merges: mergekit recipes, mergekit's math, streamed to disk.

Heavy modules (torch) are imported on first use so that ``import mergegate.merging`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mergegate.merging.api import MergeResult, build_merge, plan_merge, run_merge
    from mergegate.merging.config import MergeConfig, load_merge_config

__all__ = ["run_merge", "build_merge", "plan_merge", "MergeResult", "MergeConfig", "load_merge_config"]


def __getattr__(name: str) -> Any:
    if name in ("run_merge", "build_merge", "plan_merge", "MergeResult"):
        from mergegate.merging import api

        return getattr(api, name)
    if name in ("MergeConfig", "load_merge_config"):
        from mergegate.merging import config

        return getattr(config, name)
    raise AttributeError(name)
