"""The contract every merge method implements.

A method merges the tensors that contribute to ONE output tensor. The executor has already
loaded them, checked their shapes, cast them to the compute dtype (the config's ``dtype``, else
the promoted dtype of the inputs) and moved them to the device; it casts the result to
``out_dtype`` afterwards. Methods therefore never do I/O and never see the config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, runtime_checkable

import torch


class BasePolicy(str, Enum):
    """How a method treats ``base_model`` (mergekit's InputContract.base)."""

    REQUIRED = "required"  # the base is an input and plays a special role (task arithmetic)
    OPTIONAL = "optional"  # used when given (nuslerp)
    IGNORED = "ignored"  # no special role: a base, if listed, is an ordinary input (linear)


class Scope(str, Enum):
    """Where a parameter lives (mergekit's ParameterScope)."""

    SHARED = "shared"  # one value per output tensor (normalize, lambda, t)
    INPUT = "input"  # one value per input, base included (linear's weight)
    NON_BASE = "non_base"  # one value per non-base input (weight/density of task arithmetic)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class ParamSpec:
    name: str
    kind: type  # float, bool, int or str
    scope: Scope
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class MethodSpec:
    name: str  # mergekit's registry name
    pretty_name: str
    reference_url: str | None
    base: BasePolicy
    params: tuple[ParamSpec, ...] = ()
    min_inputs: int = 1  # counting the base when it is an input
    max_inputs: int | None = None
    min_non_base: int | None = None  # mergekit's InputContract.min_non_base / max_non_base
    max_non_base: int | None = None
    stochastic: bool = False  # uses the random generator (DARE, DELLA, arcee_fusion's sampling)
    # mergekit returns some results in a wider dtype than the inputs' (arcee_fusion multiplies by a
    # float32 mask): the result dtype is promote_types(compute dtype, promotes_to), and that is what
    # mergekit writes when the recipe has no out_dtype
    promotes_to: torch.dtype | None = None

    def result_dtype(self, compute: torch.dtype) -> torch.dtype:
        """The dtype of this method's result for inputs of the ``compute`` dtype."""
        if self.promotes_to is None or not compute.is_floating_point:
            return compute
        return torch.promote_types(compute, self.promotes_to)

    @property
    def shared_params(self) -> tuple[ParamSpec, ...]:
        return tuple(p for p in self.params if p.scope is Scope.SHARED)

    @property
    def input_params(self) -> tuple[ParamSpec, ...]:
        return tuple(p for p in self.params if p.scope is not Scope.SHARED)


@dataclass
class MergeInput:
    """Everything a method needs to produce one output tensor."""

    tensors: list[torch.Tensor]  # same shape, same dtype, same device
    base_index: int | None  # index of the base in ``tensors`` (None when there is none)
    per_input: list[dict[str, Any]]  # aligned with tensors; the base's dict holds only INPUT-scope params
    shared: dict[str, Any]
    name: str = ""  # output tensor name, for messages
    generator: torch.Generator | None = None  # seeded per tensor by the executor for stochastic methods
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> torch.Tensor | None:
        return None if self.base_index is None else self.tensors[self.base_index]

    def non_base(self) -> list[tuple[torch.Tensor, dict[str, Any]]]:
        return [(t, p) for i, (t, p) in enumerate(zip(self.tensors, self.per_input)) if i != self.base_index]


@runtime_checkable
class MergeMethod(Protocol):
    spec: MethodSpec

    def merge(self, inp: MergeInput) -> torch.Tensor:
        """Return the merged tensor (any floating dtype; the executor casts it)."""
        ...
