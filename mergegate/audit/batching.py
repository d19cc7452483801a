"""Batching with CUDA out-of-memory back-off, shared by generators and judges; call counters."""

from __future__ import annotations

import gc
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

from mergegate.errors import AuditError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Forward-pass counters (instrumentation for tests and the benchmark): "generate_batches",
# "judge_forwards", "judge_decodes", "model_loads", "judge_loads".
STATS: Counter[str] = Counter()


def _free_cuda() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - freeing memory is best effort
        pass


def run_with_oom_backoff(fn: Callable[[list[T]], list[R]], items: Sequence[T], batch_size: int, *,
                         what: str) -> list[R]:
    """Apply ``fn`` to ``items`` in batches; on CUDA OOM halve the batch (down to 1) and retry.

    Raises:
        AuditError: a single item still runs out of memory.
    """
    import torch

    out: list[R] = []
    size = max(1, int(batch_size))
    i = 0
    while i < len(items):
        chunk = list(items[i: i + size])
        try:
            results = fn(chunk)
        except torch.cuda.OutOfMemoryError as exc:
            _free_cuda()
            if len(chunk) == 1:
                raise AuditError(f"CUDA out of memory while {what}, even with batch size 1",
                                 hint="use a GPU with more memory, a smaller --max-new-tokens, or "
                                      "--backend vllm; free other processes on the GPU") from exc
            size = max(1, len(chunk) // 2)
            log.warning("CUDA out of memory while %s: retrying with batch size %d", what, size)
            continue
        if len(results) != len(chunk):
            raise AuditError(f"{what}: got {len(results)} results for {len(chunk)} inputs")
        out.extend(results)
        i += len(chunk)
    return out
