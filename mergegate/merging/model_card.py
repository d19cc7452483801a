"""The README.md model card ``mergegate merge`` writes, in the structure mergekit-yaml writes.

Same front matter (``base_model`` = the Hub models the recipe reads, ``tags: [mergekit, merge]``,
``library_name: transformers``, keys sorted as ``yaml.dump`` writes them), same headings, method
link, base-model sentence, model bullets and recipe block as arcee-ai/mergekit ``mergekit/card.py``
``generate_card`` / ``CARD_TEMPLATE`` (0.1.5), written here from that description. Two
differences, both deliberate: Hub ids are told from local paths without a network call
(:func:`mergegate.models.looks_like_hub_id`, mergekit's ``is_hf`` rule minus its ``repo_exists``
lookup), and models are listed in the recipe's order (mergekit's order comes from a set).

``mergegate run`` writes its own gate card instead (:mod:`mergegate.gate.card`).
"""

from __future__ import annotations

import yaml

from mergegate.merging.config import MergeConfig, ModelReference
from mergegate.models import looks_like_hub_id

CARD_FILENAME = "README.md"


def _hub_paths(models: list[ModelReference]) -> list[str]:
    paths = []
    for ref in models:
        if looks_like_hub_id(ref.path):
            paths.append(ref.path)
        if ref.lora is not None and looks_like_hub_id(ref.lora.path):
            paths.append(ref.lora.path)
    return paths


def _link(path: str) -> str:
    return f"[{path}](https://huggingface.co/{path})" if looks_like_hub_id(path) else path


def _model_md(ref: ModelReference) -> str:
    text = _link(ref.path)
    if ref.lora is not None:
        text += " + " + _link(ref.lora.path)
    return text


def _method_md(method: str) -> str:
    from mergegate.merging.methods import REGISTRY

    impl = REGISTRY.get(method)
    if impl is None:
        return method
    name = impl.spec.pretty_name or method
    url = impl.spec.reference_url
    return f"[{name}]({url})" if url and url.strip() else name


def render_merge_card(config: MergeConfig, config_text: str, name: str | None) -> str:
    """The card text for ``config`` (``config_text``: the recipe as written, embedded verbatim)."""
    models = config.referenced_models()
    metadata = yaml.safe_dump({"base_model": _hub_paths(models), "tags": ["mergekit", "merge"],
                               "library_name": "transformers"}, sort_keys=True, default_flow_style=False)
    # mergekit: slerp's base_model is one of the two endpoints, not a base ("curse my past self")
    base = None if config.merge_method == "slerp" else config.base_model
    base_text = f" using {_model_md(base)} as a base" if base is not None else ""
    bullets = "\n".join("* " + _model_md(ref) for ref in models if ref != base)
    return (f"---\n{metadata}\n---\n# {name or 'Untitled Model (1)'}\n\n"
            "This is a merge of pre-trained language models created using "
            "[mergekit](https://github.com/cg123/mergekit).\n\n"
            "## Merge Details\n### Merge Method\n\n"
            f"This model was merged using the {_method_md(config.merge_method)} merge method{base_text}.\n\n"
            "### Models Merged\n\nThe following models were included in the merge:\n"
            f"{bullets}\n\n"
            "### Configuration\n\nThe following YAML configuration was used to produce this model:\n\n"
            f"```yaml\n{config_text}\n```\n")


__all__ = ["CARD_FILENAME", "render_merge_card"]
