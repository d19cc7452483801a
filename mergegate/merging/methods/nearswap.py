"""NearSwap, mergekit 0.1.5 ``nearswap`` (arcee-ai/mergekit mergekit/merge_methods/nearswap.py).

A base ``a`` and exactly one other model ``b``; elementwise, in the compute dtype:
``w = clamp(t / max(|a - b|, 1e-6), 0, 1)`` and ``out = w * b + (1 - w) * a``: where the two
models are within ``t`` of each other the other model's value is taken, further apart the result
moves towards the base in proportion to ``t / |a - b|``.

Every operation is mergekit's, in its order and dtype (``t / x`` is computed as PyTorch's
``Tensor.__rtruediv__`` does, ``reciprocal(x) * t``, two roundings); being elementwise, it runs in
chunks through two reused buffers instead of five full-size temporaries.
"""

from __future__ import annotations

import torch

from mergegate.errors import ConfigError
from mergegate.merging.methods.base import BasePolicy, MergeInput, MethodSpec, ParamSpec, Scope
from mergegate.merging.methods.linear import chunk_slices, flat

MIN_DIFF = 1e-6


def nearswap_tensors(t: float, base: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    out = torch.empty(base.shape, dtype=base.dtype, device=base.device)
    a, b, dst = flat(base), flat(other), flat(out)
    bufs = None
    for sl in chunk_slices(dst.numel(), base.device):
        n = sl.stop - sl.start
        if bufs is None:
            bufs = torch.empty((2, n), dtype=base.dtype, device=base.device)
        w, rest = bufs[0, :n], bufs[1, :n]
        torch.sub(a[sl], b[sl], out=w).abs_().clamp_(min=MIN_DIFF)
        w.reciprocal_().mul_(t).clamp_(min=0, max=1)  # t / |a - b|, as Tensor.__rtruediv__ computes it
        rest.fill_(1).sub_(w).mul_(a[sl])  # (1 - w) * a, as rsub computes 1 - w (NaNs keep their sign)
        torch.mul(w, b[sl], out=dst[sl]).add_(rest)  # w * b + (1 - w) * a
    return out


class NearSwapMerge:
    spec = MethodSpec(
        name="nearswap",
        pretty_name="NearSwap",
        reference_url="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001",
        base=BasePolicy.REQUIRED,
        params=(ParamSpec("t", float, Scope.SHARED),),
        min_inputs=2,
        max_inputs=2,
    )

    def merge(self, inp: MergeInput) -> torch.Tensor:
        if inp.base_index is None or len(inp.tensors) != 2:
            raise ConfigError(f"nearswap needs a base_model and exactly one other model, got {len(inp.tensors)} "
                              "inputs", field="models")
        other = inp.tensors[1 - inp.base_index]
        return nearswap_tensors(float(inp.shared["t"]), inp.base, other)
