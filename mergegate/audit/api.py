"""Library entry point: ``audit_models``."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from mergegate.audit import protocols
from mergegate.audit.batching import STATS
from mergegate.audit.cache import AuditCache
from mergegate.audit.generators import BACKENDS, check_device, make_generator
from mergegate.audit.hub_sources import JUDGE_FIXES, judge_why
from mergegate.audit.judges import DEFAULT_JUDGE, THRESHOLD, LlamaGuardJudge, RefusalJudge
from mergegate.audit.models import ResolvedModel, read_chat_template, resolve_model
from mergegate.audit.prompts import PromptSet, load_prompts
from mergegate.audit.results import (
    AuditReport,
    GenerationSettings,
    ItemResult,
    JudgeRef,
    ModelScore,
    Verdict,
)
from mergegate.audit.scoring import compare_scores, score_model
from mergegate.errors import InputError

log = logging.getLogger(__name__)


def _progress(progress: bool, total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="prompt", file=sys.stderr, leave=False,
                disable=not (progress and sys.stderr.isatty()) or total == 0)


def _read_template(chat_template: str | None) -> str | None:
    if chat_template is None:
        return None
    path = Path(chat_template).expanduser()
    if "{" not in chat_template and path.is_file():
        return path.read_text(encoding="utf-8")
    if "{" not in chat_template:
        raise InputError("chat template file not found", source=chat_template, field="chat_template",
                         hint="give a Jinja template file (or the template text itself)")
    return chat_template


def _default_batch_size(backend: str, device: str) -> int:
    if backend == "vllm":
        return 256  # vLLM schedules internally; this is only the cache commit granularity
    return 32 if device.startswith("cuda") else 16


def _answers(model: ResolvedModel, prompts: list[str], *, cache: AuditCache, settings_key: str,
             backend: str, device: str, max_new_tokens: int, batch_size: int, chat_template: str | None,
             trust_remote_code: bool, allow_pickle: bool, progress: bool) -> dict[str, str]:
    """Answers for ``prompts``: cached ones looked up, the rest generated and committed per batch."""
    found = cache.get_answers(model.key, settings_key, prompts)
    missing = [p for p in dict.fromkeys(prompts) if p not in found]
    if not missing:
        return found
    if chat_template is None and read_chat_template(model.path) is None:
        raise InputError("the model has no chat template", source=model.display, field="chat_template",
                         hint="pass --chat-template FILE (a Jinja chat template) or use an instruct model")
    gen = make_generator(backend, model.path, device=device, max_new_tokens=max_new_tokens,
                         batch_size=batch_size, chat_template=chat_template,
                         trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, source=model.display)
    try:
        with _progress(progress, len(missing), f"generate {Path(model.display).name}") as bar:
            for i in range(0, len(missing), batch_size):
                chunk = missing[i: i + batch_size]
                answers = gen.generate(chunk)
                cache.put_answers(model.key, settings_key, zip(chunk, answers))  # commit per batch
                found.update(zip(chunk, answers))
                bar.update(len(chunk))
    finally:
        gen.close()
    return found


def audit_models(
    models: list[str],
    *,
    prompts: str = "beavertails",
    benign: str | None = "xstest",
    judge: str = DEFAULT_JUDGE,
    backend: str = "transformers",
    device: str = "cpu",
    limit: int | None = None,
    seed: int = 0,
    max_new_tokens: int = 512,
    batch_size: int | None = None,
    cache: str | Path | None = None,
    chat_template: str | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
    judge_protocol: str | None = None,
    allow_pickle: bool = False,
    keep_items: bool = True,
) -> AuditReport:
    """Generate answers to unsafe (and benign) prompts with each model, judge them, score them.

    Args:
        models: local model directories or Hub ids (``owner/name[@revision]``).
        prompts: unsafe prompt source (see :mod:`mergegate.audit.prompts`).
        benign: benign prompt source for over-refusal, or ``None``/``"none"`` to skip it.
        judge: Llama Guard Hub id or local path, or ``"refusal-patterns"`` for string matching.
        backend: ``transformers`` or ``vllm`` (needs ``mergegate[vllm]`` and CUDA).
        device: ``cpu`` or ``cuda[:N]``.
        limit: audit a seeded, category-stratified sample of this many unsafe prompts
            (and at most this many benign prompts).
        seed: seed of that sample.
        max_new_tokens: generation budget per answer (greedy decoding).
        batch_size: prompts per batch (default 16 on CPU, 32 on CUDA); halved on CUDA OOM.
        cache: cache file or directory (default ``$MERGEGATE_CACHE_DIR`` or the user cache dir).
        chat_template: a Jinja chat template (file path or text) overriding the models' own.
        trust_remote_code: allow custom model code from the Hub (off by default).
        progress: show tqdm bars on stderr (only when stderr is a terminal).
        judge_protocol: force the judge protocol (``llama-guard-1`` .. ``llama-guard-4``).
        allow_pickle: accept ``*.bin`` (pickle) weights when a model has no safetensors.
        keep_items: keep per-prompt items in the report.

    Returns:
        An :class:`AuditReport` with one :class:`ModelScore` per model, in the given order.

    Raises:
        InputError: bad prompts, model or judge arguments (exit 2).
        AuditError: generation or judging failed (exit 3); ``JudgeProtocolError`` when the judge
            does not answer safe/unsafe; ``BackendUnavailableError`` when vllm is missing.
    """
    from mergegate import __version__

    if not models:
        raise InputError("no model to audit", field="models")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}'", field="backend", hint=f"use one of {', '.join(BACKENDS)}")
    if max_new_tokens < 1:
        raise InputError("max_new_tokens must be at least 1", field="max_new_tokens")
    check_device(device)
    template = _read_template(chat_template)
    bs = batch_size or _default_batch_size(backend, device)
    if bs < 1:
        raise InputError("batch_size must be at least 1", field="batch_size")
    store = AuditCache(cache)

    unsafe_set: PromptSet = load_prompts(prompts, limit=limit, seed=seed)
    benign_set: PromptSet | None = None
    if benign is not None and benign.lower() != "none":
        benign_set = load_prompts(benign, limit=limit, seed=seed, benign=True)
    resolved = [resolve_model(m, store, allow_pickle=allow_pickle, why="the models to audit") for m in models]
    judge_model: ResolvedModel | None = None
    proto = protocols.REFUSAL_PROTOCOL
    if judge != "refusal-patterns":  # resolve the judge before generating: bad judges fail fast
        judge_model = resolve_model(judge, store, why=judge_why(judge), fixes=JUDGE_FIXES)
        proto, _ = protocols.detect_protocol(judge, judge_model.path, read_chat_template(judge_model.path),
                                             judge_protocol)

    settings = GenerationSettings(backend=backend, max_new_tokens=max_new_tokens, greedy=True,
                                  chat_template=template)
    dtype = "float32" if device == "cpu" else "half"
    settings_key = hashlib.sha256(json.dumps(
        {"s": settings.model_dump(), "device": device.split(":")[0], "dtype": dtype}, sort_keys=True
    ).encode()).hexdigest()

    all_prompts = unsafe_set.texts + (benign_set.texts if benign_set else [])
    answers = [
        _answers(m, all_prompts, cache=store, settings_key=settings_key, backend=backend, device=device,
                 max_new_tokens=max_new_tokens, batch_size=bs, chat_template=template,
                 trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, progress=progress)
        for m in resolved
    ]

    refusal = RefusalJudge()
    pairs_all = [(p, a[p]) for a in answers for p in unsafe_set.texts]
    if judge_model is None:
        judge_ref = refusal.ref
        verdicts = dict(zip(pairs_all, refusal.judge(pairs_all)))
    else:
        verdicts, judge_ref = judge_pairs(judge_model, judge, pairs_all, store=store, device=device, batch_size=bs,
                                        protocol=proto, trust_remote_code=trust_remote_code, progress=progress)

    scores: list[ModelScore] = []
    item_lists: list[list[ItemResult]] = []
    for m, ans in zip(resolved, answers):
        items = [ItemResult(prompt=p.text, category=p.category, answer=ans[p.text],
                            verdict=verdicts[(p.text, ans[p.text])]) for p in unsafe_set.prompts]
        refused = refusal.refused([ans[p] for p in benign_set.texts]) if benign_set else None
        item_lists.append(items)
        scores.append(score_model(m.ref, items, refused, keep_items=keep_items))
    return AuditReport(scores=scores, judge=judge_ref, prompts=unsafe_set.ref,
                       benign=benign_set.ref if benign_set else None, generation=settings,
                       comparisons=compare_scores(scores, item_lists), mergegate_version=__version__)


def judge_pairs(jm: ResolvedModel, judge_id: str, pairs: list[tuple[str, str]], *, store: AuditCache, device: str,
              batch_size: int, protocol: str, trust_remote_code: bool, progress: bool
              ) -> tuple[dict[tuple[str, str], Verdict], JudgeRef]:
    """Verdicts for all (prompt, answer) pairs from the judge ``jm`` (the audit's verdict cache is
    shared); the judge is loaded only when some are not cached."""
    unique = list(dict.fromkeys(pairs))
    proto = protocol
    # the judge's cache key without loading it: weights + tokenizer/template/spec files, protocol
    judge_key = hashlib.sha256(f"{jm.key}:{proto}:{THRESHOLD}:v1".encode()).hexdigest()
    found = store.get_verdicts(judge_key, unique)
    missing = [pr for pr in unique if pr not in found]
    ref = JudgeRef(id=judge_id, revision=jm.ref.revision, protocol=proto)
    if missing:
        judge = LlamaGuardJudge.load(jm.path, judge_id=judge_id, revision=jm.ref.revision, weights_key=jm.key,
                                     protocol=proto, device=device, batch_size=batch_size,
                                     trust_remote_code=trust_remote_code)
        try:
            with _progress(progress, len(missing), "judge") as bar:
                step = max(batch_size, 32)
                for i in range(0, len(missing), step):
                    chunk = missing[i: i + step]
                    got = judge.judge(chunk)
                    store.put_verdicts(judge_key, zip(chunk, got))
                    found.update(zip(chunk, got))
                    bar.update(len(chunk))
        finally:
            judge.close()
        STATS["judge_pairs"] += len(missing)
    return found, ref
