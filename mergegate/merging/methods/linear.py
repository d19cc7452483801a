"""Linear (weighted average) merging, mergekit 0.1.5 ``linear`` (arcee-ai/mergekit
mergekit/merge_methods/linear.py).

``out = sum_i w_i x_i`` (divided by ``sum_i w_i`` when ``normalize``), accumulated in float32
(float64 for float64 inputs) and returned in the compute dtype, exactly as mergekit does. The work
is done in chunks so the float32 scratch stays small (mergekit allocates a full-size float32
accumulator and stacks the inputs).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from mergegate.errors import ConfigError
from mergegate.merging.methods.base import BasePolicy, MergeInput, MethodSpec, ParamSpec, Scope

# elements per chunk: small enough for the scratch of a chunk to stay in cache on CPU, large
# enough on accelerators that kernel launches do not dominate.
CPU_CHUNK = 1 << 22
ACCEL_CHUNK = 1 << 24
CONVERT_CPU_CHUNK = 1 << 17  # float32 scratch of 512 KiB per buffer


def chunk_slices(numel: int, device: torch.device, chunk: int | None = None) -> Iterator[slice]:
    step = chunk or (CPU_CHUNK if device.type == "cpu" else ACCEL_CHUNK)
    for start in range(0, numel, step):
        yield slice(start, min(numel, start + step))


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)


class LinearMerge:
    spec = MethodSpec(
        name="linear",
        pretty_name="Linear",
        reference_url="https://arxiv.org/abs/2203.05482",
        base=BasePolicy.IGNORED,
        params=(
            ParamSpec("weight", float, Scope.INPUT),
            ParamSpec("normalize", bool, Scope.SHARED, True),
        ),
        min_inputs=1,
    )

    def merge(self, inp: MergeInput) -> torch.Tensor:
        tensors = inp.tensors
        weights = [float(p["weight"]) for p in inp.per_input]
        return weighted_sum(tensors, weights, normalize=bool(inp.shared.get("normalize", True)), name=inp.name)


def weighted_sum(tensors: list[torch.Tensor], weights: list[float], *, normalize: bool, name: str = "") -> torch.Tensor:
    first = tensors[0]
    dtype = first.dtype
    acc_dtype = accumulation_dtype(dtype)
    w = torch.tensor(weights, dtype=torch.float64).to(acc_dtype)  # mergekit rounds weights to fp32
    coeffs = [float(c) for c in w]
    denom = None
    if normalize:
        denom = float(w.sum())
        if denom == 0:
            raise ConfigError(
                f"linear weights sum to zero for tensor {name or '?'} with normalize: true "
                "(mergekit would write NaN/inf)",
                field="weight",
                hint="give weights with a non-zero sum, or set normalize: false",
            )
    out = torch.empty(first.shape, dtype=dtype, device=first.device)
    srcs = [flat(t) for t in tensors]
    dst = flat(out)
    convert = dtype != acc_dtype
    # 16-bit inputs: a float32 accumulator and a conversion buffer small enough to stay in L2 (a
    # mixed-dtype add_ converts too, but about twice as slowly as copy_ plus a float32 add_)
    chunk = CONVERT_CPU_CHUNK if convert and first.device.type == "cpu" else None
    scratch = None
    for sl in chunk_slices(dst.numel(), first.device, chunk):
        n = sl.stop - sl.start
        if not convert:  # accumulate straight into the output
            acc, buf = dst[sl], None
        else:
            if scratch is None:
                scratch = torch.empty((2, n), dtype=acc_dtype, device=first.device)
            acc, buf = scratch[0, :n], scratch[1, :n]
        # mergekit: zeros, then result.addcmul_(x_i, w_i) per input, a fused multiply-add on CPU
        # exactly like add_(x_i, alpha=w_i); starting from +0 (not from x_0 * w_0) also gives
        # mergekit's +0.0 where every product is -0.0
        acc.zero_()
        for src, c in zip(srcs, coeffs):
            acc.add_(src[sl] if buf is None else buf.copy_(src[sl]), alpha=c)
        if denom is not None:
            acc.div_(denom)
        if buf is not None:
            dst[sl] = acc
    return out
