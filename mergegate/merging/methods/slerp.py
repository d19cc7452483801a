"""Spherical linear interpolation, mergekit 0.1.5 ``slerp`` (arcee-ai/mergekit
mergekit/merge_methods/slerp.py), reproduced to the bit.

The whole tensor is one vector (a row of one: mergekit's graph executor merges one output tensor
per batch). ``v0`` is the base, ``v1`` the other input. In float32 (float64 for float64 inputs):

1. ``|v0|`` and ``|v1|`` as the norm of the per-chunk norms (chunks of ``MK_CHUNK`` elements),
   taken as 1 when not above 1e-8;
2. ``dot`` = the sum over chunks of ``sum((v0 / |v0|) * (v1 / |v1|))``, clamped to [-1, 1];
3. if ``|dot| > 0.9995`` the coefficients are ``1 - t`` and ``t`` (lerp), otherwise with
   ``theta = acos(dot)``: ``sin((1 - t) theta) / sin(theta)`` and ``sin(t theta) / sin(theta)``;
4. ``out = coef_a * v0 + coef_b * v1`` on the *unnormalised* tensors: two products, each rounded,
   then their sum, rounded, then stored in the compute dtype.

Every reduction runs on the same shapes and chunks as mergekit's, and step 4 keeps its three
separately rounded operations (``a * ca`` then ``add_(b, alpha=cb)`` would be one fused
multiply-add, which rounds differently and moved some bf16 results by one ulp), so the output bytes
are mergekit's. The float32 scratch is two reused chunk buffers instead of mergekit's per-chunk
temporaries.
"""

from __future__ import annotations

import torch

from mergegate.errors import ConfigError
from mergegate.merging.methods.base import BasePolicy, MergeInput, MethodSpec, ParamSpec, Scope
from mergegate.merging.methods.linear import accumulation_dtype

DOT_THRESHOLD = 0.9995
EPS = 1e-8
MK_CHUNK = 1 << 20  # mergekit's _CHUNK_ELEMENTS divided by the batch size (1)


class _Chunks:
    """Float32 (float64) views of matching chunks of two row vectors, converted into two reused
    buffers when the inputs are of a narrower dtype (the same values as mergekit's ``.to(dtype)``)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, acc: torch.dtype) -> None:
        self.a, self.b, self.acc = a, b, acc
        self.numel = a.shape[1]
        self.convert = a.dtype != acc
        size = min(self.numel, MK_CHUNK)
        self.bufs = None
        if self.convert:
            self.bufs = (torch.empty((1, size), dtype=acc, device=a.device),
                         torch.empty((1, size), dtype=acc, device=a.device))

    def __iter__(self):
        for start in range(0, self.numel, MK_CHUNK):
            stop = min(self.numel, start + MK_CHUNK)
            x, y = self.a[:, start:stop], self.b[:, start:stop]
            if self.convert:
                n = stop - start
                x = self.bufs[0][:, :n].copy_(x)
                y = self.bufs[1][:, :n].copy_(y)
            yield start, stop, x, y


def slerp_coefficients(t: float, chunks: _Chunks, *, dot_threshold: float, eps: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1 to 3: the two (1, 1) coefficient tensors."""
    acc = chunks.acc
    tt = torch.tensor([[t]], dtype=acc)
    norm_parts_a, norm_parts_b = [], []
    for _, _, x, y in chunks:
        norm_parts_a.append(torch.linalg.vector_norm(x, dim=1, keepdim=True))
        norm_parts_b.append(torch.linalg.vector_norm(y, dim=1, keepdim=True))
    norm_a = torch.linalg.vector_norm(torch.stack(norm_parts_a), dim=0)
    norm_b = torch.linalg.vector_norm(torch.stack(norm_parts_b), dim=0)
    norm_a = torch.where(norm_a > eps, norm_a, 1)
    norm_b = torch.where(norm_b > eps, norm_b, 1)
    dot_parts = []
    scratch = None
    for _, _, x, y in chunks:
        if chunks.convert:  # the buffers are ours: divide in place
            ux, uy = x.div_(norm_a), y.div_(norm_b)
        else:
            if scratch is None:
                scratch = torch.empty((2, x.shape[1]), dtype=acc, device=x.device)
            ux = torch.div(x, norm_a, out=scratch[0:1, : x.shape[1]])
            uy = torch.div(y, norm_b, out=scratch[1:2, : x.shape[1]])
        dot_parts.append(ux.mul_(uy).sum(dim=1, keepdim=True))
    dot = torch.stack(dot_parts).sum(dim=0).clamp(-1, 1)
    linear = dot.abs() > dot_threshold
    theta = torch.acos(torch.where(linear, 0, dot))
    sin_theta = torch.sin(theta)
    one_minus_t = 1 - tt
    coef_a = torch.where(linear, one_minus_t, torch.sin(one_minus_t * theta) / sin_theta)
    coef_b = torch.where(linear, tt, torch.sin(tt * theta) / sin_theta)
    return coef_a, coef_b


def slerp_tensors(t: float, v0: torch.Tensor, v1: torch.Tensor, *, dot_threshold: float = DOT_THRESHOLD,
                  eps: float = EPS) -> torch.Tensor:
    """SLERP from ``v0`` (t = 0) to ``v1`` (t = 1); returns a tensor of ``v0``'s dtype and shape."""
    acc = accumulation_dtype(v0.dtype)
    out = torch.empty(v0.shape, dtype=v0.dtype, device=v0.device)
    if v0.numel() == 0:
        return out
    a, b = v0.reshape(1, -1), v1.reshape(1, -1)
    chunks = _Chunks(a, b, acc)
    coef_a, coef_b = slerp_coefficients(t, chunks, dot_threshold=dot_threshold, eps=eps)
    dst = out.view(1, -1)
    tmp = None
    for start, stop, x, y in chunks:
        if chunks.convert:  # x, y are our float32 buffers
            x.mul_(coef_a).add_(y.mul_(coef_b))
            dst[:, start:stop].copy_(x)
        else:
            if tmp is None:
                tmp = torch.empty((1, stop - start), dtype=acc, device=v0.device)
            d = dst[:, start:stop]
            torch.mul(x, coef_a, out=d)
            d.add_(torch.mul(y, coef_b, out=tmp[:, : stop - start]))
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
