"""Display names and reference links of merge methods, for cards.

Implemented methods come from ``mergegate.merging.methods.REGISTRY``; mergekit methods mergegate
does not build would be listed here (none are today). ``tests/gate/test_gate_packaging.py`` checks the table
against mergekit's registry.
"""

from __future__ import annotations

from typing import NamedTuple


class MethodInfo(NamedTuple):
    pretty_name: str
    reference_url: str | None


# mergekit methods mergegate does not build (none today; cards could still name them)
_UNSUPPORTED_INFO: dict[str, MethodInfo] = {}


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
