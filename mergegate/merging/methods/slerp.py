"""Spherical linear interpolation, mergekit 0.1.5 ``slerp``.

The whole tensor is one vector. ``v0`` is the base, ``v1`` the other input. With the norms taken
as 1 when below 1e-8, ``dot = <v0/|v0|, v1/|v1|>`` clamped to [-1, 1]; if ``|dot| > 0.9995`` the
result is the plain lerp ``(1 - t) v0 + t v1``, otherwise with ``theta = acos(dot)``:
``sin((1 - t) theta) / sin(theta) * v0 + sin(t theta) / sin(theta) * v1`` applied to the
*unnormalised* tensors. All arithmetic is float32 (float64 for float64 inputs), in chunks; the
result is stored in the compute dtype, as mergekit does.
"""

from __future__ import annotations

import math

import torch

from mergegate.errors import ConfigError
from mergegate.merging.methods.base import BasePolicy, MergeInput, MethodSpec, ParamSpec, Scope
from mergegate.merging.methods.linear import accumulation_dtype, chunk_slices, flat

DOT_THRESHOLD = 0.9995
EPS = 1e-8


def slerp_tensors(t: float, v0: torch.Tensor, v1: torch.Tensor, *, dot_threshold: float = DOT_THRESHOLD,
                  eps: float = EPS) -> torch.Tensor:
    """SLERP from ``v0`` (t = 0) to ``v1`` (t = 1); returns a tensor of ``v0``'s dtype and shape."""
    acc = accumulation_dtype(v0.dtype)
    a, b = flat(v0), flat(v1)
    out = torch.empty(v0.shape, dtype=v0.dtype, device=v0.device)
    dst = flat(out)
    numel = a.numel()
    tt = torch.tensor(t, dtype=acc)
    if numel == 0:
        return out
    convert = v0.dtype != acc
    bufs = None
    if convert:  # two reused float32 chunk buffers
        step = next(iter(chunk_slices(numel, v0.device))).stop
        bufs = (torch.empty(step, dtype=acc, device=v0.device), torch.empty(step, dtype=acc, device=v0.device))

    def chunk_pair(sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
        if not convert:
            return a[sl], b[sl]
        c = sl.stop - sl.start
        return bufs[0][:c].copy_(a[sl]), bufs[1][:c].copy_(b[sl])

    sq_a = sq_b = ab = 0.0
    for sl in chunk_slices(numel, v0.device):
        x, y = chunk_pair(sl)
        sq_a += float(torch.dot(x, x))
        sq_b += float(torch.dot(y, y))
        ab += float(torch.dot(x, y))
    norm_a, norm_b = math.sqrt(sq_a), math.sqrt(sq_b)
    norm_a = norm_a if norm_a > eps else 1.0
    norm_b = norm_b if norm_b > eps else 1.0
    dot = torch.tensor(ab / (norm_a * norm_b), dtype=acc).clamp(-1, 1)
    if float(dot.abs()) > dot_threshold:
        coef_a, coef_b = 1 - tt, tt
    else:
        theta = torch.acos(dot)
        sin_theta = torch.sin(theta)
        coef_a = torch.sin((1 - tt) * theta) / sin_theta
        coef_b = torch.sin(tt * theta) / sin_theta
    ca, cb = float(coef_a), float(coef_b)
    for sl in chunk_slices(numel, v0.device):
        if convert:
            r = bufs[0][: sl.stop - sl.start].copy_(a[sl]).mul_(ca)
            r.add_(b[sl], alpha=cb)
            dst[sl] = r
        else:
            torch.mul(a[sl], ca, out=dst[sl]).add_(b[sl], alpha=cb)
    return out


class SlerpMerge:
    spec = MethodSpec(
        name="slerp",
        pretty_name="SLERP",
        reference_url="https://en.wikipedia.org/wiki/Slerp",
        base=BasePolicy.REQUIRED,
        params=(ParamSpec("t", float, Scope.SHARED),),
        min_inputs=2,
        max_inputs=2,
    )

    def merge(self, inp: MergeInput) -> torch.Tensor:
        if inp.base_index is None or len(inp.tensors) != 2:
            raise ConfigError("slerp needs a base_model and exactly one other model", field="merge_method")
        other = inp.tensors[1 - inp.base_index]
        return slerp_tensors(float(inp.shared["t"]), inp.base, other)
