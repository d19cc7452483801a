"""Reinforced Agent Merging: mergekit 0.1.5 ``ram`` and ``ramplus_tl`` (arcee-ai/mergekit
mergekit/merge_methods/ram.py).

For base ``b`` and task vectors ``tau_i = x_i - b`` (compute dtype), an element of ``tau_i`` is
*active* where ``|tau_i| > epsilon``; ``c`` counts the active inputs per position. Positions one
input alone changes (``c == 1``) take that change whole; positions several inputs change
(``c > 1``) take the mean of their changes:
``out = b + sum_i (a_i u tau_i + a_i s tau_i / max(c, 1))`` with ``a_i`` the activity mask and
``u``, ``s`` the unique / shared position masks.

``ramplus_tl`` (tensor-local RAM+) also amplifies each input's unique changes by
``lambda_i = 1 + r * clamp(rho_i, 0, alpha)``, where ``rho_i`` = (its active shared positions) /
(its active unique positions) in this tensor. ``lambda_i`` is float32 (mergekit divides integer
counts by a float clamp), which promotes the result to float32 for 16-bit inputs (``promotes_to``):
a recipe without ``out_dtype`` writes float32 tensors, as mergekit 0.1.5 does.

The operations, their order and dtypes are mergekit's, so the results are mergekit's to the bit.
Every reduction is per position (over the inputs) or an integer count, so the work is done on
chunks of ``COLUMNS`` positions (cache-sized, instead of mergekit's full-size stacked temporaries);
``ramplus_tl`` first counts, then merges. Products are formed in place where mergekit allocates a
new tensor of the same values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mergegate.errors import ConfigError
from mergegate.merging.methods.base import BasePolicy, MergeInput, MethodSpec, ParamSpec, Scope
from mergegate.merging.methods.sce import task_vectors


COLUMNS = 1 << 20  # positions per chunk


@dataclass
class Activity:
    """A chunk of the task vectors ``(N, c)`` and mergekit's masks and counts over it."""

    rows: torch.Tensor
    active: torch.Tensor  # bool (N, c)
    counts: torch.Tensor  # int64 (1, c): active inputs per position
    shared: torch.Tensor  # bool (1, c): counts > 1
    unique: torch.Tensor  # bool (1, c): counts == 1


def activity(base: torch.Tensor, others: list[torch.Tensor], epsilon: float, cols: slice) -> Activity:
    """mergekit's ``_prepare_ram_vectors`` for the positions ``cols`` of the flattened tensors."""
    b = base.reshape(-1)[cols]
    rows = torch.empty((len(others), b.numel()), dtype=base.dtype, device=base.device)
    for i, x in enumerate(others):
        torch.sub(x.reshape(-1)[cols], b, out=rows[i])
    active = rows.abs() > epsilon
    counts = active.sum(dim=0, keepdim=True)
    return Activity(rows, active, counts, counts > 1, counts == 1)


def ram_combine(act: Activity, unique_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_i (z_i u [* lambda_i] + z_i s / max(c, 1))`` with ``z_i = tau_i * a_i``, (1, c)."""
    z = act.rows.mul_(act.active)  # the rows are ours: mask them in place
    solo = z * act.unique
    if unique_scale is not None:
        solo = solo * unique_scale.unsqueeze(-1)
    return (solo + z * act.shared / act.counts.clamp(min=1)).sum(dim=0, keepdim=True)


def _chunks(numel: int) -> list[slice]:
    return [slice(start, min(numel, start + COLUMNS)) for start in range(0, numel, COLUMNS)] or [slice(0, 0)]


def _merge(base: torch.Tensor, others: list[torch.Tensor], epsilon: float,
           unique_scale: torch.Tensor | None) -> torch.Tensor:
    dtype = base.dtype if unique_scale is None else torch.promote_types(base.dtype, unique_scale.dtype)
    out = torch.empty(base.shape, dtype=dtype, device=base.device)
    flat_out, flat_base = out.view(-1), base.reshape(-1)
    for cols in _chunks(base.numel()):
        merged = ram_combine(activity(base, others, epsilon, cols), unique_scale)
        torch.add(flat_base[cols], merged.reshape(-1), out=flat_out[cols])
    return out


def ram_tensors(base: torch.Tensor, others: list[torch.Tensor], *, epsilon: float = 1e-5) -> torch.Tensor:
    if not others:
        return base
    return _merge(base, others, epsilon, None)


def ramplus_tl_tensors(base: torch.Tensor, others: list[torch.Tensor], *, r: float = 0.1, alpha: float = 0.2,
                       epsilon: float = 1e-5) -> torch.Tensor:
    if not others:
        return base
    # per input, over the whole tensor: its active positions that are shared / unique (exact integer
    # counts, so summing them chunk by chunk changes nothing)
    shared_counts = torch.zeros(len(others), dtype=torch.int64, device=base.device)
    unique_counts = torch.zeros_like(shared_counts)
    for cols in _chunks(base.numel()):
        act = activity(base, others, epsilon, cols)
        shared_counts += (act.active & act.shared).sum(dim=1)
        unique_counts += (act.active & act.unique).sum(dim=1)
    rho = shared_counts / unique_counts.clamp(min=epsilon)  # int64 clamped by a float: float32
    lam = 1 + r * rho.clamp(min=0, max=alpha)
    return _merge(base, others, epsilon, lam)


def _spec(name: str, pretty: str, params: tuple[ParamSpec, ...], promotes_to: torch.dtype | None) -> MethodSpec:
    return MethodSpec(name=name, pretty_name=pretty, reference_url="https://arxiv.org/abs/2601.13572",
                      base=BasePolicy.REQUIRED, params=params, min_inputs=1, promotes_to=promotes_to)


def _base(inp: MergeInput, name: str) -> torch.Tensor:
    if inp.base is None:
        raise ConfigError(f"{name} needs a base_model", field="base_model")
    return inp.base


class RamMerge:
    spec = _spec("ram", "Reinforced Agent Merging", (ParamSpec("epsilon", float, Scope.SHARED, 1e-5),), None)

    def merge(self, inp: MergeInput) -> torch.Tensor:
        return ram_tensors(_base(inp, "ram"), [t for t, _ in inp.non_base()],
                           epsilon=float(inp.shared.get("epsilon", 1e-5)))


class RamPlusTlMerge:
    spec = _spec(
        "ramplus_tl",
        "Reinforced Agent Merging Plus (Tensor-Local)",
        (
            ParamSpec("r", float, Scope.SHARED, 0.1),
            ParamSpec("alpha", float, Scope.SHARED, 0.2),
            ParamSpec("epsilon", float, Scope.SHARED, 1e-5),
        ),
        torch.float32,
    )

    def merge(self, inp: MergeInput) -> torch.Tensor:
        shared = inp.shared
        return ramplus_tl_tensors(_base(inp, "ramplus_tl"), [t for t, _ in inp.non_base()],
                                  r=float(shared.get("r", 0.1)), alpha=float(shared.get("alpha", 0.2)),
                                  epsilon=float(shared.get("epsilon", 1e-5)))
