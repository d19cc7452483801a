"""Candidate merges rebuilt in memory, into ONE loaded transformers model.

The input tensors of every planned output tensor are read once, cast to the plan's compute dtype
and kept on the device (for task-arithmetic methods: the base and the fine-tunes, from which the
method derives the task vectors exactly as the merging engine does). A candidate recipe is
planned with the engine's own planner (:func:`mergegate.merging.plan.build_plan` over the already
opened inputs: precedence, filters, gradients), merged tensor by tensor with the same
``get_method(...).merge(MergeInput)`` call as :mod:`mergegate.merging.executor` (stochastic
methods get the same per-tensor generator, ``tensor_seed(seed, name)``), cast to the output
dtype and copied into the model's parameters in place under ``torch.no_grad()``. Nothing is
written to disk: the model then *is* what ``run_merge`` builds from that recipe and seed, loaded
by transformers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from mergegate.errors import MergeFailure
from mergegate.merging.config import MergeConfig, ModelReference
from mergegate.merging.executor import tensor_seed
from mergegate.merging.methods.base import MergeInput
from mergegate.merging.plan import MergePlan, build_plan

log = logging.getLogger(__name__)


class InMemoryMerger:
    """Holds the inputs on ``device`` and one model whose parameters each candidate overwrites."""

    def __init__(self, plan: MergePlan, *, device: str = "cpu", model: Any | None = None) -> None:
        from mergegate.merging.executor import load_task_inputs

        self.plan = plan
        self.device = torch.device(device)
        self.inputs = plan.inputs
        t0 = time.perf_counter()
        self.tensors: dict[tuple[ModelReference, str], torch.Tensor] = {}
        for task in plan.tasks:
            missing = [(ref, name) for ref, name in task.inputs if (ref, name) not in self.tensors]
            if not missing:
                continue
            loaded = load_task_inputs(plan, task, self.device)  # NaN/Inf checked, cast to the compute dtype
            for key, t in zip(task.inputs, loaded):
                self.tensors.setdefault(key, t)
        self.load_seconds = time.perf_counter() - t0
        self.model = model if model is not None else self._load_shell()
        self.params = self._param_map()
        self.merges = 0

    @property
    def source_path(self) -> Any:
        return self.inputs[self.plan.config_source].model.path

    def _load_shell(self) -> Any:
        from mergegate.audit.generators import load_causal_lm

        return load_causal_lm(self.source_path, device=str(self.device))

    def _param_map(self) -> dict[str, torch.Tensor]:
        named = dict(self.model.named_parameters())
        named.update({k: v for k, v in self.model.named_buffers() if k not in named})
        tied = bool(getattr(self.model.config, "tie_word_embeddings", False))
        out: dict[str, torch.Tensor] = {}
        for task in self.plan.tasks:
            name = task.out.name
            if name in named:
                out[name] = named[name]
            elif tied and name == "lm_head.weight":
                continue  # tied to the embedding, which the plan writes
            else:
                raise MergeFailure(f"the merged tensor {name} has no parameter in the loaded "
                                   f"{type(self.model).__name__}", hint="the recipe's architecture and the model "
                                   "class disagree; in-memory weighting needs a transformers causal LM")
        return out

    def plan_for(self, config: MergeConfig) -> MergePlan:
        """The engine's plan of ``config`` over the inputs already open (no I/O)."""
        plan = build_plan(config, self.inputs)
        if [t.out.name for t in plan.tasks] != [t.out.name for t in self.plan.tasks]:
            raise MergeFailure("a candidate recipe plans different tensors than the declared one")
        return plan

    @torch.no_grad()
    def apply(self, config: MergeConfig, *, seed: int | None) -> float:
        """Overwrite the model's parameters with the merge of ``config`` (and ``seed``); returns seconds."""
        t0 = time.perf_counter()
        plan = self.plan_for(config)
        method = plan.method
        for task in plan.tasks:
            tensors = [self.tensors[key] for key in task.inputs]
            generator = None
            if method.spec.stochastic:
                generator = torch.Generator(device=self.device)
                generator.manual_seed(tensor_seed(seed or 0, task.out.name))
            inp = MergeInput(tensors=tensors, base_index=task.base_index, per_input=task.per_input,
                             shared=task.shared, name=task.out.name, generator=generator)
            out = method.merge(inp)
            if tuple(out.shape) != task.out.shape:
                raise MergeFailure(f"merge_method '{method.spec.name}' produced shape {tuple(out.shape)} for "
                                   f"{task.out.name}, expected {task.out.shape}")
            param = self.params.get(task.out.name)
            if param is not None:
                # as run_merge writes it (out dtype), then as transformers loads it (model dtype)
                param.copy_(out.to(task.out.dtype))
        self.merges += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - t0

    @torch.no_grad()
    def load_constituent(self, ref: ModelReference) -> None:
        """Put one input model's own weights into the model (LM-Cocktail scores each constituent)."""
        for task in self.plan.tasks:
            param = self.params.get(task.out.name)
            if param is None:
                continue
            for key in task.inputs:
                if key[0] == ref:
                    param.copy_(self.tensors[key].to(task.out.dtype))
                    break
            else:
                raise MergeFailure(f"{ref} contributes no tensor to {task.out.name}")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.params.items()}
