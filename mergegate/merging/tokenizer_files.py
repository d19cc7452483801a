"""Tokenizer, generation config and chat template of the merged model (mergekit/merge.py).

* A recipe that declares a tokenizer (``tokenizer_source`` / ``tokenizer:``) gets the tokenizer the
  plan built (:mod:`mergegate.merging.tokenizer_build`), saved with transformers as mergekit does.
* Otherwise the tokenizer files of the config source (the base model, else the first model) are
  copied — unless ``chat_template`` is set, the source is a ``model+lora`` reference or it lacks
  ``tokenizer_config.json`` + ``tokenizer.json``/``tokenizer.model``: then, like mergekit, the
  tokenizer is loaded and saved again (with the template), so the files match mergekit's; a
  tokenizer transformers cannot load is copied instead (and the template written next to it).

``chat_template`` is ``auto`` (the most common template among the inputs, stripped, as mergekit
picks it), a named template (:mod:`mergegate.merging.chat_templates`) or a literal Jinja
template; it was validated with the recipe.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from mergegate.atomic import write_redacted_json, write_redacted_text
from mergegate.errors import ModelFilesError
from mergegate.merging.chat_templates import NAMED, TemplateKind, classify
from mergegate.merging.config import MergeConfig
from mergegate.models import read_chat_template

if TYPE_CHECKING:
    from mergegate.merging.plan import MergePlan

log = logging.getLogger(__name__)

# what mergekit copies (mergekit/merge.py _copy_tokenizer); generation_config.json is copied apart
TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
                   "added_tokens.json", "merges.txt", "chat_template.jinja", "chat_template.json",
                   "video_preprocessor_config.json")
LOADABLE = ("tokenizer.json", "tokenizer.model", "vocab.json")  # files transformers builds a tokenizer from
CHATML = NAMED["chatml"]


def resolve_chat_template(config: MergeConfig, plan: MergePlan) -> str | None:
    """The template to write, or None to keep the tokenizer's own."""
    choice = config.chat_template
    if choice is None:
        return None
    kind = classify(choice)  # validated with the recipe; raises only for hand-built configs
    if kind is TemplateKind.AUTO:
        templates = [t.strip() for im in plan.inputs.values() if (t := read_chat_template(im.model.path))]
        return Counter(templates).most_common(1)[0][0] if templates else None
    if kind is TemplateKind.NAMED:
        return NAMED[choice]
    return choice


def _save_tokenizer(tokenizer: object, template: str | None, out: Path) -> None:
    if template is not None:
        tokenizer.chat_template = template  # type: ignore[attr-defined]
    tokenizer.save_pretrained(str(out), safe_serialization=True)  # type: ignore[attr-defined]


def _reserialize(source: Path, template: str | None, out: Path) -> bool:
    """Load the source's tokenizer and save it with the template (mergekit's ``_copy_tokenizer``
    with a chat_template). False when transformers cannot load it."""
    if not any((source / name).is_file() for name in LOADABLE):
        return False
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for unreadable tokenizers
        log.warning("cannot load the tokenizer of %s (%s: %s); copying its files instead", source,
                    type(exc).__name__, exc)
        return False
    _save_tokenizer(tokenizer, template, out)
    return True


def _must_reserialize(config: MergeConfig, plan: MergePlan, source: Path) -> bool:
    """mergekit copies the tokenizer files only when there is no chat template, the source has
    tokenizer_config.json and tokenizer.json or tokenizer.model, and the source is not a LoRA
    reference (its merged copy has no tokenizer files); otherwise it loads and saves the tokenizer."""
    copyable = (source / "tokenizer_config.json").is_file() and any(
        (source / name).is_file() for name in ("tokenizer.json", "tokenizer.model"))
    return config.chat_template is not None or plan.config_source.lora is not None or not copyable


def _write_template(template: str, source: Path, out: Path) -> None:
    """The template beside copied tokenizer files: ``chat_template.jinja`` and the copied
    ``tokenizer_config.json``'s ``chat_template`` (redacted like every file mergegate writes)."""
    write_redacted_text(out / "chat_template.jinja", template)
    cfg_path = out / "tokenizer_config.json"
    if not cfg_path.is_file():
        return
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # not JSON / not UTF-8 / nested too deeply
        raise ModelFilesError(f"cannot read tokenizer_config.json ({type(exc).__name__})",
                              source=str(source / "tokenizer_config.json"),
                              hint="re-download the tokenizer source model") from None
    if not isinstance(data, dict):
        raise ModelFilesError("tokenizer_config.json is not a JSON object",
                              source=str(source / "tokenizer_config.json"))
    data["chat_template"] = template
    write_redacted_json(cfg_path, data)


def copy_model_files(config: MergeConfig, plan: MergePlan, out: Path) -> None:
    """Write the tokenizer and copy the generation config into the (temporary) output directory."""
    template = resolve_chat_template(config, plan)
    source = plan.inputs[plan.config_source].model.path
    if plan.tokenizer is not None:
        _save_tokenizer(plan.tokenizer.tokenizer, template, out)
    elif not _must_reserialize(config, plan, source) or not _reserialize(source, template, out):
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, out / name)
        if template is not None:
            _write_template(template, source, out)
    gen = source / "generation_config.json"
    if gen.is_file():
        shutil.copyfile(gen, out / "generation_config.json")
