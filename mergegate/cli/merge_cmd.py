"""``mergegate merge CONFIG OUT_DIR``: drop-in for ``mergekit-yaml CONFIG OUT_DIR``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="rebuild a mergekit recipe into OUT_DIR",
                       description="Rebuild a mergekit YAML recipe (or a model card with one) into OUT_DIR. "
                       "Same config, same math and same output layout as mergekit-yaml.")
    p.add_argument("config", help="mergekit YAML (mergekit_config.yml) or a README.md holding one")
    p.add_argument("out_dir", nargs="?",
                   help="output directory: new, empty, or a previous output of mergegate or mergekit-yaml "
                   "(replaced atomically when the merge succeeds; any other non-empty directory is refused)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed for random methods (dare_*, della*, arcee_fusion on large tensors)")
    p.add_argument("--out-shard-size", default="5B",
                   help="max bytes per output shard, K/M/B suffixes as mergekit (default: 5B)")
    p.add_argument("--allow-pickle", "--allow-bin", dest="allow_pickle", action="store_true",
                   help="read pickled .bin weights (with weights_only=True) when a model has no safetensors")
    p.add_argument("--dry-run", action="store_true", help="validate and print the plan without merging")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from mergegate.errors import InputError
    from mergegate.merging.api import plan_merge, run_merge
    from mergegate.merging.config import load_merge_config

    config, text = load_merge_config(args.config)
    if args.dry_run:
        print(plan_merge(config, allow_pickle=args.allow_pickle).summary())
        return 0
    if not args.out_dir:
        raise InputError("OUT_DIR is required unless --dry-run is given", field="out_dir")
    result = run_merge(config, args.out_dir, device=args.device, seed=args.seed,
                       out_shard_size=args.out_shard_size, allow_pickle=args.allow_pickle, progress=True,
                       config_text=text)
    seed = f", seed {result.seed}" if result.seed is not None else ""
    print(f"merged {result.num_tensors} tensors ({result.total_bytes / 1e9:.3f} GB) into {result.out_dir} "
          f"in {result.seconds:.1f}s{seed}")
    return 0
