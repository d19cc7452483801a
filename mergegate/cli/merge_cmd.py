"""``mergegate merge CONFIG OUT_DIR``: drop-in for ``mergekit-yaml CONFIG OUT_DIR``."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from mergegate.merging.mergekit_flags import MERGEKIT_FLAGS  # a table: no torch, --help stays fast

    p = sub.add_parser("merge", help="rebuild a mergekit recipe into OUT_DIR",
                       description="Rebuild a mergekit YAML recipe (or a model card with one) into OUT_DIR. "
                       "Same config, same math and same output layout as mergekit-yaml, including its "
                       "README.md model card (--no-write-model-card: none).")
    p.add_argument("config", help="mergekit YAML (mergekit_config.yml) or a README.md holding one")
    p.add_argument("out_dir", nargs="?",
                   help="output directory: new, empty, or a previous output of mergegate or mergekit-yaml "
                   "(replaced atomically when the merge succeeds; any other non-empty directory is refused)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed for random methods (dare_*, della*, arcee_fusion on large tensors)")
    p.add_argument("--out-shard-size", default="5B",
                   help="max bytes per output shard, K/M/B suffixes as mergekit (default: 5B)")
    p.add_argument("--allow-pickle", "--allow-bin", dest="allow_pickle", action="store_true",
                   help="read pickled .bin weights (with weights_only=True) when a model has no safetensors")
    p.add_argument("--dry-run", action="store_true", help="validate and print the plan without merging")
    m = p.add_argument_group(
        "mergekit-yaml options", "accepted so pasted mergekit-yaml command lines work: aliases of the options "
        "above, no-ops that print a one-line note, or refused (exit 2) with what to do instead")
    for flag in MERGEKIT_FLAGS:
        kind = {"alias": "alias", "noop": "no effect", "refuse": "refused"}[flag.kind]
        text = flag.note if flag.kind == "refuse" else flag.note.split(": ", 1)[-1].removeprefix("no effect; ")
        help_text = f"[{kind}] {text}"
        help_text = help_text.replace("%", "%%")
        if flag.boolean:
            m.add_argument(*flag.flags, dest=flag.dest, action=argparse.BooleanOptionalAction, default=None,
                           help=help_text)
        elif flag.takes_value:
            m.add_argument(*flag.flags, dest=flag.dest, default=None, type=int if flag.integer else str,
                           metavar="N" if flag.integer else "VALUE", help=help_text)
        else:
            m.add_argument(*flag.flags, dest=flag.dest, action="store_true", default=None, help=help_text)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from mergegate.errors import InputError
    from mergegate.merging.mergekit_flags import MERGEKIT_FLAGS, interpret_mergekit_flags

    flags = interpret_mergekit_flags({f.dest: getattr(args, f.dest) for f in MERGEKIT_FLAGS})
    if flags.seed is not None and args.seed is not None and flags.seed != args.seed:
        raise InputError(f"--seed {args.seed} and --random-seed {flags.seed} disagree", field="--seed",
                         hint="give one of them")
    seed = args.seed if args.seed is not None else flags.seed
    device = args.device or flags.device or "cpu"  # an explicit --device wins, as in mergekit
    if not args.quiet:
        for note in flags.notes:
            print(f"mergegate: note: {note}", file=sys.stderr)

    from mergegate.merging.api import plan_merge, run_merge
    from mergegate.merging.config import load_merge_config

    config, text = load_merge_config(args.config)
    if args.dry_run:
        print(plan_merge(config, allow_pickle=args.allow_pickle).summary())
        return 0
    if not args.out_dir:
        raise InputError("OUT_DIR is required unless --dry-run is given", field="out_dir")
    result = run_merge(config, args.out_dir, device=device, seed=seed,
                       out_shard_size=args.out_shard_size, allow_pickle=args.allow_pickle,
                       progress=not args.quiet, config_text=text, card=flags.write_card)
    if args.quiet:
        return 0
    seed_text = f", seed {result.seed}" if result.seed is not None else ""
    print(f"merged {result.num_tensors} tensors ({result.total_bytes / 1e9:.3f} GB) into {result.out_dir} "
          f"in {result.seconds:.1f}s{seed_text}")
    return 0
