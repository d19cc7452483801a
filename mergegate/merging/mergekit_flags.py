"""mergekit-yaml's command-line options, as ``mergegate merge`` reads them when users paste them.

``mergegate merge CONFIG OUT`` is a drop-in for ``mergekit-yaml CONFIG OUT``, so a command line
copied from a mergekit tutorial must not fail on its options. Each option of mergekit 0.1.5
(arcee-ai/mergekit ``mergekit/options.py``: ``MergeOptions`` and ``add_merge_options``, which
derives ``--name/--no-name`` for booleans, ``-j`` for ``--num-threads``, ``-v`` for verbosity) is
one of:

* an **alias** of a mergegate option (``--cuda`` → ``--device cuda``, ``--random-seed`` →
  ``--seed``, ``--gpu-rich`` → ``--device cuda``, ``--no-write-model-card`` → no card);
* a **no-op** with a one-line note saying why it changes nothing here (``--copy-tokenizer``: the
  tokenizer is always written; ``--lazy-unpickle``: nothing is unpickled; ``--trust-remote-code``:
  merging runs no model code; performance switches of mergekit's own engine);
* **refused** (exit 2) with what mergegate does instead, where honouring it would need a behaviour
  mergegate does not have (``--no-safe-serialization``: pickled output; ``--transformers-cache``).

The table below is the one place that says which; ``mergegate merge --help`` lists it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mergegate.errors import InputError

Kind = Literal["alias", "noop", "refuse"]


@dataclass(frozen=True)
class MergekitFlag:
    """One mergekit-yaml option: its argparse destination, how mergegate treats it, and why."""

    dest: str  # argparse dest (mergekit's MergeOptions field name)
    flags: tuple[str, ...]  # as mergekit spells them
    kind: Kind
    note: str  # printed when given (the refusal's message for "refuse")
    takes_value: bool = False
    boolean: bool = False  # a --x/--no-x pair (argparse.BooleanOptionalAction)
    refuse_when: object = True  # for "refuse": the value that is refused (e.g. False for --no-safe-serialization)
    integer: bool = False  # the value is an int (mergekit's click type)


MERGEKIT_FLAGS: tuple[MergekitFlag, ...] = (
    MergekitFlag("cuda", ("--cuda",), "alias", "--cuda: same as --device cuda", boolean=True),
    MergekitFlag("gpu_rich", ("--gpu-rich",), "alias",
                 "--gpu-rich: same as --device cuda (mergegate streams tensors one at a time, so "
                 "mergekit's low-cpu-memory/read-to-gpu/multi-gpu parts of it do not apply)"),
    MergekitFlag("random_seed", ("--random-seed",), "alias", "--random-seed: same as --seed", takes_value=True,
                 integer=True),
    MergekitFlag("write_model_card", ("--write-model-card",), "alias",
                 "--no-write-model-card: no README.md model card is written (the default writes mergekit's)",
                 boolean=True),
    MergekitFlag("copy_tokenizer", ("--copy-tokenizer",), "noop",
                 "--copy-tokenizer/--no-copy-tokenizer: no effect; mergegate always writes the output's "
                 "tokenizer files (mergekit's default)", boolean=True),
    MergekitFlag("lazy_unpickle", ("--lazy-unpickle",), "noop",
                 "--lazy-unpickle: no effect; mergegate never unpickles (.bin weights are read with "
                 "weights_only=True, and only with --allow-pickle)", boolean=True),
    MergekitFlag("trust_remote_code", ("--trust-remote-code",), "noop",
                 "--trust-remote-code: no effect on a merge, which reads weights and config.json and runs "
                 "no model code (`mergegate audit`/`run` take --trust-remote-code where models are loaded)",
                 boolean=True),
    MergekitFlag("allow_crimes", ("--allow-crimes",), "noop",
                 "--allow-crimes: not honoured; mergegate never mixes architectures: a recipe whose models "
                 "differ in architecture is refused, naming them (same-architecture recipes merge as usual)",
                 boolean=True),
    MergekitFlag("unsafe_truncate_embeddings", ("--unsafe-truncate-embeddings",), "noop",
                 "--unsafe-truncate-embeddings: not honoured; mergegate never discards embedding rows "
                 "(give the recipe a tokenizer section to merge models whose vocabularies differ)", boolean=True),
    MergekitFlag("safe_serialization", ("--safe-serialization",), "refuse",
                 "--no-safe-serialization is not supported: mergegate writes safetensors only, never "
                 "pickled weights (drop the flag)", boolean=True, refuse_when=False),
    MergekitFlag("transformers_cache", ("--transformers-cache",), "refuse",
                 "--transformers-cache is not supported: models are downloaded into huggingface_hub's "
                 "cache; set HF_HUB_CACHE=PATH instead", takes_value=True),
    MergekitFlag("lora_merge_cache", ("--lora-merge-cache",), "noop",
                 "--lora-merge-cache: no effect; LoRA adapters are applied tensor by tensor in memory, "
                 "nothing is cached", takes_value=True),
    MergekitFlag("lora_merge_dtype", ("--lora-merge-dtype",), "refuse",
                 "--lora-merge-dtype is not supported: the adapter delta is computed in float32 and added "
                 "to the model's weights in their load dtype, as peft/transformers load them (drop the flag)",
                 takes_value=True),
    MergekitFlag("low_cpu_memory", ("--low-cpu-memory",), "noop",
                 "--low-cpu-memory: no effect; mergegate streams one tensor at a time", boolean=True),
    MergekitFlag("read_to_gpu", ("--read-to-gpu",), "noop",
                 "--read-to-gpu: no effect; tensors are moved to --device as they are merged", boolean=True),
    MergekitFlag("multi_gpu", ("--multi-gpu",), "noop",
                 "--multi-gpu: no effect; mergegate merges on one --device", boolean=True),
    MergekitFlag("clone_tensors", ("--clone-tensors",), "noop",
                 "--clone-tensors: no effect; every output tensor is written from its own buffer", boolean=True),
    MergekitFlag("num_threads", ("--num-threads", "-j"), "noop",
                 "--num-threads/-j: no effect; torch's thread settings (OMP_NUM_THREADS) apply", takes_value=True,
                 integer=True),
    MergekitFlag("async_write", ("--async-write",), "noop",
                 "--async-write: no effect; shards are written as the merge streams", boolean=True),
    MergekitFlag("write_threads", ("--write-threads",), "noop",
                 "--write-threads: no effect; shards are written as the merge streams", takes_value=True,
                 integer=True),
)


@dataclass(frozen=True)
class MergekitFlagPlan:
    """What the pasted mergekit options amount to."""

    device: str | None = None  # set by --cuda/--gpu-rich
    seed: int | None = None  # set by --random-seed
    write_card: bool = True
    notes: list[str] = field(default_factory=list)


def interpret_mergekit_flags(given: dict[str, object]) -> MergekitFlagPlan:
    """Read the mergekit options that were given (``{dest: value}``; ``None`` = not given).

    Raises:
        InputError: an option mergegate cannot honour (exit code 2), naming what to do instead.
    """
    notes: list[str] = []
    device: str | None = None
    seed: int | None = None
    write_card = True
    for flag in MERGEKIT_FLAGS:
        value = given.get(flag.dest)
        if value is None:
            continue
        if flag.kind == "refuse":
            if value == flag.refuse_when or (flag.takes_value and value is not None):
                raise InputError(flag.note, field=flag.flags[0])
            continue
        if flag.dest in ("cuda", "gpu_rich"):
            if value:
                device = "cuda"
                notes.append(flag.note)
            continue
        if flag.dest == "random_seed":
            seed = int(value)  # type: ignore[call-overload]
        elif flag.dest == "write_model_card":
            write_card = bool(value)
            if write_card:
                continue  # the default: nothing to say
        notes.append(flag.note)
    return MergekitFlagPlan(device=device, seed=seed, write_card=write_card, notes=notes)


__all__ = ["MERGEKIT_FLAGS", "MergekitFlag", "MergekitFlagPlan", "interpret_mergekit_flags"]
