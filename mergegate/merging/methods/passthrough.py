"""Passthrough, mergekit 0.1.5 ``passthrough``: exactly one input, optionally multiplied by its
``scale`` (usually given with a filter, e.g. ``{filter: down_proj, value: 0.5}``)."""

from __future__ import annotations

import torch

from mergegate.errors import ConfigError
from mergegate.merging.methods.base import BasePolicy, MergeInput, MethodSpec, ParamSpec, Scope


class PassthroughMerge:
    spec = MethodSpec(
        name="passthrough",
        pretty_name="Passthrough",
        reference_url=None,
        base=BasePolicy.IGNORED,
        params=(ParamSpec("scale", float, Scope.INPUT, None),),
        min_inputs=1,
        max_inputs=1,
    )

    def merge(self, inp: MergeInput) -> torch.Tensor:
        if len(inp.tensors) != 1:
            raise ConfigError(
                f"passthrough takes exactly one input per tensor, got {len(inp.tensors)}", field="models"
            )
        scale = inp.per_input[0].get("scale") if inp.per_input else None
        tensor = inp.tensors[0]
        return tensor if scale is None else tensor * float(scale)
