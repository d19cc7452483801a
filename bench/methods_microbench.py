"""Microbenchmark: mergegate's merge kernels vs mergekit 0.1.5's ``merge_tensors``.

    .venv/bin/python bench/methods_microbench.py [--size 4096] [--repeat 3] [--methods linear,ties]

Both sides get the same in-memory tensors (3 inputs + a base, already in the compute dtype) and
the same parameters; the reported time is the best of ``--repeat`` runs of one output tensor.
mergekit is used here only as the reference to beat (never imported by mergegate itself).
"""

from __future__ import annotations

import argparse
import time

import torch

from mergegate.merging.methods import get_method
from mergegate.merging.methods.base import MergeInput, Scope

CASES = {
    # method: (per-input params for the 3 non-base inputs, shared params)
    "linear": ([{"weight": 0.5}, {"weight": 0.3}, {"weight": 0.2}], {}),
    "slerp": ([], {"t": 0.4}),
    "task_arithmetic": ([{"weight": 0.5}, {"weight": 0.3}, {"weight": 0.2}], {}),
    "ties": ([{"weight": 0.5, "density": 0.5}, {"weight": 0.3, "density": 0.5}, {"weight": 0.2, "density": 0.5}], {}),
    "dare_ties": ([{"weight": 0.5, "density": 0.5}, {"weight": 0.3, "density": 0.5}, {"weight": 0.2, "density": 0.5}],
                  {}),
    "dare_linear": ([{"weight": 0.5, "density": 0.5}, {"weight": 0.3, "density": 0.5},
                     {"weight": 0.2, "density": 0.5}], {}),
    "breadcrumbs_ties": ([{"weight": 0.5, "density": 0.5}, {"weight": 0.3, "density": 0.5},
                          {"weight": 0.2, "density": 0.5}], {}),
    "della": ([{"weight": 0.5, "density": 0.5}, {"weight": 0.3, "density": 0.5}, {"weight": 0.2, "density": 0.5}],
              {}),
    "sce": ([{}, {}, {}], {"select_topk": 0.5}),
    "multislerp": ([{"weight": 0.5}, {"weight": 0.3}, {"weight": 0.2}], {}),
    "karcher": ([{}, {}, {}], {}),
    "ram": ([{}, {}, {}], {}),
    "ramplus_tl": ([{}, {}, {}], {}),
    "nearswap": ([], {"t": 0.01}),
    "arcee_fusion": ([], {}),
}
PAIRS = ("slerp", "nearswap", "arcee_fusion")  # a base and one other model


def _inputs(name: str, size: int, dtype: torch.dtype, gen: torch.Generator):
    per, shared = CASES[name]
    base = torch.randn(size, size, generator=gen).to(dtype)
    if name in PAIRS:
        others = [base + 0.3 * torch.randn(size, size, generator=gen).to(dtype)]
    else:
        others = [base + 0.01 * torch.randn(size, size, generator=gen).to(dtype) for _ in per]
    return [base, *others], per, shared


def _ours(name, tensors, per, shared, seed):
    method = get_method(name)
    spec = method.spec
    input_params = {p.name for p in spec.params if p.scope is Scope.INPUT}
    if name == "linear":  # no base: every input is weighted; give the base the first weight
        per_input = [{"weight": 0.25}, *per]
        base_index = None
    elif name in PAIRS:
        per_input = [{}, {}]
        base_index = 0
    elif name == "karcher":  # no base: every input counts equally
        per_input = [{}] * len(tensors)
        base_index = None
    else:
        per_input = [{k: v for k, v in per[0].items() if k in input_params}, *per]
        base_index = 0
    full_shared = {p.name: p.default for p in spec.shared_params if not p.required}
    full_shared.update(shared)
    gen = torch.Generator().manual_seed(seed) if spec.stochastic else None
    return method.merge(MergeInput(tensors=tensors, base_index=base_index, per_input=per_input,
                                   shared=full_shared, name="bench.weight", generator=gen))


def _mergekit(name, tensors, per, shared, dtype):
    from mergekit.merge_methods import merge_tensors

    params = dict(shared)
    if name == "linear":
        params["weight"] = [0.25] + [p["weight"] for p in per]
        return merge_tensors(tensors, name, parameters=params, dtype=dtype)
    for key in (per[0] if per else {}):
        params[key] = [p[key] for p in per]
    base_index = None if name == "karcher" else 0
    return merge_tensors(tensors, name, parameters=params, base_index=base_index, dtype=dtype)


def _best(fn, repeat, clock=time.perf_counter):
    best = float("inf")
    for _ in range(repeat):
        start = clock()
        out = fn()
        best = min(best, clock() - start)
        del out
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--methods", default="linear,slerp,ties,dare_ties")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--skip-mergekit", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: process CPU time, steadier than wall time on a shared machine")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    gen = torch.Generator().manual_seed(0)
    print(f"{args.clock} time, best of {args.repeat}; torch {torch.__version__}, {torch.get_num_threads()} threads, {args.size}x{args.size}, 3 inputs + base")
    print(f"{'method':<18}{'dtype':<10}{'ours s':>10}{'mergekit s':>12}{'ratio':>8}")
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for name in args.methods.split(","):
            tensors, per, shared = _inputs(name, args.size, dtype, gen)
            ours = _best(lambda: _ours(name, tensors, per, shared, 1), args.repeat, clock)
            if args.skip_mergekit:
                theirs = float("nan")
            else:
                theirs = _best(lambda: _mergekit(name, tensors, per, shared, dtype), args.repeat, clock)
            print(f"{name:<18}{dtype_name:<10}{ours:>10.3f}{theirs:>12.3f}{ours / theirs:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
