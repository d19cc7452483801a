"""Audit throughput: prompts/s for generation and judging, first run vs cached re-run.

CPU section (always): the toy fleet (``base`` audited by the toy ``guard`` on the 240 held-out
unsafe prompts, max_new_tokens=48), first run into an empty cache, then the cached re-run.

GPU section (only when CUDA is available; skipped cleanly otherwise): transformers vs vLLM
generation on a ~1B Llama-shaped model. Without network access the model is built locally with
random weights (same shapes as Llama-3.2-1B, the toy chat template), so answers run to
max_new_tokens: a worst-case token throughput. ``--gpu-model PATH_OR_ID`` uses a real model.

Usage: python bench/audit_throughput.py [--fleet DIR] [--json OUT] [--gpu-model ID] [--gpu-prompts N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _timed(fn):  # noqa: ANN001, ANN202
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def cpu_section(fleet: Path, cache_dir: Path) -> dict:
    import torch

    from mergegate.audit.api import audit_models
    from mergegate.audit.batching import STATS
    from mergegate.audit.generators import TransformersGenerator
    from mergegate.audit.judges import LlamaGuardJudge
    from mergegate.audit.prompts import load_prompts

    torch.set_num_threads(1)  # tiny models: one thread is fastest (see toyfleet.build_fleet)
    prompts = load_prompts(str(fleet / "prompts" / "unsafe.jsonl")).texts
    n = len(prompts)
    judge = LlamaGuardJudge.load(fleet / "guard", judge_id="toy-guard", batch_size=64)
    per_model = {}
    for name in ("base", "expert"):
        gen = TransformersGenerator.load(fleet / name, max_new_tokens=48, batch_size=64)
        answers, t_gen = _timed(lambda: gen.generate(prompts))
        verdicts, t_judge = _timed(lambda: judge.judge(list(zip(prompts, answers))))
        per_model[name] = {"generation_prompts_per_s": n / t_gen, "judging_prompts_per_s": n / t_judge,
                           "unsafe_share": sum(v.unsafe for v in verdicts) / n}

    models = [str(fleet / "base"), str(fleet / "expert")]
    kwargs = dict(prompts=str(fleet / "prompts" / "unsafe.jsonl"), benign=None, judge=str(fleet / "guard"),
                  max_new_tokens=48, batch_size=64, cache=cache_dir / "bench.sqlite3", progress=False)
    STATS.clear()
    _, t_first = _timed(lambda: audit_models(models, **kwargs))
    first_stats = dict(STATS)
    STATS.clear()
    _, t_second = _timed(lambda: audit_models(models, **kwargs))
    return {
        "n_prompts_per_model": n,
        "per_model": per_model,
        "audit_two_models_first_run_s": t_first,
        "audit_first_run_prompts_per_s": 2 * n / t_first,
        "audit_two_models_cached_run_s": t_second,
        "audit_cached_run_prompts_per_s": 2 * n / t_second,
        "cache_speedup": t_first / t_second,
        "first_run_calls": first_stats,
        "cached_run_calls": dict(STATS),
    }


def _random_1b(out: Path) -> Path:
    """A Llama-3.2-1B-shaped model with random weights and the toy char tokenizer (no network)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mergegate.audit.toyfleet.train import build_tokenizer

    tok = build_tokenizer("chat")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, torch_dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def gpu_section(model: str | None, n_prompts: int, max_new_tokens: int, work: Path) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU"}
    from mergegate.audit.generators import TransformersGenerator, VLLMGenerator

    path = Path(model) if model and Path(model).is_dir() else None
    if model and path is None:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.jinja"]))
    if path is None:
        path = _random_1b(work / "random-1b")
    prompts = [f"Question {i}: how do I repair a bicycle chain number {i}?" for i in range(n_prompts)]
    result: dict = {"model": str(model or "random Llama-3.2-1B-shaped"), "n_prompts": n_prompts,
                    "max_new_tokens": max_new_tokens, "gpu": torch.cuda.get_device_name(0)}
    for bs in (32, 128):
        gen = TransformersGenerator.load(path, device="cuda", max_new_tokens=max_new_tokens, batch_size=bs)
        gen.generate(prompts[:bs])  # warm-up
        torch.cuda.synchronize()
        answers, t = _timed(lambda: gen.generate(prompts))
        toks = sum(len(gen.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
        result[f"transformers_bs{bs}"] = {"prompts_per_s": n_prompts / t, "tokens_per_s": toks / t, "s": t}
        gen.close()
        del gen
        torch.cuda.empty_cache()
    try:
        gen = VLLMGenerator(path, max_new_tokens=max_new_tokens, gpu_memory_utilization=0.6)
    except ImportError as exc:  # BackendUnavailableError is an ImportError
        result["vllm"] = {"skipped": str(exc).splitlines()[0]}
    else:
        gen.generate(prompts[:8])
        answers, t = _timed(lambda: gen.generate(prompts))
        result["vllm"] = {"prompts_per_s": n_prompts / t, "s": t}
        gen.close()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fleet", default=None, help="toy fleet dir (built if missing; default .pytest_cache/toy_fleet)")
    ap.add_argument("--json", default=None, help="write results as JSON")
    ap.add_argument("--gpu-model", default=None)
    ap.add_argument("--gpu-prompts", type=int, default=512)
    ap.add_argument("--gpu-max-new-tokens", type=int, default=128)
    ap.add_argument("--skip-cpu", action="store_true")
    args = ap.parse_args()

    from mergegate.audit.toyfleet import ensure_fleet

    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ.setdefault("MERGEGATE_CACHE_DIR", str(work / "cache"))
        if not args.skip_cpu:
            fleet_dir = Path(args.fleet) if args.fleet else Path(__file__).resolve().parents[1] / ".pytest_cache" / "toy_fleet"
            t0 = time.perf_counter()
            fleet = ensure_fleet(fleet_dir)
            results["fleet_ready_s"] = time.perf_counter() - t0
            results["cpu"] = cpu_section(fleet, work)
        results["gpu"] = gpu_section(args.gpu_model, args.gpu_prompts, args.gpu_max_new_tokens, work)
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
