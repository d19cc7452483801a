"""The merge-method registry, keyed by mergekit's method names (plus ``tsvm``).

``get_method(name)`` returns the method; a name mergekit has but mergegate does not implement
(``UNSUPPORTED``, empty since every mergekit 0.1.5 method is implemented) raises
``UnsupportedMethodError``; any other unknown name raises ``ConfigError`` with the closest known
names. Registration is explicit: the dict literal below is the whole registry.
"""

from __future__ import annotations

import difflib

from mergegate.errors import ConfigError, UnsupportedMethodError
from mergegate.merging.methods.arcee_fusion import ArceeFusionMerge
from mergegate.merging.methods.base import MergeMethod
from mergegate.merging.methods.karcher import KarcherMerge
from mergegate.merging.methods.linear import LinearMerge
from mergegate.merging.methods.model_stock import ModelStockMerge
from mergegate.merging.methods.multislerp import MultiSlerpMerge
from mergegate.merging.methods.nearswap import NearSwapMerge
from mergegate.merging.methods.nuslerp import NuSlerpMerge
from mergegate.merging.methods.passthrough import PassthroughMerge
from mergegate.merging.methods.ram import RamMerge, RamPlusTlMerge
from mergegate.merging.methods.sce import SceMerge
from mergegate.merging.methods.slerp import SlerpMerge
from mergegate.merging.methods.task_arithmetic import VARIANTS, GeneralizedTaskArithmetic
from mergegate.merging.methods.tsvm import TsvmMerge

REGISTRY: dict[str, MergeMethod] = {
    "linear": LinearMerge(),
    "slerp": SlerpMerge(),
    "nuslerp": NuSlerpMerge(),
    "passthrough": PassthroughMerge(),
    "model_stock": ModelStockMerge(),
    "task_arithmetic": GeneralizedTaskArithmetic(VARIANTS["task_arithmetic"]),
    "ties": GeneralizedTaskArithmetic(VARIANTS["ties"]),
    "dare_ties": GeneralizedTaskArithmetic(VARIANTS["dare_ties"]),
    "dare_linear": GeneralizedTaskArithmetic(VARIANTS["dare_linear"]),
    "breadcrumbs": GeneralizedTaskArithmetic(VARIANTS["breadcrumbs"]),
    "breadcrumbs_ties": GeneralizedTaskArithmetic(VARIANTS["breadcrumbs_ties"]),
    "della": GeneralizedTaskArithmetic(VARIANTS["della"]),
    "della_linear": GeneralizedTaskArithmetic(VARIANTS["della_linear"]),
    "sce": SceMerge(),
    "arcee_fusion": ArceeFusionMerge(),
    "karcher": KarcherMerge(),
    "nearswap": NearSwapMerge(),
    "multislerp": MultiSlerpMerge(),
    "ram": RamMerge(),
    "ramplus_tl": RamPlusTlMerge(),
    "tsvm": TsvmMerge(),
}

# mergekit 0.1.5 methods mergegate does not implement (none today; kept for the next mergekit)
UNSUPPORTED: frozenset[str] = frozenset()


def get_method(name: str) -> MergeMethod:
    method = REGISTRY.get(name)
    if method is not None:
        return method
    if name in UNSUPPORTED:
        raise UnsupportedMethodError(
            f"merge method {name!r} is not supported yet",
            field="merge_method",
            hint=f"supported methods: {', '.join(sorted(REGISTRY))}",
        )
    close = difflib.get_close_matches(str(name), list(REGISTRY) + sorted(UNSUPPORTED), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else (
        f"known methods: {', '.join(sorted(REGISTRY))}"
    )
    raise ConfigError(f"unknown merge method {name!r}", field="merge_method", hint=hint)


__all__ = ["REGISTRY", "UNSUPPORTED", "get_method"]
