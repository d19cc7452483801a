"""Run a merge plan tensor by tensor, streaming inputs from memory maps and outputs to disk.

Inputs are read (zero-copy from the page cache), checked for NaN/Inf and cast on the main thread,
whose torch ops already use every core (a prefetch thread only competed with them on 2 cores);
a background thread checks every merged tensor for NaN/Inf (an overflowing recipe fails here, not
in the judge), then writes and hashes it while the next one is merged. Stochastic methods get a
generator seeded from (seed, tensor name): the result is bit-identical for a seed whatever the
order or device scheduling.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from mergegate.errors import MergeFailure, ModelFilesError
from mergegate.merging.methods.base import MergeInput
from mergegate.merging.plan import MergePlan, TensorTask
from mergegate.merging.tensor_io import ShardedWriter
from mergegate.models.weight_files import all_finite, count_non_finite


def tensor_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _check_output(name: str, result: torch.Tensor) -> None:
    """A merge that produced NaN/±Inf is a failure, never an output (one aminmax pass, as inputs)."""
    if result.is_floating_point() and not all_finite(result):
        bad = count_non_finite(result)
        raise MergeFailure(
            f"the merge produced {bad} NaN/Inf value(s) in this tensor, the first non-finite one of the "
            "output (nothing was written)", field=name,
            hint="the inputs are finite, so the recipe's parameters overflow the compute dtype (e.g. a weight "
                 "like 1e300) or divide by ~0; fix the weights/densities in the recipe")


def _check_and_write(writer: ShardedWriter, name: str, result: torch.Tensor) -> None:
    _check_output(name, result)
    writer.write(name, result)


def load_task_inputs(plan: MergePlan, task: TensorTask, device: torch.device) -> list[torch.Tensor]:
    """The input tensors of one task on ``device``: NaN/Inf checked, cast to the compute dtype (integer
    and bool tensors keep theirs), and (for recipes that align tokenizers) with embedding rows rebuilt
    on the output vocabulary."""
    tensors = []
    for ref, name in task.inputs:
        raw = plan.inputs[ref].reader.get(name)
        if raw.is_floating_point() and not all_finite(raw):
            bad = count_non_finite(raw)
            raise ModelFilesError(f"tensor '{name}' contains {bad} NaN/Inf value(s)", source=str(ref), field=name,
                                  hint="the input checkpoint is broken; re-download or fix it before merging")
        # a private copy-on-write view of the file when no cast is needed: methods may modify it in place
        tensors.append(raw.to(device=device, dtype=task.compute_dtype) if raw.is_floating_point() else raw.to(device))
    if task.vocab is not None:  # rows rebuilt on the output tokenizer's vocabulary first
        tensors = task.vocab.apply(tensors)
    return tensors


def _copy_through(task: TensorTask, tensors: list[torch.Tensor]) -> torch.Tensor:
    """An integer or bool tensor: the inputs must agree, and the result is that tensor (what every
    merge method yields for identical inputs); different values cannot be averaged into integers."""
    first = tensors[task.base_index or 0]
    reference = task.inputs[task.base_index or 0][0]
    for (ref, name), t in zip(task.inputs, tensors):
        if not torch.equal(t, first):
            raise ModelFilesError(
                f"integer/bool tensor '{name}' differs between the inputs ({reference} and {ref}); it "
                "cannot be merged", source=str(ref), field=name,
                hint="integer and bool tensors (quantized weights, masks, position ids) are copied through "
                     "only when every input holds the same values; merge the unquantized models")
    return first


def execute_plan(plan: MergePlan, writer: ShardedWriter, *, device: str = "cpu", seed: int | None = None,
                 progress: bool = False, on_tensor: Callable[[str], None] | None = None) -> None:
    dev = torch.device(device)
    method = plan.method
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan.tasks), unit="tensor", desc="merging", file=sys.stderr,
                   disable=not sys.stderr.isatty())
    writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mergegate-write")
    written: Future[None] | None = None  # at most one tensor in flight to disk
    try:
        for task in plan.tasks:
            tensors = load_task_inputs(plan, task, dev)
            if task.copy_through:
                result = _copy_through(task, tensors)
                if written is not None:
                    written.result()
                written = writes.submit(writer.write, task.out.name, result)
                del tensors, result
                if bar is not None:
                    bar.update(1)
                if on_tensor is not None:
                    on_tensor(task.out.name)
                continue
            generator = None
            if method.spec.stochastic:
                generator = torch.Generator(device=dev)
                generator.manual_seed(tensor_seed(seed or 0, task.out.name))
            inp = MergeInput(tensors=tensors, base_index=task.base_index, per_input=task.per_input,
                             shared=task.shared, name=task.out.name, generator=generator)
            with torch.no_grad():
                out = method.merge(inp)
            if tuple(out.shape) != task.out.shape:
                raise MergeFailure(f"merge_method '{method.spec.name}' produced shape {tuple(out.shape)} for "
                                   f"{task.out.name}, expected {task.out.shape}")
            result = out.to(task.out.dtype)
            if written is not None:
                written.result()
            # checked on the write thread, in order: the first bad tensor is the one reported
            written = writes.submit(_check_and_write, writer, task.out.name, result)
            del tensors, inp, out, result
            if bar is not None:
                bar.update(1)
            if on_tensor is not None:
                on_tensor(task.out.name)
        if written is not None:
            written.result()
    finally:
        writes.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
