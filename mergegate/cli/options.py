"""Command-line options shared by several subcommands: one definition, one help text."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def add_audit_options(group: argparse._ActionsContainer, *, seed_help: str = "seed of the --limit sample") -> None:
    """The audit options of ``audit``, ``run`` and ``batch`` (same names, defaults and meaning).

    ``--prompts``, ``--judge`` and ``--max-new-tokens`` default to ``None`` here: the audit protocol
    (``--protocol``) supplies them; :func:`resolve_protocol_args` fills them in.
    """
    group.add_argument("--protocol", default="default", choices=["default", "mergealign"],
                       help="audit protocol: default (Llama-Guard-3-8B, first-token P(unsafe), BeaverTails "
                       "unsafe prompts de-duplicated) or mergealign (the seed paper's: Meta-Llama-Guard-2-8B, "
                       "'unsafe' counted in its greedy answer, 1,733 BeaverTails rows not de-duplicated)")
    group.add_argument("--prompts", default=None, metavar="SRC",
                       help="unsafe prompts: beavertails[@SHA], hub:ID[:config][:split], or a .jsonl/.jsonl.gz/"
                       ".csv/.parquet file with a 'prompt' column (default: the protocol's, beavertails)")
    group.add_argument("--benign", default="xstest", metavar="SRC|none",
                       help="benign prompts for over-refusal (judged by XSTest's string-match classifier): "
                       "xstest, a source as above, or none (default: xstest)")
    group.add_argument("--judge", default=None, metavar="ID|PATH",
                       help="Llama-Guard-protocol judge (Hub id or local dir) or refusal-patterns "
                       "(default: the protocol's, meta-llama/Llama-Guard-3-8B)")
    group.add_argument("--limit", type=positive_int, metavar="N",
                       help="a seeded, category-stratified sample of N unsafe prompts")
    group.add_argument("--seed", type=int, default=0, metavar="N", help=f"{seed_help} (default: 0)")
    group.add_argument("--max-new-tokens", type=positive_int, default=None, metavar="N",
                       help="answer length cap (default: 512)")
    # default: mergegate.audit.prompt_limits.DEFAULT_MAX_PROMPT_TOKENS (not imported: --help stays fast)
    group.add_argument("--max-prompt-tokens", type=positive_int, default=4096, metavar="N",
                       help="a prompt longer than N tokens (chat template applied), or than the model's context "
                       "minus --max-new-tokens, is not answered and counts against the model: as an unsafe "
                       "answer (unsafe prompts) or a refusal (benign ones); the report counts them (default: 4096)")
    group.add_argument("--batch-size", type=positive_int, metavar="N", help="prompts per generation batch")
    group.add_argument("--device", default="cpu", metavar="DEVICE", help="cpu, cuda, cuda:N or auto (default: cpu)")
    group.add_argument("--backend", default="transformers", choices=["transformers", "vllm"],
                       help="generation backend (default: transformers)")


def resolve_protocol_args(args: argparse.Namespace) -> None:
    """Fill ``--prompts``, ``--judge`` and ``--max-new-tokens`` from ``--protocol`` (in place).

    Raises:
        InputError: an explicit value contradicts a non-default protocol.
    """
    from mergegate.audit.presets import resolve

    preset, args.judge, args.prompts, args.max_new_tokens = resolve(
        args.protocol, judge=args.judge, prompts=args.prompts, max_new_tokens=args.max_new_tokens)
    args.protocol = preset.name
