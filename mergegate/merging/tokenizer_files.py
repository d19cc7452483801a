"""Tokenizer, generation config and chat template of the merged model.

mergegate copies the tokenizer of one input (it does not build union vocabularies: inputs must
share a vocabulary, which the planner enforces through the embedding shapes). ``tokenizer_source``
/ ``tokenizer.source`` pick the input (``base``, a model of the recipe, or ``union`` when every input
ships the same tokenizer files); ``chat_template`` may be ``auto`` (the most common template among
the inputs), ``chatml`` or a literal Jinja template.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from mergegate.errors import ConfigError, ModelFilesError
from mergegate.safe_write import write_json, write_text
from mergegate.merging.config import MergeConfig, ModelReference

if TYPE_CHECKING:
    from mergegate.merging.plan import MergePlan

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")
IDENTITY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    for name in IDENTITY_FILES:
        f = path / name
        if f.is_file():
            h.update(name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def tokenizer_source(config: MergeConfig, plan: MergePlan) -> ModelReference:
    choice = config.tokenizer.source if config.tokenizer else config.tokenizer_source
    field = "tokenizer.source" if config.tokenizer else "tokenizer_source"
    if config.tokenizer and (config.tokenizer.tokens or config.tokenizer.pad_to_multiple_of):
        raise ConfigError("tokenizer.tokens and tokenizer.pad_to_multiple_of are not supported yet",
                          field="tokenizer", hint="remove them; mergegate copies one input's tokenizer")
    if choice is None:
        return plan.config_source
    if choice == "base":
        if config.base_model is None:
            raise ConfigError("'base' needs a base_model", field=field)
        return config.base_model
    if choice == "union":
        prints = {ref: _fingerprint(im.model.path) for ref, im in plan.inputs.items()}
        if len(set(prints.values())) > 1:
            raise ConfigError("a union of different tokenizers is not supported yet (the inputs' tokenizer "
                              "files differ)", field=field,
                              hint="pick one tokenizer with tokenizer_source: base, or merge models that "
                              "share a vocabulary")
        return plan.config_source
    ref = ModelReference.parse(choice)
    if ref not in plan.inputs:
        raise ConfigError(f"'{choice}' is not one of the recipe's models", field=field)
    return ref


def read_chat_template(path: Path) -> str | None:
    """The chat template shipped with a model, read from its files (no tokenizer load)."""
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("tokenizer_config.json", "chat_template.json"):
        f = path / name
        if f.is_file():
            try:
                value = json.loads(f.read_text(encoding="utf-8")).get("chat_template")
            except (ValueError, AttributeError, RecursionError):  # not JSON / not UTF-8 / not an object
                continue
            if isinstance(value, str):
                return value
            if isinstance(value, list):  # named templates
                for item in value:
                    if isinstance(item, dict) and item.get("name") == "default":
                        return str(item.get("template"))
    return None


def resolve_chat_template(config: MergeConfig, plan: MergePlan) -> str | None:
    """The template to write, or None to keep the tokenizer source's own."""
    choice = config.chat_template
    if choice is None:
        return None
    if choice == "auto":
        templates = [t for im in plan.inputs.values() if (t := read_chat_template(im.model.path))]
        return Counter(templates).most_common(1)[0][0] if templates else None
    if choice == "chatml":
        return CHATML
    if "{" in choice and len(choice) >= 20:
        return choice
    raise ConfigError(f"chat template '{choice}' is not supported", field="chat_template",
                      hint="use auto, chatml or a literal Jinja template")


def copy_model_files(config: MergeConfig, plan: MergePlan, out: Path) -> None:
    """Copy tokenizer files and generation config into the (temporary) output directory."""
    tok_src = plan.inputs[tokenizer_source(config, plan)].model.path
    for name in TOKENIZER_FILES:
        if (tok_src / name).is_file():
            shutil.copyfile(tok_src / name, out / name)
    gen = plan.inputs[plan.config_source].model.path / "generation_config.json"
    if gen.is_file():
        shutil.copyfile(gen, out / "generation_config.json")
    template = resolve_chat_template(config, plan)
    if template is not None:
        write_text(out / "chat_template.jinja", template)
        cfg_path = out / "tokenizer_config.json"
        if cfg_path.is_file():
            try:
                data = json.loads(cfg_path.read_text(encoding="utf-8"))
            except (ValueError, RecursionError) as exc:
                raise ModelFilesError(f"cannot read tokenizer_config.json ({type(exc).__name__})",
                                      source=str(tok_src / "tokenizer_config.json"),
                                      hint="re-download the tokenizer source model") from None
            if not isinstance(data, dict):
                raise ModelFilesError("tokenizer_config.json is not a JSON object",
                                      source=str(tok_src / "tokenizer_config.json"))
            data["chat_template"] = template
            write_json(cfg_path, data)
