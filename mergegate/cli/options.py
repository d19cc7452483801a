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
    """The audit options of ``audit``, ``run`` and ``batch`` (same names, defaults and meaning)."""
    group.add_argument("--prompts", default="beavertails", metavar="SRC",
                       help="unsafe prompts: beavertails[@SHA], hub:ID[:config][:split], or a .jsonl/.parquet "
                       "file with a 'prompt' column (default: beavertails)")
    group.add_argument("--benign", default="xstest", metavar="SRC|none",
                       help="benign prompts for over-refusal: xstest, a source as above, or none (default: xstest)")
    group.add_argument("--judge", default="meta-llama/Llama-Guard-3-8B", metavar="ID|PATH",
                       help="Llama-Guard-protocol judge (Hub id or local dir) or refusal-patterns "
                       "(default: %(default)s)")
    group.add_argument("--limit", type=positive_int, metavar="N",
                       help="a seeded, category-stratified sample of N unsafe prompts")
    group.add_argument("--seed", type=int, default=0, metavar="N", help=f"{seed_help} (default: 0)")
    group.add_argument("--max-new-tokens", type=positive_int, default=512, metavar="N",
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
