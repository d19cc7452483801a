"""Benchmark: safety-aware weighting (EvoMM candidate evaluations per second; recombine vs score).

    .venv/bin/python bench/weighting.py [--budget 100] [--fleet DIR] [--json OUT]
    .venv/bin/python bench/weighting.py --skip-cpu --gpu-params 1e9 --gpu-k 1000      # GPU only

CPU section (the toy fleet, 2-layer hidden-64 models, K = 48 + 48 pairs): a full EvoMM run per
method; reports candidate evaluations per second and the share of the evaluation time spent
recombining (in-memory merge into the loaded model) vs scoring (teacher-forced answer CE).

GPU section (only with CUDA; skipped cleanly otherwise): ONE EvoMM candidate on a ~1B pair — a
random Llama base + a fine-tune (``mergegate.merging.random_models``, bf16, resident on the GPU),
recombined in memory (task_arithmetic and dare_ties) and scored on K = 1000 synthetic
(question, answer) pairs (64 prompt + 192 answer tokens). ``--gpu-device cpu`` with a small
``--gpu-params`` runs the same code path on CPU as a smoke test.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch


def cpu_section(fleet_dir: str | None, budget: int, methods: list[str]) -> dict:
    from mergegate.audit.toyfleet import ensure_fleet
    from mergegate.gate.demo import default_fleet_dir
    from mergegate.weighting import optimize_recipe

    fleet = ensure_fleet(Path(fleet_dir) if fleet_dir else default_fleet_dir()).resolve()
    out: dict = {"fleet": str(fleet), "budget": budget, "threads": 1, "runs": {}}
    for method in methods:
        extra = ", density: 0.5" if method in ("ties", "dare_ties") else ""
        cfg = (f"merge_method: {method}\nbase_model: {fleet / 'base'}\ndtype: float32\nmodels:\n"
               f"  - model: {fleet / 'expert'}\n    parameters: {{weight: 1.0{extra}}}\n")
        t0 = time.perf_counter()
        r = optimize_recipe(cfg, strategy="evomm", budget=budget, seed=0, judge=str(fleet / "guard"),
                            safety_prompts="toy", expert_prompts="toy", k=48, max_new_tokens=48)
        wall = time.perf_counter() - t0
        inner = r.recombine_seconds + r.score_seconds
        row = {
            "evaluations": r.evaluations, "distinct_merges": r.merges, "wall_s": round(wall, 2),
            "evals_per_s": round(r.evaluations / inner, 2) if inner else None,
            "evals_per_s_search_wall": round(r.evaluations / (wall - r.data_seconds), 2),
            "s_per_eval": round(inner / r.evaluations, 4),
            "recombine_s": r.recombine_seconds, "score_s": r.score_seconds,
            "recombine_share": round(r.recombine_seconds / inner, 3), "score_share": round(r.score_seconds / inner, 3),
            "setup_s": round(wall - inner, 2), "optimized": r.optimized,
            "losses": {"declared": r.declared_losses.model_dump(), "optimized": r.optimized_losses.model_dump()},
        }
        out["runs"][method] = row
        print(f"[cpu] {method:16s} {r.evaluations} evals in {wall:6.1f}s wall: {row['evals_per_s']} evals/s, "
              f"recombine {row['recombine_share']:.1%} / score {row['score_share']:.1%}, setup {row['setup_s']}s",
              flush=True)
    return out


def gpu_section(device: str, params: float, k: int, prompt_len: int, answer_len: int, batch: int) -> dict:
    from mergegate.merging import plan_merge
    from mergegate.merging.random_models import make_family, shape_for_params
    from mergegate.weighting.loss import Encoded, mean_ce
    from mergegate.weighting.recombine import InMemoryMerger

    vocab = 32000 if params >= 1e8 else 512
    shape = shape_for_params(int(params), layers=16 if params >= 1e8 else 2, vocab=vocab)
    out: dict = {"device": device, "params": shape.num_params, "shape": shape.__dict__, "k": k,
                 "tokens_per_pair": prompt_len + answer_len, "batch": batch}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="mergegate-wbench-") as tmp:
        t0 = time.perf_counter()
        base, (expert,) = make_family(tmp, 1, shape=shape, seed=0, dtype="bfloat16")
        out["write_models_s"] = round(time.perf_counter() - t0, 1)
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(4, vocab, (k, prompt_len + answer_len), generator=gen).tolist()
        enc = Encoded(ids, [prompt_len] * k)
        for method, params_yaml in (("task_arithmetic", "weight: 0.4"), ("dare_ties", "weight: 0.4, density: 0.5")):
            cfg = (f"merge_method: {method}\nbase_model: {base}\nmodels:\n"
                   f"  - model: {expert}\n    parameters: {{{params_yaml}}}\n")
            t0 = time.perf_counter()
            merger = InMemoryMerger(plan_merge(cfg), device=device)
            load_s = time.perf_counter() - t0
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            merger.apply(merger.plan.config, seed=0)  # warm-up (kernels, allocator)
            recombine_s = merger.apply(merger.plan.config, seed=1)
            t0 = time.perf_counter()
            loss = mean_ce(merger.model, enc, device=device, batch_size=batch, pad_id=0)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            score_s = time.perf_counter() - t0
            row = {"load_inputs_and_model_s": round(load_s, 2), "recombine_s": round(recombine_s, 3),
                   "score_s": round(score_s, 2), "candidate_s": round(recombine_s + score_s, 2),
                   "recombine_share": round(recombine_s / (recombine_s + score_s), 4),
                   "pairs_per_s": round(k / score_s, 1), "loss": round(loss, 4)}
            if device.startswith("cuda"):
                row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            out[method] = row
            print(f"[{device}] {method:16s} ~{shape.num_params / 1e9:.2f}B: recombine {recombine_s:.3f}s + score "
                  f"K={k} {score_s:.2f}s = {recombine_s + score_s:.2f}s per candidate "
                  f"(recombine {row['recombine_share']:.1%})", flush=True)
            del merger
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--fleet", default=None, help="toy fleet directory (built if missing)")
    ap.add_argument("--methods", default="task_arithmetic,dare_ties")
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--gpu-device", default="cuda")
    ap.add_argument("--gpu-params", type=float, default=1e9)
    ap.add_argument("--gpu-k", type=int, default=1000)
    ap.add_argument("--gpu-batch", type=int, default=32)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    result: dict = {"python": sys.version.split()[0], "torch": torch.__version__, "machine": platform.machine(),
                    "cpu_threads_default": torch.get_num_threads()}
    if not args.skip_cpu:
        result["cpu"] = cpu_section(args.fleet, args.budget, args.methods.split(","))
    if args.gpu_device.startswith("cuda") and not torch.cuda.is_available():
        print("[gpu] skipped: no CUDA device", flush=True)
        result["gpu"] = {"skipped": "no CUDA device"}
    else:
        result["gpu"] = gpu_section(args.gpu_device, args.gpu_params, args.gpu_k, 64, 192, args.gpu_batch)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
