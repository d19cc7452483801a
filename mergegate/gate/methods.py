"""Display names and reference links of mergekit's merge methods, for cards.

Kept in mergegate (mergekit is a test-only dependency); ``tests/gate/test_methods.py`` checks the
table against mergekit's registry when mergekit is installed.
"""

from __future__ import annotations

from typing import NamedTuple


class MethodInfo(NamedTuple):
    pretty_name: str
    reference_url: str | None


METHODS: dict[str, MethodInfo] = {
    "linear": MethodInfo("Linear", "https://arxiv.org/abs/2203.05482"),
    "slerp": MethodInfo("SLERP", "https://en.wikipedia.org/wiki/Slerp"),
    "nuslerp": MethodInfo("NuSLERP", None),
    "multislerp": MethodInfo("Multi-SLERP", "https://goddard.blog/posts/multislerp-wow-what-a-cool-idea"),
    "karcher": MethodInfo("Karcher Mean", "https://arxiv.org/abs/2603.04972"),
    "passthrough": MethodInfo("Passthrough", None),
    "model_stock": MethodInfo("Model Stock", "https://arxiv.org/abs/2403.19522"),
    "arcee_fusion": MethodInfo("Arcee Fusion", "https://arcee.ai"),
    "nearswap": MethodInfo("NearSwap", "https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001"),
    "sce": MethodInfo("SCE", "https://arxiv.org/abs/2408.07990"),
    "ram": MethodInfo("Reinforced Agent Merging", "https://arxiv.org/abs/2601.13572"),
    "ramplus_tl": MethodInfo("Reinforced Agent Merging Plus (Tensor-Local)",
                             "https://arxiv.org/abs/2601.13572"),
    "task_arithmetic": MethodInfo("Task Arithmetic", "https://arxiv.org/abs/2212.04089"),
    "ties": MethodInfo("TIES", "https://arxiv.org/abs/2306.01708"),
    "dare_ties": MethodInfo("DARE TIES", "https://arxiv.org/abs/2311.03099"),
    "dare_linear": MethodInfo("Linear DARE", "https://arxiv.org/abs/2311.03099"),
    "breadcrumbs": MethodInfo("Model Breadcrumbs", "https://arxiv.org/abs/2312.06795"),
    "breadcrumbs_ties": MethodInfo("Model Breadcrumbs with TIES", "https://arxiv.org/abs/2312.06795"),
    "della": MethodInfo("DELLA", "https://arxiv.org/abs/2406.11617"),
    "della_linear": MethodInfo("Linear DELLA", "https://arxiv.org/abs/2406.11617"),
}


def method_info(name: str | None) -> MethodInfo:
    """Pretty name and link of ``name``; unknown methods keep their own name and no link."""
    if not name:
        return MethodInfo("unknown", None)
    return METHODS.get(name, MethodInfo(name, None))


__all__ = ["METHODS", "MethodInfo", "method_info"]
