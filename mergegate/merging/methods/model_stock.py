"""Model Stock, mergekit 0.1.5 ``model_stock``.

Task vectors ``delta_i = x_i - b`` of the N >= 2 fine-tuned models, flattened (or per row along the
last dimension with ``filter_wise``, a 1-D tensor being one row); ``cos`` = the mean of the pairwise
cosines (each clamped to [-1, 1], norm products clamped at 1e-6); ``t = N cos / (1 + (N - 1) cos)``
(0, i.e. keep the base, where ``|1 + (N - 1) cos| < 1e-6``); ``out = t * mean(x_i) + (1 - t) * b``.
The arithmetic is done in the compute dtype, as mergekit does.
"""

from __future__ import annotations

import torch

from mergegate.errors import ConfigError
from mergegate.merging.methods.base import BasePolicy, MergeInput, MethodSpec, ParamSpec, Scope


def model_stock_tensors(base: torch.Tensor, others: list[torch.Tensor], *, filter_wise: bool = False) -> torch.Tensor:
    shape = base.shape
    if filter_wise:
        if base.dim() == 1:
            base, others = base.unsqueeze(0), [x.unsqueeze(0) for x in others]
    else:
        base, others = base.reshape(-1), [x.reshape(-1) for x in others]
    offsets = [x - base for x in others]
    norms = [torch.norm(o, dim=-1) for o in offsets]
    cosines = []
    for i in range(len(offsets)):
        for j in range(i + 1, len(offsets)):
            denom = (norms[i] * norms[j]).clamp(min=1e-6)
            cosines.append(((offsets[i] * offsets[j]).sum(dim=-1) / denom).clamp(-1, 1))
    del offsets
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    n = len(others)
    denominator = 1 + (n - 1) * cos
    singular = denominator.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(cos), (n * cos) / torch.where(singular, 1, denominator))
    average = others[0]
    for x in others[1:]:
        average = average + x
    average = average / n
    return (t * average + (1 - t) * base).reshape(shape)


class ModelStockMerge:
    spec = MethodSpec(
        name="model_stock",
        pretty_name="Model Stock",
        reference_url="https://arxiv.org/abs/2403.19522",
        base=BasePolicy.REQUIRED,
        params=(ParamSpec("filter_wise", bool, Scope.SHARED, False),),
        min_inputs=3,
    )

    def merge(self, inp: MergeInput) -> torch.Tensor:
        if inp.base is None:
            raise ConfigError("model_stock needs a base_model", field="base_model")
        others = [t for t, _ in inp.non_base()]
        if len(others) < 2:
            raise ConfigError(
                f"model_stock needs at least two models besides the base, got {len(others)}", field="models"
            )
        return model_stock_tensors(inp.base, others, filter_wise=bool(inp.shared.get("filter_wise", False)))
