"""Multi-SLERP, mergekit 0.1.5 ``multislerp`` (arcee-ai/mergekit mergekit/merge_methods/multislerp.py).

Barycentric interpolation on the hypersphere of N >= 1 models (minus the base, when one is given),
each flattened to a vector ``x_i`` with weight ``w_i`` (normalised to sum 1 when
``normalize_weights``):

1. ``u_i = x_i / (|x_i| + eps)``; the weighted mean direction ``m = sum_i w_i u_i / |sum_i w_i u_i|``
   (when ``|sum_i w_i u_i| < eps``: the plain weighted sum for two models, an error otherwise);
2. tangent vectors at ``m``: ``v_i = u_i - <u_i, m> m``, and ``v = sum_i w_i v_i``;
3. the exponential map back to the sphere, scaled by the weighted mean norm:
   ``out = (m cos|v| + v sin|v| / |v|) * sum_i w_i |x_i|`` with ``|v|`` taken as ``|v| + eps``;
   plus the base.

One model alone is returned as it is (even with a base). Everything is computed in the compute
dtype with mergekit's operations, shapes and order (the reductions run on the stacked
``(N, numel)`` matrix as mergekit's do), so the result is mergekit's to the bit.
"""

from __future__ import annotations

import torch

from mergegate.errors import ConfigError
from mergegate.merging.methods.base import BasePolicy, MergeInput, MethodSpec, ParamSpec, Scope


def multislerp_tensors(tensors: list[torch.Tensor], weights: list[float], base: torch.Tensor | None, *,
                       normalize_weights: bool = True, eps: float = 1e-8, name: str = "") -> torch.Tensor:
    if len(tensors) == 1:
        return tensors[0]
    shape = tensors[0].shape
    x = torch.stack(tensors)
    if base is not None:
        x -= base
    rows = x.view(len(tensors), -1)
    w = torch.tensor(weights, dtype=x.dtype, device=x.device)
    if normalize_weights:
        w = w / w.sum()
    wcol = w.view(-1, 1)
    norms = torch.norm(rows, dim=-1, keepdim=True)
    units = rows / (norms + eps)
    mean = (units * wcol).sum(0)
    mean_norm = torch.norm(mean)
    if mean_norm < eps:
        if len(tensors) != 2:
            raise ConfigError(
                f"multislerp: the weighted sum of the unit input vectors is zero for tensor {name or '?'} "
                "(antipodal inputs whose weights balance out)", field="weight",
                hint="use different weights for these models")
        out = (x[0] * w[0] + x[1] * w[1]).view(shape)
        return out if base is None else out + base
    mean = mean / mean_norm
    dots = (units * mean).sum(-1, keepdim=True)
    units -= dots * mean  # the tangent vectors (units is ours: stack made a copy)
    tangent = (units * wcol).sum(0)
    del units
    tangent_norm = torch.norm(tangent) + eps
    out = mean * torch.cos(tangent_norm) + tangent * (torch.sin(tangent_norm) / tangent_norm)
    out = out * (norms.squeeze(-1) * w).sum()
    out = out.view(shape)
    return out if base is None else out + base


class MultiSlerpMerge:
    spec = MethodSpec(
        name="multislerp",
        pretty_name="Multi-SLERP",
        reference_url="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
        base=BasePolicy.OPTIONAL,
        params=(
            ParamSpec("weight", float, Scope.NON_BASE),
            ParamSpec("normalize_weights", bool, Scope.SHARED, True),
            ParamSpec("eps", float, Scope.SHARED, 1e-8),
        ),
        min_inputs=1,
        min_non_base=1,
    )

    def merge(self, inp: MergeInput) -> torch.Tensor:
        entries = inp.non_base()
        if not entries:
            raise ConfigError("multislerp needs at least one model besides the base", field="models")
        return multislerp_tensors(
            [t for t, _ in entries],
            [float(p["weight"]) for _, p in entries],
            inp.base,
            normalize_weights=bool(inp.shared.get("normalize_weights", True)),
            eps=float(inp.shared.get("eps", 1e-8)),
            name=inp.name,
        )
