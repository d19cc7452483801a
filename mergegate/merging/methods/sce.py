"""SCE (select, calculate, erase), mergekit 0.1.5 ``sce`` (arcee-ai/mergekit mergekit/merge_methods/sce.py).

For base ``b`` and task vectors ``tau_i = x_i - b`` (in the compute dtype, stacked ``(N, ...)``):

1. *select* (only when ``select_topk < 1``): keep the ``k = int(count_nonzero(var) * select_topk)``
   positions with the largest variance across the N task vectors (``var`` unbiased=False), zero
   the others in every ``tau_i``;
2. *calculate*: ``w_i = mean(tau_i^2) / sum_j mean(tau_j^2)`` (``1/N`` each when that sum is
   below 1e-6);
3. *erase*: TIES' sign election (``sign(tau_i) == sign(sum_j tau_j)``, a zero sum counting as +);
   ``out = b + sum_i w_i m_i tau_i / max(sum_i w_i m_i, 1e-6)``.

There are no per-model weights. The operations, their order, shapes and dtypes are mergekit's
(including ``torch.topk`` for the selection, so which of several equal variances at the threshold
survive is mergekit's choice too), so the result is mergekit's to the bit; intermediate results
are computed in place where mergekit allocates a new tensor of the same values, the variance with
a vectorised copy of PyTorch's own Welford loop (``variance_across``) and the top-k unsorted.
"""

from __future__ import annotations

import torch

from mergegate.errors import ConfigError
from mergegate.merging.methods.base import BasePolicy, MergeInput, MethodSpec, ParamSpec, Scope


def task_vectors(base: torch.Tensor, others: list[torch.Tensor]) -> torch.Tensor:
    """``stack([x - base for x in others])`` without the intermediate list."""
    tvs = torch.empty((len(others), *base.shape), dtype=base.dtype, device=base.device)
    for i, x in enumerate(others):
        torch.sub(x, base, out=tvs[i])
    return tvs


VAR_CHUNK = 1 << 20  # columns per float64 Welford chunk


def variance_across(tvs: torch.Tensor) -> torch.Tensor:
    """``torch.var(tvs, dim=0, unbiased=False)``, the same values, several times faster on CPU.

    PyTorch's CPU kernel runs Welford's recurrence per output element with float64 accumulators
    (``mean += (x - mean) / n; m2 += (x - mean_old) * (x - mean_new)``, then ``m2 / n`` rounded to
    the tensor's dtype) in a scalar loop; this runs the same recurrence vectorised over the columns,
    in float64, a chunk of columns at a time. Tested bit-identical to ``torch.var``."""
    rows = tvs.reshape(tvs.shape[0], -1)
    n = rows.shape[0]
    out = torch.empty(rows.shape[1], dtype=tvs.dtype, device=tvs.device)
    for start in range(0, rows.shape[1], VAR_CHUNK):
        cols = rows[:, start:start + VAR_CHUNK]
        mean = cols[0].to(torch.float64, copy=True)
        m2 = torch.zeros_like(mean)
        for i in range(1, n):
            x = cols[i].to(torch.float64, copy=True)
            delta = x - mean
            mean += delta / (i + 1)
            m2 += delta * x.sub_(mean)
        out[start:start + VAR_CHUNK] = m2.div_(n)
    return out.view(tvs.shape[1:])


def topk_variance_mask(tvs: torch.Tensor, fraction: float, mask_dtype: torch.dtype) -> torch.Tensor:
    """1 at the ``int(count_nonzero(var) * fraction)`` positions of largest variance across inputs."""
    if fraction <= 0:
        return torch.zeros_like(tvs[0], dtype=mask_dtype)
    if fraction >= 1:
        return torch.ones_like(tvs[0], dtype=mask_dtype)
    var = variance_across(tvs)
    k = int(torch.count_nonzero(var) * fraction)  # a float32 product, as mergekit rounds it
    mask = torch.zeros_like(var, dtype=mask_dtype)
    if k == 0:
        return mask
    # mergekit ranks var.abs(): a variance is never negative (nor -0.0), so that is var itself.
    # Unsorted: the same selection (PyTorch's CPU topk picks the set with nth_element and only then
    # sorts it), without sorting k elements
    _, keep = torch.topk(var.view(-1), k=k, largest=True, sorted=False)
    mask.view(-1)[keep] = 1
    return mask


def sign_consensus(tvs: torch.Tensor, mask_dtype: torch.dtype) -> torch.Tensor:
    """TIES' "sum" election (mergekit's ``get_mask``): bool, True where ``sign(tau_i)`` is the
    sign of ``sum_j tau_j`` (>= 0 counting as +)."""
    majority = (tvs.sum(dim=0) >= 0).to(mask_dtype) * 2 - 1
    return tvs.sign().to(mask_dtype) == majority


def energy_weights(tvs: torch.Tensor) -> torch.Tensor:
    """``mean(tau_i^2)`` normalised to sum 1 (uniform when the sum is below 1e-6)."""
    weights = tvs.square().reshape(tvs.shape[0], -1).mean(dim=1)
    total = torch.sum(weights).item()
    if abs(total) < 1e-6:
        return torch.ones_like(weights) / weights.shape[0]
    return weights / total


def sce_tensors(base: torch.Tensor, others: list[torch.Tensor], *, select_topk: float = 1.0,
                int8_mask: bool = False) -> torch.Tensor:
    if not others:
        return base
    mask_dtype = torch.int8 if int8_mask else base.dtype
    tvs = task_vectors(base, others)
    if select_topk < 1:
        tvs.mul_(topk_variance_mask(tvs, select_topk, mask_dtype).unsqueeze(0))
    keep = sign_consensus(tvs, mask_dtype)
    weights = energy_weights(tvs)
    weights = weights.view(-1, *([1] * (tvs.dim() - 1)))
    erased = weights * keep
    del keep
    merged = tvs.mul_(erased).sum(dim=0)
    return base + merged / torch.sum(erased, dim=0).clamp(min=1e-6)


class SceMerge:
    spec = MethodSpec(
        name="sce",
        pretty_name="SCE",
        reference_url="https://arxiv.org/abs/2408.07990",
        base=BasePolicy.REQUIRED,
        params=(
            ParamSpec("int8_mask", bool, Scope.SHARED, False),
            ParamSpec("select_topk", float, Scope.SHARED, 1.0),
        ),
        min_inputs=1,
    )

    def merge(self, inp: MergeInput) -> torch.Tensor:
        base = inp.base
        if base is None:
            raise ConfigError("sce needs a base_model", field="base_model")
        return sce_tensors(base, [t for t, _ in inp.non_base()],
                           select_topk=float(inp.shared.get("select_topk", 1.0)),
                           int8_mask=bool(inp.shared.get("int8_mask", False)))
