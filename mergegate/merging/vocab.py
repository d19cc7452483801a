"""Aligning vocabulary-indexed tensors (embeddings, LM heads) to the output tokenizer.

With a tokenizer declared, mergekit 0.1.5 rebuilds each input's vocabulary tensor row by row on
the output vocabulary before merging (arcee-ai/mergekit mergekit/tokenizer/embed.py
``PermutedVocabulary``, planned in mergekit/plan.py for every weight with a ``vocabulary_axis``):

* a token the input has keeps the input's row;
* a token some inputs lack gets a stand-in row for those: from ``tokenizer.tokens.<token>.source``
  when configured (a model's row for the token, a given token of a model, or zeros); otherwise
  the one input that has it, else the base model's row when the base has it, else the mean of the
  rows of the inputs that have it; zeros when none has it. ``force: true`` uses the stand-in
  for every input, even those that have the token;
* rows past the vocabulary (``pad_to_multiple_of``) are the mean of the vocabulary rows.

The same operations run here in the same order and dtype (the merge's compute dtype), so the rows
are bit-identical; the merge method then sees inputs of equal shape. Everything that can be
checked without tensor data is checked when planning, before any tensor is merged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from mergegate.errors import ConfigError, ModelFilesError
from mergegate.merging.config import ModelReference, ModelTokenEmbedding, TokenEmbeddingConfig, ZeroEmbedding
from mergegate.merging.tokenizer_build import TokenizerPlan

log = logging.getLogger(__name__)

# Tensors whose first axis is the vocabulary: every non-templated weight with "vocabulary_axis": 0
# in mergekit 0.1.5's architecture definitions (arcee-ai/mergekit mergekit/_data/architectures/*.json).
VOCAB_TENSORS = frozenset({
    "model.embed_tokens.weight", "lm_head.weight", "lm_head.bias", "transformer.wte.weight",
    "model.language_model.embed_tokens.weight", "embed_tokens.weight", "model.tok_embeddings.weight",
    "output.weight", "gpt_neox.embed_in.weight", "embed_out.weight", "transformer.word_embeddings.weight",
    "transformer.output_layer.weight", "transformer.embedding.word_embeddings.weight",
    "transformer.embd.wte.weight", "layers.0.wte.weight", "lm_head.linear.weight", "lm_head.linear.bias",
    "lm_head.decoder.weight", "backbone.embeddings.weight", "decoder.embed_tokens.weight",
    "encoder.embed_tokens.weight", "shared.weight", "embeddings.word_embeddings.weight",
    "bert.embeddings.word_embeddings.weight", "roberta.embeddings.word_embeddings.weight",
    "distilbert.embeddings.word_embeddings.weight", "vocab_projector.weight", "vocab_projector.bias",
    "cls.predictions.bias",
})


def vocabulary_axis(name: str) -> int | None:
    return 0 if name in VOCAB_TENSORS else None


@dataclass(frozen=True)
class _Average:
    tokens: tuple[tuple[int, tuple[int, ...]], ...]  # (output id, indices of the inputs that have it)


@dataclass(frozen=True)
class _Row:
    token_id: int
    input_index: int  # which input's tensor
    row: int  # row in that input's (original) tensor


@dataclass(frozen=True)
class _Zero:
    token_id: int


@dataclass(frozen=True)
class VocabAlignment:
    """How to rebuild the vocabulary tensors of one set of inputs (one output slice)."""

    models: tuple[ModelReference, ...]
    permutations: tuple[torch.Tensor, ...]  # per input: output id -> input row, -1 when taken elsewhere
    vocab_size: int
    rows: int
    averages: _Average
    defaults: tuple[_Row | _Zero, ...]
    needs_default: tuple[torch.Tensor, ...]  # per input: output ids whose row is the stand-in

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.rows, *input_shape[1:])

    def apply(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """The inputs' tensors (same dtype) rebuilt on the output vocabulary."""
        dtype, device = tensors[0].dtype, tensors[0].device
        token_shape = tuple(tensors[0].shape[1:])
        stand_in: dict[int, torch.Tensor] = {}
        for token_id, have in self.averages.tokens:  # mergekit: zeros + row + row ... then /= count
            embed = torch.zeros(token_shape, dtype=dtype, device=device)
            for i in have:
                embed = embed + tensors[i][int(self.permutations[i][token_id])]
            embed /= len(have)
            stand_in[token_id] = embed
        for d in self.defaults:
            if isinstance(d, _Zero):
                stand_in[d.token_id] = tensors[0].new_zeros(token_shape)
            else:
                stand_in[d.token_id] = tensors[d.input_index][d.row]
        out = []
        for i, tensor in enumerate(tensors):
            perm = self.permutations[i].to(device)
            new = torch.zeros((self.rows, *token_shape), dtype=dtype, device=device)
            own = torch.nonzero(perm >= 0).squeeze(1)
            new[own] = tensor[perm[own]]
            ids = [int(t) for t in self.needs_default[i]]
            if ids:
                new[torch.tensor(ids, device=device)] = torch.stack([stand_in[t] for t in ids]).to(dtype)
            if self.rows > self.vocab_size:
                new[self.vocab_size:] = torch.mean(new[: self.vocab_size], dim=0)
            out.append(new)
        return out


def plan_alignment(tok: TokenizerPlan, models: list[ModelReference], base: ModelReference | None,
                   input_rows: list[int], *, tensor: str) -> VocabAlignment:
    """The alignment of one tensor's inputs (``models`` in input order; ``input_rows``: each
    input's vocabulary length along axis 0), validated against the tokenizer configuration."""
    perms = [tok.permutations[m] for m in models]
    for model, perm, rows in zip(models, perms, input_rows):
        if perm.numel() and int(perm.max()) >= rows:
            raise ModelFilesError(f"{tensor} of {model} has {rows} rows but its tokenizer has token id "
                                  f"{int(perm.max())}", source=str(model), field=tensor,
                                  hint="the model's vocab_size, tokenizer and embedding disagree")
    configs: dict[str, TokenEmbeddingConfig] = dict(tok.token_configs)
    present = torch.stack([p >= 0 for p in perms])  # [inputs, vocab]
    counts = present.sum(0)
    # only tokens some input lacks, or configured ones, can need a stand-in row
    candidates = set(torch.nonzero(counts < len(models)).squeeze(1).tolist())
    ids = {token: tok.vocab[token] for token in configs if token in tok.vocab}
    to_average: dict[int, tuple[int, ...]] = {}
    id_to_token = {i: t for t, i in tok.vocab.items() if i in candidates or t in ids}
    for token_id in sorted(candidates):
        token = id_to_token[token_id]
        if token in configs:
            continue
        have = tuple(int(i) for i in torch.nonzero(present[:, token_id]).squeeze(1).tolist())
        if len(have) == 1:
            configs[token] = TokenEmbeddingConfig(source=models[have[0]])
        elif not have:
            configs[token] = TokenEmbeddingConfig(source=ZeroEmbedding(kind="zero"))
            log.warning("token %r is in no input's vocabulary: its %s row is zeros", token, tensor)
        elif base is not None and base in models and present[models.index(base), token_id]:
            configs[token] = TokenEmbeddingConfig(source=base)
        else:
            to_average[token_id] = have
    defaults: list[_Row | _Zero] = []
    needs: list[list[int]] = [[] for _ in models]
    for token_id in sorted(candidates | set(ids.values())):
        token = id_to_token[token_id]
        cfg = configs.get(token)
        force = bool(cfg and cfg.force)
        if not force and bool(present[:, token_id].all()):
            continue
        if token_id not in to_average:
            assert cfg is not None
            defaults.append(_default(tok, cfg, token, token_id, models, input_rows, tensor))
        for i in range(len(models)):
            if force or not present[i, token_id]:
                needs[i].append(token_id)
    final_perms = []
    for i, p in enumerate(perms):
        p = p.clone()
        if needs[i]:
            p[torch.tensor(needs[i])] = -1
        final_perms.append(p)
    return VocabAlignment(models=tuple(models), permutations=tuple(final_perms), vocab_size=len(tok.vocab),
                          rows=tok.rows, averages=_Average(tuple(sorted(to_average.items()))),
                          defaults=tuple(defaults), needs_default=tuple(torch.tensor(n, dtype=torch.int64)
                                                                          for n in needs))


def _default(tok: TokenizerPlan, cfg: TokenEmbeddingConfig, token: str, token_id: int,
             models: list[ModelReference], input_rows: list[int], tensor: str) -> _Row | _Zero:
    where = f"tokenizer.tokens.{token}"
    source = cfg.source
    if isinstance(source, ZeroEmbedding):
        return _Zero(token_id)
    if source is None:
        raise ConfigError(f"token {token!r} needs an embedding row for {tensor} but its entry names no source",
                          field=where, hint="give source: a model of the recipe, {kind: model_token, model: ..., "
                          "token: ...} or {kind: zero} (mergekit 0.1.5 fails on this too)")
    model = source.model if isinstance(source, ModelTokenEmbedding) else source
    if model not in models:
        raise ConfigError(f"token {token!r} takes its {tensor} row from {model}, which is not an input of that "
                          "tensor", field=where, hint="name one of the models merged into this tensor")
    index = models.index(model)
    if isinstance(source, ModelTokenEmbedding):
        row = source.token_id
        if row is None:
            vocab = tok.original_vocabs.get(model)
            if vocab is None or source.token not in vocab:
                raise ConfigError(f"token {source.token!r} is not in the vocabulary of {model}", field=where)
            row = vocab[source.token]
        if not 0 <= row < input_rows[index]:
            raise ConfigError(f"token_id {row} is out of range for {model} ({input_rows[index]} rows in {tensor})",
                              field=where)
        return _Row(token_id, index, row)
    row = int(tok.permutations[model][token_id])
    if row < 0:
        raise ConfigError(f"token {token!r} takes its row from {model}, which does not have that token",
                          field=where, hint="name a model whose tokenizer has the token, or use "
                          "{kind: model_token, model: ..., token: ...}")
    return _Row(token_id, index, row)


__all__ = ["VOCAB_TENSORS", "VocabAlignment", "plan_alignment", "vocabulary_axis"]
