"""Meta's real tokenizers, built offline from files shipped in PyPI packages (a test extra).

- Llama 3 (Llama Guard 2 = Llama 3 8B, Llama Guard 3 = Llama 3.1 8B / 3.2 1B) and Llama 4 (Llama Guard 4):
  the tiktoken BPE files in ``llama-models`` (``llama_models/llama3/tokenizer.model``,
  ``llama_models/llama4/tokenizer.model``), converted with transformers' ``TikTokenConverter`` using the
  split pattern and the special tokens, in id order, of Meta's own tokenizer classes
  (meta-llama/llama-models ``models/llama3/tokenizer.py``, ``models/llama4/tokenizer.py``). The
  reference encoder (``Tokenizer.encode``) is returned beside the HF tokenizer so tests can check one
  against the other.
- Llama 2 (Llama Guard 1 = Llama 2 7B): Meta's Llama 2 SentencePiece model is not shipped in any
  package that installs offline here. The substitute is ``mistral_common/data/tokenizer.model.v1``
  (Mistral 7B v0.1's SentencePiece model, from ``mistral-common``): the same SentencePiece BPE setup as
  Llama 2 (32k pieces, ``<s>`` = 1, a dummy-prefix ``▁``, byte fallback), loaded through transformers'
  ``LlamaTokenizer`` with ``legacy`` as LlamaGuard-7b's config would set it. Piece ids differ from Llama
  2's; what is tested on it is the behaviour: one BOS id, ``▁[`` + ``INST``, the verdict pieces.

The converted tokenizers are cached under pytest's cache directory (the conversion takes ~25 s).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the test extra is not installed: {name} is missing (run ./dev setup)")
    return Path(list(spec.submodule_search_locations)[0])


@dataclass
class RealTokenizer:
    name: str
    hf: Any  # transformers tokenizer
    reference: Callable[[str], list[int]]  # Meta's encoder: text (special tokens allowed) -> ids, with BOS


def _tiktoken(kind: str, cache_dir: Path) -> RealTokenizer:
    from transformers import PreTrainedTokenizerFast

    if kind == "llama3":
        from llama_models.llama3.tokenizer import Tokenizer as Meta
        pattern, eos, pad = Meta.pat_str, "<|eot_id|>", "<|finetune_right_pad_id|>"
    else:
        from llama_models.llama4.tokenizer import Tokenizer as Meta
        pattern, eos, pad = Meta.O200K_PATTERN, "<|eot|>", "<|finetune_right_pad|>"
    model_file = package_dir("llama_models") / kind / "tokenizer.model"
    meta = Meta(model_file)
    version = importlib.metadata.version("llama-models")
    cached = cache_dir / f"{kind}-{version}.json"
    if not cached.is_file():
        from transformers.convert_slow_tokenizer import TikTokenConverter

        specials = sorted(meta.special_tokens, key=meta.special_tokens.get)
        raw = TikTokenConverter(vocab_file=str(model_file), pattern=pattern,
                                extra_special_tokens=specials).converted()
        tmp = cached.with_suffix(".tmp")
        raw.save(str(tmp))
        tmp.replace(cached)
    hf = PreTrainedTokenizerFast(tokenizer_file=str(cached), bos_token="<|begin_of_text|>", eos_token=eos,
                                 pad_token=pad)

    def reference(text: str) -> list[int]:
        return meta.encode(text, bos=True, eos=False, allowed_special="all")

    return RealTokenizer(kind, hf, reference)


def llama3(cache_dir: Path) -> RealTokenizer:
    return _tiktoken("llama3", cache_dir)


def llama4(cache_dir: Path) -> RealTokenizer:
    return _tiktoken("llama4", cache_dir)


def llama2_substitute(tmp_dir: Path, *, legacy: bool = False) -> RealTokenizer:
    import sentencepiece as spm
    from transformers import AutoTokenizer

    model_file = package_dir("mistral_common") / "data" / "tokenizer.model.v1"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_file, tmp_dir / "tokenizer.model")
    (tmp_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "legacy": legacy, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}))
    hf = AutoTokenizer.from_pretrained(tmp_dir)
    sp = spm.SentencePieceProcessor(model_file=str(model_file))

    def reference(text: str) -> list[int]:  # Meta's Llama 2 reference: sp.encode(text) with bos=True
        return [sp.bos_id(), *sp.encode(text)]

    return RealTokenizer("llama2-substitute", hf, reference)


def literal_template(parts: list[str], *, typed: bool = False) -> str:
    """A Jinja chat template rendering ``parts[0] + user + parts[1] + agent + parts[2]`` for a
    [user, assistant] conversation: a stand-in that renders exactly a documented prompt format."""
    get = ("(messages[{i}]['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | first)"
           if typed else "messages[{i}]['content']")
    return ("{{ " + json.dumps(parts[0]) + " + " + get.format(i=0) + " + " + json.dumps(parts[1]) + " + "
            + get.format(i=1) + " + " + json.dumps(parts[2]) + " }}")
