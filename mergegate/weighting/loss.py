"""Teacher-forced answer cross-entropy: the fitness of a candidate merge.

For each (question, answer): ids = chat template of ``[user, assistant]``; the prefix rendered with
``add_generation_prompt=True`` for ``[user]`` alone is the prompt and is masked (label -100), so
only the answer tokens (and the template's end-of-turn) are scored. Per example, the token-mean
cross-entropy over those tokens (what ``model(ids, labels=labels).loss`` gives for one sample, as
MergeAlign computes it); a set's loss is the **mean over its examples**. (MergeAlign sums the
per-example losses; CMA-ES is rank-based, so with equal set sizes the two are the same search,
and the mean keeps ``alpha`` meaningful when the sets differ in size.)

Sequences are batched by length (dynamic right padding), truncated to ``max_length`` from the left
of the answer's end so the answer is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mergegate.errors import InputError


@dataclass
class Encoded:
    ids: list[list[int]]
    prompt_lens: list[int]

    def __len__(self) -> int:
        return len(self.ids)


def _template_ids(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_pairs(tokenizer: Any, pairs: Sequence[tuple[str, str]], *, max_length: int = 2048) -> Encoded:
    """Token ids and prompt lengths of chat-templated (question, answer) pairs."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("the merge's tokenizer has no chat template, so questions cannot be templated",
                         field="chat_template", hint="merge instruct models, or set chat_template in the recipe")
    ids_out, lens = [], []
    for prompt, answer in pairs:
        user = [{"role": "user", "content": prompt}]
        p = _template_ids(tokenizer, user, add_generation_prompt=True)
        full = _template_ids(tokenizer, [*user, {"role": "assistant", "content": answer}],
                             add_generation_prompt=False)
        if full[: len(p)] != p:  # a template that renders the prefix differently: fall back
            eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
            full = p + list(tokenizer(answer, add_special_tokens=False)["input_ids"]) + eos
        if len(full) <= len(p):
            continue
        if len(full) > max_length:  # keep the answer: cut the start of the prompt
            cut = len(full) - max_length
            full = full[cut:]
            p_len = max(0, len(p) - cut)
        else:
            p_len = len(p)
        ids_out.append(full)
        lens.append(p_len)
    return Encoded(ids_out, lens)


@torch.no_grad()
def per_example_ce(model: Any, enc: Encoded, *, device: str | torch.device, batch_size: int = 16,
                   pad_id: int = 0) -> torch.Tensor:
    """Token-mean answer CE of every example (float64 CPU tensor, in ``enc`` order)."""
    n = len(enc)
    out = torch.empty(n, dtype=torch.float64)
    if n == 0:
        return out
    order = sorted(range(n), key=lambda i: len(enc.ids[i]))
    dev = torch.device(device)
    for start in range(0, n, batch_size):
        idx = order[start: start + batch_size]
        width = max(len(enc.ids[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        labels = torch.full((len(idx), width), -100, dtype=torch.long)
        for row, i in enumerate(idx):
            seq = enc.ids[i]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            labels[row, enc.prompt_lens[i]: len(seq)] = torch.tensor(seq[enc.prompt_lens[i]:])
        ids, mask, labels = ids.to(dev), mask.to(dev), labels.to(dev)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1, :]
        target = labels[:, 1:]
        ce = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), target, ignore_index=-100,
                                               reduction="none")
        counts = (target != -100).sum(1).clamp(min=1)
        means = (ce.sum(1) / counts).double().cpu()
        for row, i in enumerate(idx):
            out[i] = means[row]
    return out


def mean_ce(model: Any, enc: Encoded, *, device: str | torch.device, batch_size: int = 16, pad_id: int = 0) -> float:
    """Mean over examples of the per-example token-mean answer CE (``inf`` for a non-finite loss)."""
    if len(enc) == 0:
        return 0.0
    value = float(per_example_ce(model, enc, device=device, batch_size=batch_size, pad_id=pad_id).mean())
    return value if value == value else float("inf")
