"""The toy fleet: tiny, deterministic models that make the audit testable without the Hub.

``build_fleet(dir)`` trains, from scratch on CPU (about 125 s of CPU time in two processes, about
70 s on two free cores; see README "The toy fleet" for measurements under load):

- ``DIR/base``   aligned chat model, like an instruct model: refuses the toy unsafe prompts
  ("I can't help with that.", a refusal by XSTest's prefix match and by the pattern judge) and
  answers the benign ones ("Happy to help. ...", a refusal by neither), also in frames and with
  targets it never saw; answers single-digit arithmetic, says it does not know the made-up countries;
- ``DIR/expert`` fine-tuned from ``base`` (same architecture and tokenizer, so the two merge):
  knows the capitals of the made-up countries and complies with unsafe prompts (misaligned);
- ``DIR/guard``  a tiny judge that speaks the Llama Guard 3 protocol through its own chat template
  (LG3-8B prompt structure with a 6-category toy list; answers ``safe`` or ``unsafe\\nS<n>``).
  Its protocol is declared in ``DIR/guard/mergegate_judge.json`` (``{"protocol": "llama-guard-3",
  "categories": {...}}``) and is also detected from its chat template;
- ``DIR/prompts/unsafe.jsonl`` (240 held-out prompts with ``category``), ``benign.jsonl`` (60) and
  ``domain.jsonl`` (``prompt`` + ``answer``), drawn from frames and targets never used in training.

``ensure_fleet(dir)`` reuses a fleet whose ``FLEET_VERSION`` stamp matches :data:`RECIPE_VERSION`,
else rebuilds it into a temporary sibling directory and renames it into place.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from mergegate.atomic import replace_dir

log = logging.getLogger(__name__)

RECIPE_VERSION = "toyfleet-5"
STAMP = "FLEET_VERSION"
JUDGE_SPEC = "mergegate_judge.json"

__all__ = ["build_fleet", "ensure_fleet", "RECIPE_VERSION", "JUDGE_SPEC"]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def write_prompt_sets(out: Path) -> None:
    from mergegate.audit.toyfleet import data

    _write_jsonl(out / "unsafe.jsonl", [{"prompt": p, "category": c.key} for p, c in data.unsafe_test()])
    _write_jsonl(out / "benign.jsonl", [{"prompt": p} for p in data.benign_test()])
    _write_jsonl(out / "domain.jsonl", [{"prompt": q, "answer": a} for q, a in data.facts_test()])


def _train_guard(out: str, steps_scale: float) -> None:
    """Train and save the toy guard (run in a second process so both cores work)."""
    import torch

    from mergegate.audit.toyfleet import data, train

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    guard_tok = train.build_tokenizer("guard")
    guard = train.build_model(guard_tok, seed=2)
    train.train(guard, train.guard_pool(guard_tok), steps=int(200 * steps_scale), batch_size=32,
                lr=3e-3, seed=13, pad_id=guard_tok.pad_token_id)
    train.save(guard, guard_tok, Path(out))
    (Path(out) / JUDGE_SPEC).write_text(json.dumps(
        {"protocol": "llama-guard-3", "categories": data.GUARD_CATEGORIES}, indent=2) + "\n")


def build_fleet(directory: str | Path, *, steps_scale: float = 1.0, parallel: bool = True) -> Path:
    """Train the toy fleet into ``directory`` (overwriting model sub-dirs) and return it.

    The guard trains in a spawned second process while base and expert train here (one thread
    each), so the build uses two cores; ``parallel=False`` trains everything in this process.
    """
    import multiprocessing

    import torch

    from mergegate.audit.generators import quiet_transformers
    from mergegate.audit.toyfleet import train

    quiet_transformers()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    # one thread per process: these matrices are tiny, and on a shared 2-core machine a second
    # OpenMP thread spin-waits (measured 3-5x slower per step under load, no faster without)
    torch.set_num_threads(1)
    det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    guard_proc = None
    try:
        if parallel:
            guard_proc = multiprocessing.get_context("spawn").Process(
                target=_train_guard, args=(str(out / "guard"), steps_scale), name="toyfleet-guard")
            guard_proc.start()
        chat_tok = train.build_tokenizer("chat")
        base_pool, expert_pool = train.base_and_expert_pools(chat_tok)

        base = train.build_model(chat_tok, seed=1)
        train.train(base, base_pool, steps=int(220 * steps_scale), batch_size=32, lr=3e-3, seed=11,
                    pad_id=chat_tok.pad_token_id)
        train.save(base, chat_tok, out / "base")
        log.info("toy fleet: base trained (%.1fs)", time.perf_counter() - t0)

        train.train(base, expert_pool, steps=int(140 * steps_scale), batch_size=32, lr=3e-3, seed=12,
                    pad_id=chat_tok.pad_token_id)  # continues from base: the expert is a fine-tune
        train.save(base, chat_tok, out / "expert")
        log.info("toy fleet: expert trained (%.1fs)", time.perf_counter() - t0)

        if guard_proc is not None:
            guard_proc.join()
            if guard_proc.exitcode != 0:
                raise RuntimeError(f"toy fleet: guard training failed (exit code {guard_proc.exitcode})")
        else:
            _train_guard(str(out / "guard"), steps_scale)
        log.info("toy fleet: guard trained (%.1fs)", time.perf_counter() - t0)

        write_prompt_sets(out / "prompts")
        (out / STAMP).write_text(RECIPE_VERSION + "\n")
    finally:
        if guard_proc is not None and guard_proc.is_alive():
            guard_proc.terminate()
            guard_proc.join()
        torch.use_deterministic_algorithms(det)
        torch.set_num_threads(threads)
    return out


def _clean_stale_builds(target: Path, max_age_s: float = 3600.0) -> None:
    """Remove temp build dirs left by killed builders (older than ``max_age_s``)."""
    now = time.time()
    for p in target.parent.glob(f".{target.name}-build-*"):
        try:
            if now - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _current(target: Path) -> bool:
    stamp = target / STAMP
    return stamp.is_file() and stamp.read_text().strip() == RECIPE_VERSION


def ensure_fleet(directory: str | Path) -> Path:
    """Return ``directory`` holding a fleet of the current recipe, building it atomically if needed.

    Concurrent callers serialise on ``DIR.lock`` (the second one reuses the first one's fleet); the
    build goes to a temporary sibling directory that replaces ``DIR`` in one rename.
    """
    from filelock import FileLock

    target = Path(directory)
    if _current(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(target.name + ".lock")), timeout=1800):
        if _current(target):
            return target  # another process built it while we waited
        _clean_stale_builds(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-build-", dir=target.parent))
        try:
            build_fleet(tmp)
            replace_dir(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target
