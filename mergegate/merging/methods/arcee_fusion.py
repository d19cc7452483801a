"""Arcee Fusion, mergekit 0.1.5 ``arcee_fusion`` (arcee-ai/mergekit mergekit/merge_methods/arcee_fusion.py).

A base ``b`` and exactly one other model ``x``. Each element's importance is its change times how
much the row's distribution changed: ``I = |x - b| * KL(softmax(x) || softmax(b))``, with the
softmaxes along the last dimension (plus 1e-8) and the KL divergence one value per row (a 1-D
tensor is one row). The change is kept where ``I >= median(I) + 1.5 * (Q3 - Q1)`` (a Tukey fence):
``out = b + (x - b) * mask``.

The quartiles are the elements at ``floor(q * (n - 1))`` of the sorted importances, ``q`` in
float32 as mergekit computes it. Above ``SAMPLE_SIZE`` elements mergekit estimates them from that
many elements drawn with replacement from the global RNG; mergegate draws the same number from the
per-tensor generator, so such tensors match mergekit in distribution and are reproducible by seed
(the method is marked stochastic); smaller tensors are exact.

The mask is float32, so like mergekit the result is float32 for 16-bit inputs (``promotes_to``): a
recipe without ``out_dtype`` writes float32 tensors, as mergekit 0.1.5 does. Every other operation
is mergekit's, in its order and dtype, so the result is mergekit's to the bit.
"""

from __future__ import annotations

import torch

from mergegate.errors import ConfigError
from mergegate.merging.methods.base import BasePolicy, MergeInput, MethodSpec

SAMPLE_SIZE = 1_000_000
KL_EPS = 1e-8
QUARTILES = (0.25, 0.5, 0.75)


def importance(x: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """``|x - b| * KL(softmax(x) || softmax(b))`` along the last dimension."""
    p = torch.softmax(x, dim=-1).add_(KL_EPS)
    q = torch.softmax(base, dim=-1).add_(KL_EPS)
    kl = torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)
    del p, q
    return torch.sub(x, base).abs_().mul_(kl)


def fence(scores: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``median + 1.5 * IQR`` of ``scores`` (0-dim, the scores' dtype)."""
    values = scores.reshape(-1)
    n = values.numel()
    if n > SAMPLE_SIZE:
        gen_device = generator.device if generator is not None else values.device
        picks = torch.randint(n, (SAMPLE_SIZE,), generator=generator, device=gen_device)
        values = values[picks.to(values.device)]
    ordered = torch.sort(values).values
    positions = (torch.tensor(QUARTILES) * (ordered.numel() - 1)).long()  # float32, as mergekit
    q1, median, q3 = ordered[positions.to(ordered.device)]
    return median + 1.5 * (q3 - q1)


def arcee_fusion_tensors(base: torch.Tensor, other: torch.Tensor,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    scores = importance(other, base)
    mask = (scores >= fence(scores, generator)).float()
    del scores
    return base + (other - base) * mask


class ArceeFusionMerge:
    spec = MethodSpec(
        name="arcee_fusion",
        pretty_name="Arcee Fusion",
        reference_url="https://arcee.ai",
        base=BasePolicy.REQUIRED,
        params=(),
        min_inputs=2,
        max_inputs=2,
        stochastic=True,  # quartiles of tensors above SAMPLE_SIZE elements are sampled
        promotes_to=torch.float32,
    )

    def merge(self, inp: MergeInput) -> torch.Tensor:
        if inp.base_index is None or len(inp.tensors) != 2:
            raise ConfigError(f"arcee_fusion needs a base_model and exactly one other model, got "
                              f"{len(inp.tensors)} inputs", field="models")
        return arcee_fusion_tensors(inp.base, inp.tensors[1 - inp.base_index], inp.generator)
