"""The output tokenizer of a recipe with ``tokenizer_source`` / ``tokenizer:``, and how every
input's vocabulary maps onto it.

Follows mergekit 0.1.5 (arcee-ai/mergekit mergekit/tokenizer/build.py ``build_tokenizer``):

* the *base* tokenizer is the base model's (else the first model's), with the tokens at or beyond
  its config's ``vocab_size`` stripped (BPE tokenizers only; mergekit refuses others there);
* ``base`` keeps it; a model reference (``tokenizer_source: org/model``, also the legacy
  ``model:org/model``) loads that model's tokenizer; ``union`` re-loads the base tokenizer and adds,
  in order, every non-added token of every input that the base lacks, then every input's added
  tokens with their settings (the first input's settings win);
* the tokens named in ``tokenizer.tokens`` are added when missing;
* for every input, a permutation maps each output token id to the input's id of the same token
  (``-1`` when the input lacks it or the id is at or beyond the input's ``vocab_size``).

transformers does the tokenizer work — loading, adding tokens, saving — with the same calls
mergekit makes, so the written files are byte-identical. It is imported only for recipes that
declare a tokenizer. Tokenizers are loaded from the already resolved (pinned, local) model
directories with ``trust_remote_code=False``: nothing is downloaded here.

Where mergekit is not deterministic mergegate is: mergekit takes "the first model" and the order
of the union's inputs from a set (``MergeConfiguration.referenced_models``); mergegate uses the
recipe's order (base first).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mergegate.errors import ConfigError, ModelFilesError
from mergegate.merging.config import MergeConfig, ModelReference, TokenEmbeddingConfig

log = logging.getLogger(__name__)


@dataclass
class TokenizerPlan:
    """The output vocabulary and each input's map onto it."""

    tokenizer: Any  # a transformers PreTrainedTokenizerBase
    source: str  # "union", "base" or the model whose tokenizer it is
    vocab: dict[str, int]  # output token -> id
    rows: int  # output embedding rows: len(vocab), padded to tokenizer.pad_to_multiple_of
    permutations: dict[ModelReference, torch.Tensor]  # int64 [len(vocab)]: output id -> input id or -1
    original_vocabs: dict[ModelReference, dict[str, int]]  # inputs whose tokenizer loaded
    token_configs: dict[str, TokenEmbeddingConfig] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)  # output tokens the base tokenizer lacks

    def summary(self) -> str:
        shown = ", ".join(repr(t) for t in self.added[:6]) + (" ..." if len(self.added) > 6 else "")
        pad = f", {self.rows} embedding rows" if self.rows != len(self.vocab) else ""
        extra = f" ({len(self.added)} beyond the base: {shown})" if self.added else ""
        return f"tokenizer: {self.source}, {len(self.vocab)} tokens{extra}{pad}"


def config_vocab_size(config: dict[str, Any]) -> int | None:
    value = config.get("vocab_size")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = config.get("text_config")
    return config_vocab_size(text) if isinstance(text, dict) else None


def _auto_tokenizer(path: Path, label: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, use_fast=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for unreadable tokenizers
        raise ModelFilesError(f"cannot load the tokenizer ({type(exc).__name__}: {exc})", source=label,
                              hint="the model needs tokenizer files (tokenizer.json or tokenizer.model with "
                              "tokenizer_config.json) for tokenizer_source") from None


def stripped_tokenizer(path: Path, vocab_size: int | None, label: str) -> Any:
    """The model's tokenizer without the tokens at or beyond ``vocab_size`` (mergekit's
    ``get_stripped_tokenizer``: BPE fast tokenizers only)."""
    from tokenizers import Tokenizer

    tok = _auto_tokenizer(path, label)
    vocab = tok.get_vocab()
    limit = vocab_size if vocab_size is not None else len(vocab)
    unused = {t for t, i in vocab.items() if i >= limit}
    if not unused:
        return tok
    if not tok.is_fast:
        raise ModelFilesError(f"the tokenizer has {len(unused)} token(s) beyond vocab_size {limit} and is not a "
                              "fast tokenizer, so they cannot be stripped", source=label, field="vocab_size")
    data = json.loads(tok.backend_tokenizer.to_str())
    if data["model"]["type"] != "BPE":
        raise ModelFilesError(f"the tokenizer has {len(unused)} token(s) beyond vocab_size {limit}; stripping "
                              f"them is only possible for BPE tokenizers, not {data['model']['type']}",
                              source=label, field="vocab_size")
    data["added_tokens"] = [e for e in data["added_tokens"] if e["id"] < limit]
    for t in unused:
        data["model"]["vocab"].pop(t, None)

    def keep(merge: Any) -> bool:
        if isinstance(merge, str) and merge.count(" ") == 1:
            parts = merge.split(" ")
        elif isinstance(merge, list):
            parts = merge
        else:
            raise ModelFilesError(f"unexpected BPE merge {merge!r} in tokenizer.json", source=label)
        return not any(p in unused for p in parts)

    data["model"]["merges"] = [m for m in data["model"]["merges"] if keep(m)]
    tok._tokenizer = Tokenizer.from_str(json.dumps(data))  # transformers keeps the backend here
    return tok


def union_tokenizer(base_tok: Any, tokenizers: dict[ModelReference, Any],
                    vocab_sizes: dict[ModelReference, int | None]) -> Any:
    """The base tokenizer plus every other input's tokens (mergekit's ``build_union_tokenizer``)."""
    from transformers import AutoTokenizer

    plain: dict[str, None] = {}  # insertion-ordered
    added: dict[str, Any] = {}
    warned: set[str] = set()
    for ref, tok in tokenizers.items():
        limit = vocab_sizes.get(ref) or tok.vocab_size
        for token, idx in tok.get_vocab().items():
            if idx >= limit:
                log.warning("token %r of %s is at or beyond its vocab_size %d: left out", token, ref, limit)
                continue
            plain.setdefault(token)
        for idx, info in tok.added_tokens_decoder.items():
            if idx >= limit:
                continue
            if info.content in added:
                if added[info.content] != info and info.content not in warned:
                    log.warning("token %r is added with different settings by several inputs; the first wins",
                                info.content)
                    warned.add(info.content)
                continue
            added[info.content] = info
    with tempfile.TemporaryDirectory() as tmp:  # a fresh copy: the base tokenizer is not modified
        base_tok.save_pretrained(tmp, legacy_format=False, safe_serialization=True)
        out = AutoTokenizer.from_pretrained(tmp, use_fast=True, trust_remote_code=False)
    base_vocab = base_tok.get_vocab()
    for token in plain:
        if token not in added and token not in base_vocab:
            out.add_tokens(token)
    for info in added.values():
        out.add_tokens(info)
    return out


def build_tokenizer_plan(config: MergeConfig, inputs: dict[ModelReference, Any],
                         source_dirs: dict[ModelReference, Path] | None = None,
                         base: ModelReference | None = None) -> TokenizerPlan:
    """The output tokenizer and the permutations (``inputs``: the plan's InputModels, recipe order).

    ``source_dirs`` holds the tokenizer directory of a ``tokenizer_source`` model that is not
    one of the recipe's inputs; ``base`` the model whose tokenizer is the base (default: the
    recipe's base_model, else the first input).
    """
    choice = config.tokenizer_choice
    assert choice is not None
    field_name = "tokenizer.source" if config.tokenizer is not None else "tokenizer_source"
    refs = list(inputs)
    base = base or config.base_model or refs[0]
    vocab_sizes = {ref: config_vocab_size(im.config) for ref, im in inputs.items()}

    base_tok = stripped_tokenizer(inputs[base].model.path, vocab_sizes[base], str(base))
    base_vocab = base_tok.get_vocab()  # before tokens are added to it (source: base adds in place)
    tokenizers: dict[ModelReference, Any] = {base: base_tok}
    for ref in refs:
        if ref == base:
            continue
        try:
            tokenizers[ref] = _auto_tokenizer(inputs[ref].model.path, str(ref))
        except ModelFilesError as exc:
            log.warning("%s; its vocabulary is taken to be the base's (%s), as mergekit does", exc.render(), base)

    if choice == "base":
        out, source = base_tok, "base"
    elif choice == "union":
        out, source = union_tokenizer(base_tok, tokenizers, vocab_sizes), "union"
    else:
        path = inputs[choice].model.path if choice in inputs else (source_dirs or {}).get(choice)
        if path is None:
            raise ConfigError(f"the tokenizer source '{choice}' was not resolved", field=field_name)
        out, source = _auto_tokenizer(path, str(choice)), str(choice)

    token_configs = dict((config.tokenizer.tokens or {}) if config.tokenizer else {})
    existing = set(out.get_vocab())
    for token in token_configs:
        if token not in existing:
            out.add_tokens(token)
            existing.add(token)
    vocab = out.get_vocab()

    permutations: dict[ModelReference, torch.Tensor] = {}
    for ref in refs:
        model_vocab = (tokenizers.get(ref) or tokenizers[base]).get_vocab()
        limit = vocab_sizes[ref] if vocab_sizes[ref] is not None else len(model_vocab)
        perm = torch.full((len(vocab),), -1, dtype=torch.int64)
        beyond = 0
        for token, new_id in vocab.items():
            old_id = model_vocab.get(token)
            if old_id is None:
                continue
            if old_id >= limit:  # mergekit leaves these out of the map (and then fails); absent here
                beyond += 1
                continue
            perm[new_id] = old_id
        if beyond:
            log.warning("%s: %d token(s) have ids at or beyond its vocab_size %d and count as absent", ref, beyond,
                        limit)
        permutations[ref] = perm

    rows = len(vocab)
    pad = config.tokenizer.pad_to_multiple_of if config.tokenizer else None
    if pad and rows % pad:
        rows = (rows // pad + 1) * pad
    added = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t not in base_vocab]
    return TokenizerPlan(tokenizer=out, source=source, vocab=vocab, rows=rows, permutations=permutations,
                         original_vocabs={ref: tok.get_vocab() for ref, tok in tokenizers.items()},
                         token_configs=token_configs, added=added)


__all__ = ["TokenizerPlan", "build_tokenizer_plan", "config_vocab_size", "stripped_tokenizer", "union_tokenizer"]
