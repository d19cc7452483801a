"""Resolving a method parameter for one tensor: precedence, filters and gradients (mergekit 0.1.5).

Precedence, first hit wins: the slice source's own parameters (where ``models[*].parameters`` end
up) → the output slice's → the module's (``modules: {default: {parameters}}``) → the top-level
``parameters``. Shared parameters skip the first level.
A filtered list picks the first entry whose ``filter`` is a substring of the tensor name (``None``
or ``"*"`` matches everything); when no entry matches, the next level is consulted. A list of
numbers is a gradient: piecewise-linear between evenly spaced anchors at ``t`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mergegate.errors import ConfigError
from mergegate.merging.config import ConditionalParameter, ParameterSetting
from mergegate.merging.methods.base import ParamSpec

Settings = Mapping[str, ParameterSetting] | None


def _cast(spec: ParamSpec, value: Any) -> Any:
    kind = spec.kind
    try:
        if kind is bool:
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("true", "yes", "1"):
                    return True
                if lowered in ("false", "no", "0"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind is int:  # like pydantic's lax int (mergekit validates with it): 10, 10.0, "10"
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        return value
    except (TypeError, ValueError):
        article = "an" if kind is int else "a"
        raise ConfigError(f"expected {article} {kind.__name__}, got {value!r}", field=spec.name) from None


def evaluate_setting(tensor_name: str, setting: ParameterSetting, t: float, spec: ParamSpec) -> Any:
    """Value of one setting for ``tensor_name`` at gradient position ``t``; None when no filter matches."""
    if isinstance(setting, ConditionalParameter):
        setting = [setting]
    if isinstance(setting, (bool, int, float, str)):
        return _cast(spec, setting)
    if isinstance(setting, list):
        if not setting:
            return None
        if all(isinstance(e, (bool, int, float, str)) for e in setting):
            values = [_cast(spec, e) for e in setting]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            if not numeric:
                return values[int(t * (len(values) - 1))]
            scaled = t * (len(values) - 1)
            i0 = int(scaled)
            i1 = min(len(values) - 1, i0 + 1)
            frac = scaled - i0
            return _cast(spec, (1 - frac) * values[i0] + frac * values[i1])
        for cond in setting:
            if not isinstance(cond, ConditionalParameter):
                raise ConfigError("a list must hold either numbers or {filter, value} entries, not both",
                                  field=spec.name)
            if cond.filter is None or cond.filter == "*" or (tensor_name and cond.filter in tensor_name):
                return evaluate_setting(tensor_name, cond.value, t, spec)
        return None
    raise ConfigError(f"unexpected value {setting!r}", field=spec.name)


def resolve_parameter(spec: ParamSpec, scopes: Iterable[Settings], *, tensor_name: str, t: float,
                      model: str | None = None) -> Any:
    for scope in scopes:
        if scope is not None and spec.name in scope:
            value = evaluate_setting(tensor_name, scope[spec.name], t, spec)
            if value is not None:
                return value
    if spec.required:
        where = f"{model}: tensor {tensor_name}" if model else f"tensor {tensor_name}"
        raise ConfigError(f"missing required parameter '{spec.name}' for {where}", field=spec.name,
                          hint=f"set '{spec.name}' in the model's parameters or in the top-level parameters")
    return spec.default
