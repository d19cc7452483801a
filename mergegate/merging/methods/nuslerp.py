"""NuSLERP, mergekit 0.1.5 ``nuslerp`` (arcee-ai/mergekit mergekit/merge_methods/nuslerp.py).

Two non-base inputs with weights ``w1, w2``: ``t = w2 / (w1 + w2)`` (0.5 when ``|w1 + w2| < 1e-6``).
With a base the task vectors are interpolated and added back: ``b + nuslerp(t, x1 - b, x2 - b)``.
``nuslerp_flatten`` (default true) treats the whole tensor as one vector; otherwise the
interpolation is per row along the last dimension, or along dim 0 when ``nuslerp_row_wise``.
Vectors are normalised with norms clamped at 1e-7; where ``1 - cos^2 <= 1e-16`` (colinear) the plain
lerp is used. The arithmetic is done in the compute dtype with mergekit's operations in its order
(the output bytes are mergekit's).
"""

from __future__ import annotations

import torch

from mergegate.errors import ConfigError
from mergegate.merging.methods.base import BasePolicy, MergeInput, MethodSpec, ParamSpec, Scope


def nuslerp_tensors(t: float, v0: torch.Tensor, v1: torch.Tensor, *, dim: int = -1, eps: float = 1e-8,
                    flatten: bool = False) -> torch.Tensor:
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)
    u0 = v0 / torch.norm(v0, dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / torch.norm(v1, dim=-1, keepdim=True).clamp(min=1e-7)
    cos = (u0 * u1).sum(dim=-1, keepdim=True).clamp(-1, 1)
    del u0, u1
    colinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0, cos))
    sin_theta = torch.sin(theta)
    out = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / sin_theta
    out = torch.where(colinear, (1 - t) * v0 + t * v1, out)
    if dim != -1 and not flatten:
        out = out.transpose(dim, -1)
    return out.reshape(shape)


class NuSlerpMerge:
    spec = MethodSpec(
        name="nuslerp",
        pretty_name="NuSLERP",
        reference_url=None,
        base=BasePolicy.OPTIONAL,
        params=(
            ParamSpec("weight", float, Scope.NON_BASE),
            ParamSpec("nuslerp_row_wise", bool, Scope.SHARED, False),
            ParamSpec("nuslerp_flatten", bool, Scope.SHARED, True),
        ),
        min_inputs=1,
        min_non_base=2,
        max_non_base=2,
    )

    def merge(self, inp: MergeInput) -> torch.Tensor:
        entries = inp.non_base()
        if len(entries) != 2:
            raise ConfigError(
                f"nuslerp needs exactly two models besides the base, got {len(entries)}", field="models"
            )
        w = [float(p["weight"]) for _, p in entries]
        total = w[0] + w[1]
        t = 0.5 if abs(total) < 1e-6 else w[1] / total
        dim = 0 if inp.shared.get("nuslerp_row_wise", False) else -1
        flatten = bool(inp.shared.get("nuslerp_flatten", True))
        (x0, _), (x1, _) = entries
        base = inp.base
        if base is None:
            return nuslerp_tensors(t, x0, x1, dim=dim, flatten=flatten)
        return base + nuslerp_tensors(t, x0 - base, x1 - base, dim=dim, flatten=flatten)
