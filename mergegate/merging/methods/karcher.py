"""Karcher mean, mergekit 0.1.5 ``karcher`` (arcee-ai/mergekit mergekit/merge_methods/karcher.py).

The weighted Riemannian (Karcher) mean of the inputs on the unit hypersphere, rescaled by their
weighted mean norm. Every input counts equally (``alpha_i = 1/N``; a base model, if given, is an
ordinary input). Each tensor is one vector:

1. ``u_i = x_i / |x_i|`` (norms in float32, float64 for float64 inputs; a zero tensor gives a zero
   unit vector); inputs with ``|x_i| <= tol`` drop out of the direction (their ``alpha`` is
   renormalised away), all of them: the result is zero;
2. start from ``m = sum_i a_i u_i / |.|`` (``u_0`` if that norm is below ``tol``), then up to
   ``max_iter`` times: ``T = sum_i a_i theta_i / sin(theta_i) (u_i - cos(theta_i) m)`` over the
   inputs with ``theta_i = acos(<m, u_i>) >= tol``; stop when ``|T| < tol``, else
   ``m <- cos|T| m + sin|T| T / |T|``, renormalised;
3. ``out = (sum_i alpha_i |x_i|) m``.

The arithmetic is mergekit's, operation by operation and in its dtypes (unit vectors, the mean and
the tangent in the compute dtype, norms in float32), so the result is mergekit's to the bit.
"""

from __future__ import annotations

import torch

from mergegate.merging.methods.base import BasePolicy, MergeInput, MethodSpec, ParamSpec, Scope


def _norm(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.linalg.vector_norm(t.to(dtype))


def _unit_vectors(tensors: list[torch.Tensor], dtype: torch.dtype) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    norms, units = [], []
    for t in tensors:
        n = _norm(t, dtype)
        norms.append(n)
        units.append(torch.zeros_like(t) if float(n) == 0.0 else (t / n).to(t.dtype))
    return norms, units


def _initial_mean(units: list[torch.Tensor], alphas: list[float], tol: float, dtype: torch.dtype) -> torch.Tensor:
    mean = torch.zeros_like(units[0])
    for a, u in zip(alphas, units):
        mean += a * u
    n = _norm(mean, dtype)
    if float(n) < tol:
        return units[0].clone()
    return (mean / n).to(mean.dtype)


def _tangent(mean: torch.Tensor, units: list[torch.Tensor], alphas: list[float], tol: float) -> torch.Tensor:
    """``sum_i a_i theta_i / sin(theta_i) (u_i - cos(theta_i) m)`` over the inputs not at ``m``."""
    tangent = torch.zeros_like(mean)
    flat_mean = mean.flatten()
    for a, u in zip(alphas, units):
        cos = torch.clamp(torch.dot(flat_mean, u.flatten()), -1.0, 1.0)
        theta = torch.arccos(cos)
        if float(theta) < tol:
            continue
        tangent += a * (theta / torch.sin(theta)) * (u - cos * mean)
    return tangent


def karcher_tensors(tensors: list[torch.Tensor], *, max_iter: int = 10, tol: float = 1e-5) -> torch.Tensor:
    if len(tensors) == 1:
        return tensors[0]
    alphas = [1.0 / len(tensors)] * len(tensors)
    dtype = torch.float64 if tensors[0].dtype == torch.float64 else torch.float32
    norms, units = _unit_vectors(tensors, dtype)
    valid = [i for i, n in enumerate(norms) if float(n) > tol]
    if not valid:
        zero = 0  # mergekit's sum(t * 0 for t in tensors): starting from 0 makes the zeros +0.0
        for t in tensors:
            zero = zero + t * 0
        return zero
    total = sum(alphas[i] for i in valid)
    weights = [alphas[i] / total for i in valid]
    kept = [units[i] for i in valid]
    mean = _initial_mean(kept, weights, tol, dtype)
    for _ in range(max_iter):
        tangent = _tangent(mean, kept, weights, tol)
        size = _norm(tangent, dtype)
        if float(size) < tol:
            break
        mean = (torch.cos(size) * mean + torch.sin(size) * (tangent / size)).to(mean.dtype)
        n = _norm(mean, dtype)
        if float(n) > tol:
            mean = (mean / n).to(mean.dtype)
    scale = 0
    for a, n in zip(alphas, norms):
        scale = scale + a * n
    return scale * mean


class KarcherMerge:
    spec = MethodSpec(
        name="karcher",
        pretty_name="Karcher Mean",
        reference_url="https://arxiv.org/abs/2603.04972",
        base=BasePolicy.IGNORED,
        params=(
            ParamSpec("max_iter", int, Scope.SHARED, 10),
            ParamSpec("tol", float, Scope.SHARED, 1e-5),
        ),
        min_inputs=1,
    )

    def merge(self, inp: MergeInput) -> torch.Tensor:
        return karcher_tensors(inp.tensors, max_iter=int(inp.shared.get("max_iter", 10)),
                               tol=float(inp.shared.get("tol", 1e-5)))
