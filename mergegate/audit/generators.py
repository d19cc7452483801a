"""Answer generators: ``transformers`` (CPU/GPU) and ``vllm`` (optional extra), list in / list out.

Both apply the model's own chat template (or the ``chat_template`` override) to a single user
turn, decode greedily and return the stripped answer text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mergegate.audit.batching import STATS, run_with_oom_backoff
from mergegate.errors import AuditError, BackendUnavailableError, InputError, ModelFilesError

log = logging.getLogger(__name__)

BACKENDS = ("transformers", "vllm")


@runtime_checkable
class Generator(Protocol):
    """Anything that answers a batch of user prompts."""

    def generate(self, prompts: Sequence[str]) -> list[str]: ...

    def close(self) -> None: ...


def check_device(device: str) -> str:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("CUDA was requested but no CUDA GPU is available", field="device",
                         hint="use --device cpu, or install a CUDA build of torch on a GPU machine")
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise InputError(f"unknown device '{device}'", field="device", hint="use cpu or cuda[:N]")
    return device


def default_dtype(device: str) -> Any:
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def require_chat_template(tokenizer: Any, override: str | None, source: str) -> None:
    if override:
        tokenizer.chat_template = override
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("the model has no chat template", source=source, field="chat_template",
                         hint="pass --chat-template FILE (a Jinja chat template) or use an instruct model")


def check_vocab(model: Any, tokenizer: Any, source: str) -> None:
    n_embed = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embed:
        raise ModelFilesError(
            f"tokenizer has {len(tokenizer)} tokens but the model's embedding has only {n_embed} rows",
            source=source, field="vocab_size",
            hint="the tokenizer does not belong to these weights (a merge with a different tokenizer?); "
                 "copy the tokenizer of the model the weights came from")


def load_tokenizer(path: Path, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
        raise ModelFilesError(f"could not load the tokenizer ({type(exc).__name__}: {str(exc)[:300]})",
                              source=str(path), hint="check tokenizer.json / tokenizer_config.json (re-download "
                              "the model)") from None
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises a bare Exception on a bad file
        if type(exc).__name__ != "Exception":
            raise
        raise ModelFilesError(f"could not load the tokenizer ({str(exc)[:300]})", source=str(path),
                              hint="check tokenizer.json (re-download the model)") from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def quiet_transformers() -> None:
    """Silence transformers' own progress bars (weight loading/saving): they would interleave with
    mergegate's output in logs and CI; mergegate reports progress itself."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def load_causal_lm(path: Path, *, device: str, trust_remote_code: bool = False, allow_pickle: bool = False) -> Any:
    from transformers import AutoModelForCausalLM

    quiet_transformers()

    kwargs = dict(dtype=default_dtype(device), trust_remote_code=trust_remote_code,
                  use_safetensors=None if allow_pickle else True)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except ValueError as exc:
        # Llama Guard 4 is a Llama4ForConditionalGeneration: not a causal-LM auto class
        try:
            from transformers import AutoModelForImageTextToText

            model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        except (ImportError, OSError, ValueError):
            raise ModelFilesError(f"could not load the model: {exc}", source=str(path),
                                  hint="check config.json and the weight files (safetensors)") from exc
    except OSError as exc:
        raise ModelFilesError(f"could not load the model: {exc}", source=str(path),
                              hint="check config.json and the weight files (safetensors)") from exc
    model.to(device)
    model.eval()
    return model


class TransformersGenerator:
    """Greedy batched generation with ``model.generate`` (left padding, the model's chat template)."""

    def __init__(self, model: Any, tokenizer: Any, *, device: str = "cpu", max_new_tokens: int = 512,
                 batch_size: int = 16, chat_template: str | None = None, source: str = "model") -> None:
        require_chat_template(tokenizer, chat_template, source)
        check_vocab(model, tokenizer, source)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer = model, tokenizer
        self.device, self.max_new_tokens, self.batch_size = device, max_new_tokens, batch_size
        self.source = source

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu", max_new_tokens: int = 512, batch_size: int = 16,
             chat_template: str | None = None, trust_remote_code: bool = False,
             allow_pickle: bool = False, source: str | None = None) -> TransformersGenerator:
        path = Path(path)
        check_device(device)
        tok = load_tokenizer(path, trust_remote_code=trust_remote_code)
        require_chat_template(tok, chat_template, source or str(path))  # before loading weights
        model = load_causal_lm(path, device=device, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        STATS["model_loads"] += 1
        return cls(model, tok, device=device, max_new_tokens=max_new_tokens, batch_size=batch_size,
                   chat_template=chat_template, source=source or str(path))

    def render(self, prompt: str) -> str:
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    def _generate_batch(self, prompts: list[str]) -> list[str]:
        import torch
        from transformers import GenerationConfig

        STATS["generate_batches"] += 1
        tok = self.tokenizer
        enc = tok([self.render(p) for p in prompts], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(self.device)
        gen_cfg = getattr(self.model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None) or tok.eos_token_id
        config = GenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=False, eos_token_id=eos,
                                  pad_token_id=tok.pad_token_id)
        with torch.inference_mode():
            out = self.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                      generation_config=config)
        new = out[:, enc["input_ids"].shape[1]:]
        return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]

    def generate(self, prompts: Sequence[str]) -> list[str]:
        return run_with_oom_backoff(self._generate_batch, prompts, self.batch_size,
                                    what=f"generating answers with {self.source}")

    def close(self) -> None:
        self.model = None
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise BackendUnavailableError("the vllm backend is not installed", extra="vllm") from exc
    return vllm


class VLLMGenerator:
    """Offline vLLM ``LLM.chat`` with explicit greedy ``SamplingParams`` (safety-eval.md §3)."""

    def __init__(self, path: str | Path, *, max_new_tokens: int = 512, chat_template: str | None = None,
                 trust_remote_code: bool = False, gpu_memory_utilization: float = 0.85,
                 source: str | None = None, **engine_kwargs: Any) -> None:
        vllm = import_vllm()
        self.source = source or str(path)
        self.chat_template = chat_template
        if chat_template is None:
            tok = load_tokenizer(Path(path), trust_remote_code=trust_remote_code)
            require_chat_template(tok, None, self.source)
        self.llm = vllm.LLM(model=str(path), trust_remote_code=trust_remote_code, seed=0,
                            gpu_memory_utilization=gpu_memory_utilization, generation_config="vllm",
                            **engine_kwargs)
        STATS["model_loads"] += 1
        self.params = vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens)

    def generate(self, prompts: Sequence[str]) -> list[str]:
        import torch

        STATS["generate_batches"] += 1
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        try:
            outs = self.llm.chat(conversations, self.params, use_tqdm=False, chat_template=self.chat_template)
        except torch.cuda.OutOfMemoryError as exc:
            raise AuditError("CUDA out of memory in vLLM", source=self.source,
                             hint="lower gpu_memory_utilization or max_model_len") from exc
        return [o.outputs[0].text.strip() for o in outs]

    def close(self) -> None:
        import gc

        self.llm = None
        gc.collect()
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

            cleanup_dist_env_and_memory()
        except Exception:  # noqa: BLE001 - older vLLM: best effort
            pass


def make_generator(backend: str, path: Path, *, device: str, max_new_tokens: int, batch_size: int,
                   chat_template: str | None, trust_remote_code: bool, allow_pickle: bool = False,
                   source: str | None = None) -> Generator:
    if backend == "transformers":
        return TransformersGenerator.load(path, device=device, max_new_tokens=max_new_tokens,
                                          batch_size=batch_size, chat_template=chat_template,
                                          trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                                          source=source)
    if backend == "vllm":
        if not device.startswith("cuda"):
            raise InputError("the vllm backend needs --device cuda", field="backend")
        return VLLMGenerator(path, max_new_tokens=max_new_tokens, chat_template=chat_template,
                             trust_remote_code=trust_remote_code, source=source)
    raise InputError(f"unknown backend '{backend}'", field="backend", hint=f"use one of {', '.join(BACKENDS)}")
