"""mergegate vs mergekit 0.1.5: wall time and peak memory on the same recipes, in one run.

Three ~100M-parameter random Llama "fine-tunes" plus their base (bfloat16, on local disk). Each tool
runs as its own process (`mergegate merge` vs `mergekit-yaml`), alternating, REPEATS times; the
best wall time, the best CPU time (user + system, wait4's rusage: steadier than wall time on a
shared machine) and the peak RSS (ru_maxrss of that process) are reported, with ratios
mergegate / mergekit. Inputs are read once beforehand so both start from a warm page cache. The
machine's load average at the start and the end of each method is recorded beside it.

    ./dev bench merge_vs_mergekit [--params 100e6] [--repeats 2] [--json bench/results/merge_vs_mergekit.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


# A small process that runs the command and reports its rusage: a child forked from this process
# would start with this process's memory high-water mark (Linux carries the parent's peak RSS into
# ru_maxrss across fork/vfork + exec), so after building the models here every tool would "peak" at
# this process's size. The launcher's own address space is fresh after its exec.
_LAUNCHER = """
import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = proc.stderr.read()
_, status, ru = os.wait4(proc.pid, 0)
print(json.dumps({"wall": time.perf_counter() - start, "cpu": ru.ru_utime + ru.ru_stime, "peak_kib": ru.ru_maxrss,
                  "rc": os.waitstatus_to_exitcode(status), "err": err.decode(errors="replace")[-2000:]}))
"""


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MiB) of one process."""
    out = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r["rc"] != 0:
        raise SystemExit(f"command failed ({r['rc']}): {' '.join(cmd)}\n{r['err']}")
    return r["wall"], r["cpu"], r["peak_kib"] / 1024


def recipes(base: Path, experts: list[Path]) -> dict[str, dict]:
    e = [str(p) for p in experts]
    b = str(base)
    return {
        "linear": {"merge_method": "linear", "dtype": "bfloat16", "models": [
            {"model": e[0], "parameters": {"weight": 0.5}}, {"model": e[1], "parameters": {"weight": 0.3}},
            {"model": e[2], "parameters": {"weight": 0.2}}]},
        "slerp": {"merge_method": "slerp", "base_model": b, "dtype": "bfloat16",
                  "models": [{"model": b}, {"model": e[0]}],
                  "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                                       {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]}, {"value": 0.5}]}},
        "ties": {"merge_method": "ties", "base_model": b, "dtype": "bfloat16", "models": [
            {"model": e[0], "parameters": {"weight": 0.5, "density": 0.5}},
            {"model": e[1], "parameters": {"weight": 0.3, "density": 0.5}},
            {"model": e[2], "parameters": {"weight": 0.2, "density": 0.5}}]},
        "dare_ties": {"merge_method": "dare_ties", "base_model": b, "dtype": "bfloat16", "models": [
            {"model": e[0], "parameters": {"weight": 0.5, "density": 0.5}},
            {"model": e[1], "parameters": {"weight": 0.3, "density": 0.5}},
            {"model": e[2], "parameters": {"weight": 0.2, "density": 0.5}}]},
        "sce": {"merge_method": "sce", "base_model": b, "dtype": "bfloat16", "parameters": {"select_topk": 0.5},
                "models": [{"model": e[0]}, {"model": e[1]}, {"model": e[2]}]},
        "multislerp": {"merge_method": "multislerp", "base_model": b, "dtype": "bfloat16", "models": [
            {"model": e[0], "parameters": {"weight": 0.5}}, {"model": e[1], "parameters": {"weight": 0.3}},
            {"model": e[2], "parameters": {"weight": 0.2}}]},
        "karcher": {"merge_method": "karcher", "dtype": "bfloat16",
                    "models": [{"model": e[0]}, {"model": e[1]}, {"model": e[2]}]},
        "nearswap": {"merge_method": "nearswap", "base_model": b, "dtype": "bfloat16", "parameters": {"t": 0.001},
                     "models": [{"model": e[0]}]},
        "arcee_fusion": {"merge_method": "arcee_fusion", "base_model": b, "dtype": "bfloat16",
                         "out_dtype": "bfloat16", "models": [{"model": e[0]}]},
        "ram": {"merge_method": "ram", "base_model": b, "dtype": "bfloat16",
                "models": [{"model": e[0]}, {"model": e[1]}, {"model": e[2]}]},
        "ramplus_tl": {"merge_method": "ramplus_tl", "base_model": b, "dtype": "bfloat16", "out_dtype": "bfloat16",
                       "models": [{"model": e[0]}, {"model": e[1]}, {"model": e[2]}]},
    }


def write_results(out: Path, params: int, repeats: int, rows: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "params_per_model": params,
        "repeats": repeats, "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "note": "both tools measured alternately in this one run; best wall and CPU time of the repeats, "
                "largest peak RSS; load_avg = 1-minute load average before and after each method",
        "rows": rows}, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=float, default=100e6, help="parameters per model (default 100e6)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--methods", default="linear,slerp,ties,dare_ties,sce,multislerp",
                    help="comma-separated; also karcher, nearswap, arcee_fusion, ram, ramplus_tl")
    ap.add_argument("--models-dir", default=None, help="reuse/keep the random models here")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "merge_vs_mergekit.json"))
    args = ap.parse_args()

    from mergegate.merging.random_models import make_family, shape_for_params

    mergekit = BIN / "mergekit-yaml"
    if not mergekit.exists():
        raise SystemExit("mergekit is not installed: pip install -e '.[test]'")
    work = Path(tempfile.mkdtemp(prefix="mergegate-bench-"))
    models = Path(args.models_dir) if args.models_dir else work / "models"
    shape = shape_for_params(int(args.params))
    if not (models / "expert3" / "config.json").exists():
        t = time.perf_counter()
        make_family(models, 3, shape=shape, seed=0, dtype="bfloat16", shard_bytes=int(2e8))
        print(f"built 4 random models of {shape.num_params / 1e6:.0f}M parameters in {time.perf_counter() - t:.0f}s",
              file=sys.stderr)
    base, experts = models / "base", [models / f"expert{i}" for i in (1, 2, 3)]
    for f in models.rglob("*.safetensors"):  # warm the page cache for both tools alike
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass

    rows = []
    for name in args.methods.split(","):
        cfg = work / f"{name}.yml"
        cfg.write_text(yaml.safe_dump(recipes(base, experts)[name], sort_keys=False))
        results: dict[str, list[tuple[float, float, float]]] = {"mergegate": [], "mergekit": []}
        load_before = os.getloadavg()[0]
        for _ in range(args.repeats):
            for tool in ("mergekit", "mergegate"):
                out = work / f"out-{tool}-{name}"
                shutil.rmtree(out, ignore_errors=True)
                cmd = ([str(mergekit), str(cfg), str(out), "--random-seed", "0", "--quiet"] if tool == "mergekit"
                       else [str(BIN / "mergegate"), "merge", str(cfg), str(out), "--seed", "0"])
                results[tool].append(measure(cmd))
                shutil.rmtree(out, ignore_errors=True)
        ours_t, theirs_t = (min(r[0] for r in results[k]) for k in ("mergegate", "mergekit"))
        ours_c, theirs_c = (min(r[1] for r in results[k]) for k in ("mergegate", "mergekit"))
        ours_m, theirs_m = (max(r[2] for r in results[k]) for k in ("mergegate", "mergekit"))
        rows.append({"method": name, "mergegate_s": round(ours_t, 2), "mergekit_s": round(theirs_t, 2),
                     "time_ratio": round(ours_t / theirs_t, 3), "mergegate_cpu_s": round(ours_c, 2),
                     "mergekit_cpu_s": round(theirs_c, 2), "cpu_ratio": round(ours_c / theirs_c, 3),
                     "mergegate_peak_mib": round(ours_m), "mergekit_peak_mib": round(theirs_m),
                     "memory_ratio": round(ours_m / theirs_m, 3),
                     "load_avg": [round(load_before, 1), round(os.getloadavg()[0], 1)]})
        print(json.dumps(rows[-1]), file=sys.stderr)
        write_results(Path(args.json), shape.num_params, args.repeats, rows)  # after each row: a cut run keeps its rows

    print(f"\n{shape.num_params / 1e6:.0f}M-parameter models x 4 (bf16), {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}; best of {args.repeats}\n")
    print("| method | mergegate (s) | mergekit 0.1.5 (s) | time ratio | CPU ratio | mergegate peak (MiB) | "
          "mergekit peak (MiB) | memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['mergegate_s']} | {r['mergekit_s']} | {r['time_ratio']:.2f}× | "
              f"{r['cpu_ratio']:.2f}× | {r['mergegate_peak_mib']} | {r['mergekit_peak_mib']} | "
              f"{r['memory_ratio']:.2f}× |")
    if not args.models_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
