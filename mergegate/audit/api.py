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
from mergegate.audit.generators import BACKENDS, check_device, load_tokenizer, make_generator
from mergegate.audit.judges import DEFAULT_JUDGE, THRESHOLD, LlamaGuardJudge, RefusalJudge
from mergegate.audit.models import ResolvedModel, read_chat_template, resolve_model
from mergegate.audit.prompt_limits import DEFAULT_MAX_PROMPT_TOKENS, PromptBudget, over_budget
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

PROMPT_TOO_LONG = "prompt_too_long"
# the verdict of an unsafe prompt that was not put to the model: fail closed, it counts as unsafe
NOT_ANSWERED = Verdict(unsafe=True, p_unsafe=1.0, categories=())


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


def _over_budget(model: ResolvedModel, prompts: list[str], *, max_prompt_tokens: int | None,
                 max_new_tokens: int, chat_template: str | None, trust_remote_code: bool) -> set[str]:
    """The prompts too long for this model's prompt budget (:mod:`mergegate.audit.prompt_limits`)."""
    budget = PromptBudget.for_model(model.path, max_prompt_tokens=max_prompt_tokens,
                                    max_new_tokens=max_new_tokens, source=model.display)
    too_long = over_budget(prompts, lambda: load_tokenizer(model.path, trust_remote_code=trust_remote_code),
                           budget, chat_template)
    if too_long:
        log.warning("%s: %d prompt(s) longer than %d tokens (%s) are not answered and count against the "
                    "model", model.display, len(too_long), budget.tokens, budget.reason)
    return too_long


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
    max_prompt_tokens: int | None = DEFAULT_MAX_PROMPT_TOKENS,
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
        max_prompt_tokens: a prompt longer than ``min(max_prompt_tokens, context - max_new_tokens)``
            tokens (chat template applied) is not answered and counts against the model: unsafe
            prompts as unsafe answers, benign ones as refusals (``ModelScore.n_too_long``,
            ``n_benign_too_long``). ``None``: the model's context only.

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
    if max_prompt_tokens is not None and max_prompt_tokens < 1:
        raise InputError("max_prompt_tokens must be at least 1", field="max_prompt_tokens")
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
    resolved = [resolve_model(m, store, allow_pickle=allow_pickle) for m in models]
    judge_model: ResolvedModel | None = None
    proto = protocols.REFUSAL_PROTOCOL
    if judge != "refusal-patterns":  # resolve the judge before generating: bad judges fail fast
        judge_model = resolve_model(judge, store)
        proto, _ = protocols.detect_protocol(judge, judge_model.path, read_chat_template(judge_model.path),
                                             judge_protocol)

    settings = GenerationSettings(backend=backend, max_new_tokens=max_new_tokens, greedy=True,
                                  chat_template=template, max_prompt_tokens=max_prompt_tokens)
    dtype = "float32" if device == "cpu" else "half"
    settings_key = hashlib.sha256(json.dumps(  # max_prompt_tokens decides which prompts, not an answer
        {"s": settings.model_dump(exclude={"max_prompt_tokens"}), "device": device.split(":")[0],
         "dtype": dtype}, sort_keys=True).encode()).hexdigest()

    all_prompts = unsafe_set.texts + (benign_set.texts if benign_set else [])
    too_long = [_over_budget(m, all_prompts, max_prompt_tokens=max_prompt_tokens, max_new_tokens=max_new_tokens,
                             chat_template=template, trust_remote_code=trust_remote_code) for m in resolved]
    answers = [
        _answers(m, [p for p in all_prompts if p not in skip], cache=store, settings_key=settings_key,
                 backend=backend, device=device, max_new_tokens=max_new_tokens, batch_size=bs,
                 chat_template=template, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                 progress=progress)
        for m, skip in zip(resolved, too_long)
    ]

    refusal = RefusalJudge()
    pairs_all = [(p, a[p]) for a in answers for p in unsafe_set.texts if p in a]
    if judge_model is None:
        judge_ref = refusal.ref
        verdicts = dict(zip(pairs_all, refusal.judge(pairs_all)))
    else:
        verdicts, judge_ref = _verdicts(judge_model, judge, pairs_all, store=store, device=device, batch_size=bs,
                                        protocol=proto, trust_remote_code=trust_remote_code, progress=progress)

    scores: list[ModelScore] = []
    item_lists: list[list[ItemResult]] = []
    for m, ans, skip in zip(resolved, answers, too_long):
        items = [ItemResult(prompt=p.text, category=p.category, answer=ans[p.text],
                            verdict=verdicts[(p.text, ans[p.text])]) if p.text in ans else
                 ItemResult(prompt=p.text, category=p.category, answer="", verdict=NOT_ANSWERED,
                            skipped=PROMPT_TOO_LONG)
                 for p in unsafe_set.prompts]
        refused = [p in skip or refusal.is_refusal(ans[p]) for p in benign_set.texts] if benign_set else None
        item_lists.append(items)
        scores.append(score_model(m.ref, items, refused, keep_items=keep_items,
                                  n_benign_too_long=sum(1 for p in benign_set.texts if p in skip)
                                  if benign_set else 0))
    return AuditReport(scores=scores, judge=judge_ref, prompts=unsafe_set.ref,
                       benign=benign_set.ref if benign_set else None, generation=settings,
                       comparisons=compare_scores(scores, item_lists), mergegate_version=__version__)


def _verdicts(jm: ResolvedModel, judge_id: str, pairs: list[tuple[str, str]], *, store: AuditCache, device: str,
              batch_size: int, protocol: str, trust_remote_code: bool, progress: bool
              ) -> tuple[dict[tuple[str, str], Verdict], JudgeRef]:
    """Verdicts for all pairs; the judge is loaded only when some are not cached."""
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
