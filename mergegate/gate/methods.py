"""Display names and reference links of merge methods, for cards.

Implemented methods come from ``mergegate.merging.methods.REGISTRY``; the few mergekit methods
mergegate does not build are listed here. ``tests/gate/test_gate_packaging.py`` checks the table
against mergekit's registry.
"""

from __future__ import annotations

from typing import NamedTuple


class MethodInfo(NamedTuple):
    pretty_name: str
    reference_url: str | None


# mergekit methods mergegate does not build (cards can still name them, e.g. in an error report)
_UNSUPPORTED_INFO: dict[str, MethodInfo] = {
    "multislerp": MethodInfo("Multi-SLERP", "https://goddard.blog/posts/multislerp-wow-what-a-cool-idea"),
    "karcher": MethodInfo("Karcher Mean", "https://arxiv.org/abs/2603.04972"),
    "arcee_fusion": MethodInfo("Arcee Fusion", "https://arcee.ai"),
    "nearswap": MethodInfo("NearSwap", "https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001"),
    "sce": MethodInfo("SCE", "https://arxiv.org/abs/2408.07990"),
    "ram": MethodInfo("Reinforced Agent Merging", "https://arxiv.org/abs/2601.13572"),
    "ramplus_tl": MethodInfo("Reinforced Agent Merging Plus (Tensor-Local)", "https://arxiv.org/abs/2601.13572"),
}


def _build_table() -> dict[str, MethodInfo]:
    from mergegate.merging.methods import REGISTRY

    table = {name: MethodInfo(m.spec.pretty_name, m.spec.reference_url) for name, m in REGISTRY.items()}
    table.update(_UNSUPPORTED_INFO)
    return table


# implemented methods take their names and links from the merge registry (one source of truth)
METHODS: dict[str, MethodInfo] = _build_table()


def method_info(name: str | None) -> MethodInfo:
    """Pretty name and link of ``name``; unknown methods keep their own name and no link."""
    if not name:
        return MethodInfo("unknown", None)
    return METHODS.get(name, MethodInfo(name, None))


__all__ = ["METHODS", "MethodInfo", "method_info"]
