"""Where mergekit 0.1.5 is lenient, mergegate is lenient the same way — and says so.

mergekit's recipe models are pydantic models with the default ``extra="ignore"``
(arcee-ai/mergekit mergekit/config.py, mergekit/common.py, mergekit/tokenizer/config.py): a key
it does not know, at any level, is dropped silently. A mis-indented ``int8_mask``, a typo'd
``tokenzer_source`` or a stray ``align_weights`` therefore do nothing in mergekit. mergegate reads
the same recipes the same way, but names every ignored key (with a did-you-mean) so a typo is
not silently lost.

This module is the pre-pass that runs on the decoded YAML before the typed model
(:class:`~mergegate.merging.config.MergeConfig`) validates it:

* unknown keys are dropped, each with a :class:`CompatNote`;
* the single-module form ``modules: {default: {models|slices, parameters}}`` (what mergekit writes
  into generated model cards) is read as the plain recipe; its ``parameters`` become a scope of
  their own between the slices' and the top-level ones, as in mergekit's ``ConfigReader``;
* the legacy ``model:<id>`` tokenizer source of mergekit < 0.1 is read as ``<id>``.

Values are not checked here: impossible values stay errors of the typed model.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from typing import Any

from mergegate.errors import ConfigError

TOP_LEVEL = ("merge_method", "models", "slices", "modules", "base_model", "dtype", "out_dtype",
             "tokenizer_source", "tokenizer", "chat_template", "parameters",
             "name")  # name: a mergekit-multi document's stage name
MODEL_DEF = ("model", "parameters")
SLICE_DEF = ("sources", "base_model", "residual_weight", "parameters")
SOURCE_DEF = ("model", "layer_range", "parameters")
MODULE_DEF = ("models", "slices", "parameters", "name")  # mergekit's planner itself passes name=
MODEL_REF = ("model", "lora", "override_architecture")
MODEL_PATH = ("path", "revision")
TOKENIZER = ("source", "tokens", "pad_to_multiple_of")
TOKEN_EMBEDDING = ("source", "force")
TOKEN_SOURCE = ("kind", "model", "token_id", "token")
CONDITIONAL = ("value", "filter")

LEGACY_MODEL_PREFIX = "model:"
SINGLE_MODULE = "default"  # mergekit's name for the one module of a single-stack architecture


@dataclass(frozen=True)
class CompatNote:
    """One thing mergegate read leniently, as mergekit does."""

    field: str  # dotted location, e.g. "models[1].parmeters"
    message: str

    def __str__(self) -> str:
        return f"'{self.field}': {self.message}"


def _parameter_names() -> set[str]:
    from mergegate.merging.methods import REGISTRY

    return {p.name for m in REGISTRY.values() for p in m.spec.params}


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


class _Pass:
    def __init__(self) -> None:
        self.notes: list[CompatNote] = []

    def keep_known(self, data: dict[str, Any], known: tuple[str, ...], where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key in known:
                out[key] = value
                continue
            self.notes.append(CompatNote(_join(where, str(key)), self._unknown_message(str(key), known, where)))
        return out

    @staticmethod
    def _unknown_message(key: str, known: tuple[str, ...], where: str) -> str:
        text = "unknown field, ignored (mergekit 0.1.5 ignores it too)"
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        if close:
            return f"{text}; did you mean '{close[0]}'?"
        if key in _parameter_names() and "parameters" in known:
            return (f"{text}; '{key}' is a merge parameter: to use it, indent it under "
                    f"'{_join(where, 'parameters')}'")
        return text

    # --- levels -------------------------------------------------------------------------------

    def top(self, data: dict[str, Any]) -> dict[str, Any]:
        data = self.keep_known(data, TOP_LEVEL, "")
        data = self.modules(data)
        if "base_model" in data:
            data["base_model"] = self.ref(data["base_model"], "base_model")
        if isinstance(data.get("models"), list):
            data["models"] = [self.model_def(m, f"models[{i}]") for i, m in enumerate(data["models"])]
        if isinstance(data.get("slices"), list):
            data["slices"] = [self.slice_def(s, f"slices[{i}]") for i, s in enumerate(data["slices"])]
        for key in ("parameters", "module_parameters"):
            if key in data:
                data[key] = self.params(data[key], key if key == "parameters" else "modules.default.parameters")
        if "tokenizer_source" in data:
            data["tokenizer_source"] = self.tokenizer_source(data["tokenizer_source"], "tokenizer_source")
        if isinstance(data.get("tokenizer"), dict):
            data["tokenizer"] = self.tokenizer(data["tokenizer"])
        return data

    def modules(self, data: dict[str, Any]) -> dict[str, Any]:
        """``modules: {default: …}`` → the plain recipe; anything else named precisely and refused."""
        modules = data.pop("modules", None)
        if modules is None:
            return data
        if not isinstance(modules, dict):
            raise ConfigError("'modules' must be a mapping of module name to {models|slices, parameters}",
                              field="modules")
        if not modules:  # mergekit treats an empty mapping as absent
            return data
        if data.get("models") or data.get("slices"):
            raise ConfigError("exactly one of 'models', 'slices' or 'modules' may be given", field="modules",
                              hint="mergekit refuses this too; keep the modules: block or the plain one")
        names = [str(k) for k in modules]
        if len(names) > 1:
            raise ConfigError(
                f"multi-module recipes are not supported: modules {', '.join(repr(n) for n in names)} "
                "(one merge per module of a multi-stack model, e.g. a vision tower and a text decoder)",
                field="modules", hint="mergegate merges single-stack models; use the single-module form "
                "modules: {default: ...} or plain models:/slices:")
        if names[0] != SINGLE_MODULE:
            raise ConfigError(
                f"module '{names[0]}' is not supported: mergegate reads only the single-module form "
                f"'modules: {{{SINGLE_MODULE}: ...}}' (mergekit's name for the one module of a "
                "single-stack model)", field=f"modules.{names[0]}",
                hint=f"rename the module to '{SINGLE_MODULE}' or use plain models:/slices:")
        module = modules[names[0]]
        where = f"modules.{SINGLE_MODULE}"
        if not isinstance(module, dict):
            raise ConfigError("a module must be a mapping with models: or slices:", field=where)
        module = self.keep_known(module, MODULE_DEF, where)
        given = [k for k in ("models", "slices") if module.get(k)]
        if len(given) != 1:
            raise ConfigError("a module needs exactly one of 'models' or 'slices'", field=where,
                              hint="mergekit refuses this too")
        data[given[0]] = module[given[0]]
        if module.get("parameters"):
            data["module_parameters"] = module["parameters"]
        self.notes.append(CompatNote(where, "single-module form read as the plain recipe (models:/slices: "
                                            "with the module's parameters between slice and top level)"))
        return data

    def model_def(self, value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            return value
        value = self.keep_known(value, MODEL_DEF, where)
        if "model" in value:
            value["model"] = self.ref(value["model"], _join(where, "model"))
        if "parameters" in value:
            value["parameters"] = self.params(value["parameters"], _join(where, "parameters"))
        return value

    def slice_def(self, value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            return value
        value = self.keep_known(value, SLICE_DEF, where)
        if "base_model" in value:
            value["base_model"] = self.ref(value["base_model"], _join(where, "base_model"))
        if isinstance(value.get("sources"), list):
            value["sources"] = [self.source_def(s, f"{where}.sources[{i}]") for i, s in enumerate(value["sources"])]
        if "parameters" in value:
            value["parameters"] = self.params(value["parameters"], _join(where, "parameters"))
        return value

    def source_def(self, value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            return value
        value = self.keep_known(value, SOURCE_DEF, where)
        if "model" in value:
            value["model"] = self.ref(value["model"], _join(where, "model"))
        if "parameters" in value:
            value["parameters"] = self.params(value["parameters"], _join(where, "parameters"))
        return value

    def ref(self, value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            return value
        value = self.keep_known(value, MODEL_REF, where)
        for key in ("model", "lora"):
            if isinstance(value.get(key), dict):
                value[key] = self.keep_known(value[key], MODEL_PATH, _join(where, key))
        return value

    def params(self, value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            return value
        out = {}
        for name, setting in value.items():
            at = _join(where, str(name))
            if isinstance(setting, dict):
                setting = self.keep_known(setting, CONDITIONAL, at)
            elif isinstance(setting, list):
                setting = [self.keep_known(s, CONDITIONAL, f"{at}[{i}]") if isinstance(s, dict) else s
                           for i, s in enumerate(setting)]
            out[name] = setting
        return out

    def tokenizer_source(self, value: Any, where: str) -> Any:
        if isinstance(value, str) and value.startswith(LEGACY_MODEL_PREFIX):
            stripped = value[len(LEGACY_MODEL_PREFIX):].strip()
            self.notes.append(CompatNote(where, f"legacy 'model:' prefix (mergekit < 0.1) read as the model "
                                                f"'{stripped}'"))
            return stripped
        return self.ref(value, where)

    def tokenizer(self, value: dict[str, Any]) -> dict[str, Any]:
        value = self.keep_known(value, TOKENIZER, "tokenizer")
        if "source" in value:
            value["source"] = self.tokenizer_source(value["source"], "tokenizer.source")
        tokens = value.get("tokens")
        if isinstance(tokens, dict):
            out = {}
            for token, cfg in tokens.items():
                where = f"tokenizer.tokens.{token}"
                if isinstance(cfg, dict):
                    cfg = self.keep_known(cfg, TOKEN_EMBEDDING, where)
                    source = cfg.get("source")
                    if isinstance(source, dict) and "kind" in source:
                        source = self.keep_known(source, TOKEN_SOURCE, _join(where, "source"))
                        if "model" in source:
                            source["model"] = self.ref(source["model"], _join(where, "source.model"))
                        cfg["source"] = source
                    elif source is not None:
                        cfg["source"] = self.ref(source, _join(where, "source"))
                out[token] = cfg
            value["tokens"] = out
        return value


def normalize_recipe(data: dict[str, Any]) -> tuple[dict[str, Any], list[CompatNote]]:
    """A copy of ``data`` as mergekit 0.1.5 reads it, and what was read leniently.

    Raises:
        ConfigError: a construct mergekit accepts but mergegate cannot run (multi-module recipes),
            or one mergekit refuses too (``modules`` together with ``models``).
    """
    state = _Pass()
    out = state.top(copy.deepcopy(data))
    return out, state.notes


__all__ = ["CompatNote", "normalize_recipe", "LEGACY_MODEL_PREFIX", "SINGLE_MODULE"]
