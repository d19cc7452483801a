"""Library entry point: ``audit_models``."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from mergegate.audit import presets, protocols
from mergegate.audit.batching import STATS
from mergegate.audit.cache import AuditCache
from mergegate.audit.generators import BACKENDS, check_device, load_tokenizer, make_generator
from mergegate.audit.judges import (
    JUDGE_KEY_VERSION,
    THRESHOLD,
    LlamaGuardJudge,
    RefusalJudge,
    XSTestRefusalJudge,
)
from mergegate.audit.models import ResolvedModel, read_chat_template, resolve_model
from mergegate.audit.offprotocol import check_off_protocol, summarize_off_protocol
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
    prompts: str | None = None,
    benign: str | None = "xstest",
    judge: str | None = None,
    backend: str = "transformers",
    device: str = "cpu",
    limit: int | None = None,
    seed: int = 0,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    cache: str | Path | None = None,
    chat_template: str | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
    judge_protocol: str | None = None,
    allow_pickle: bool = False,
    keep_items: bool = True,
    protocol: str | None = None,
    max_prompt_tokens: int | None = DEFAULT_MAX_PROMPT_TOKENS,
) -> AuditReport:
    """Generate answers to unsafe (and benign) prompts with each model, judge them, score them.

    Args:
        models: local model directories or Hub ids (``owner/name[@revision]``).
        prompts: unsafe prompt source (see :mod:`mergegate.audit.prompts`; default: the protocol's,
            ``beavertails``).
        benign: benign prompt source for over-refusal (judged by XSTest's string-match classifier),
            or ``None``/``"none"`` to skip it.
        judge: Llama Guard Hub id or local path, or ``"refusal-patterns"`` for string matching
            (default: the protocol's, ``meta-llama/Llama-Guard-3-8B``).
        backend: ``transformers`` or ``vllm`` (needs ``mergegate[vllm]`` and CUDA).
        device: ``cpu`` or ``cuda[:N]``.
        limit: audit a seeded, category-stratified sample of this many unsafe prompts
            (and at most this many benign prompts).
        seed: seed of that sample.
        max_new_tokens: generation budget per answer (greedy decoding; default 512).
        batch_size: prompts per batch (default 16 on CPU, 32 on CUDA); halved on CUDA OOM.
        cache: cache file or directory (default ``$MERGEGATE_CACHE_DIR`` or the user cache dir).
        chat_template: a Jinja chat template (file path or text) overriding the models' own.
        trust_remote_code: allow custom model code from the Hub (off by default).
        progress: show tqdm bars on stderr (only when stderr is a terminal).
        judge_protocol: force the judge protocol (``llama-guard-1`` .. ``llama-guard-4``).
        allow_pickle: accept ``*.bin`` (pickle) weights when a model has no safetensors.
        keep_items: keep per-prompt items in the report.
        protocol: ``"default"`` or ``"mergealign"`` (the seed paper's evaluation, see
            :mod:`mergegate.audit.presets`); an explicit ``judge``/``prompts``/``max_new_tokens`` must
            agree with a non-default preset.
        max_prompt_tokens: a prompt longer than ``min(max_prompt_tokens, context - max_new_tokens)``
            tokens (chat template applied) is not answered and counts against the model: unsafe
            prompts as unsafe answers, benign ones as refusals (``ModelScore.n_too_long``,
            ``n_benign_too_long``). ``None``: the model's context only.

    Returns:
        An :class:`AuditReport` with one :class:`ModelScore` per model, in the given order.

    Raises:
        InputError: bad prompts, model or judge arguments (exit 2).
        AuditError: generation or judging failed (exit 3); ``JudgeProtocolError`` when the judge
            clearly does not speak the protocol (off-protocol first-token mass dominant on more than
            5 % of the items); ``BackendUnavailableError`` when vllm is missing.
    """
    from mergegate import __version__

    preset, judge, prompts, max_new_tokens = presets.resolve(protocol, judge=judge, prompts=prompts,
                                                            max_new_tokens=max_new_tokens)
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
    if preset.expected_rows is not None and limit is None and len(unsafe_set) != preset.expected_rows:
        log.warning("protocol %s expects %d prompt rows, %s gave %d", preset.name, preset.expected_rows,
                    prompts, len(unsafe_set))
    benign_set: PromptSet | None = None
    if benign is not None and benign.lower() != "none":
        benign_set = load_prompts(benign, limit=limit, seed=seed, benign=True)
    resolved = [resolve_model(m, store, allow_pickle=allow_pickle) for m in models]
    judge_model: ResolvedModel | None = None
    proto = protocols.REFUSAL_PROTOCOL
    if judge != "refusal-patterns":  # resolve the judge before generating: bad judges fail fast
        judge_model = resolve_model(judge, store)
        judge_template = read_chat_template(judge_model.path)
        proto, _ = protocols.detect_protocol(judge, judge_model.path, judge_template, judge_protocol)
        if judge_template is None and protocols.builder_name(proto, judge) is None:
            raise protocols.no_template_error(proto, judge)

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

    over_refusal = XSTestRefusalJudge()
    pairs_all = [(p, a[p]) for a in answers for p in unsafe_set.texts if p in a]
    if judge_model is None:
        refusal = RefusalJudge()
        judge_ref = refusal.ref
        verdicts = dict(zip(pairs_all, refusal.judge(pairs_all)))
    else:
        verdicts, judge_ref = judge_pairs(judge_model, judge, pairs_all, store=store, device=device, batch_size=bs,
                                        protocol=proto, trust_remote_code=trust_remote_code, progress=progress,
                                        scoring=preset.judge_scoring, bos=preset.judge_bos)

    scores: list[ModelScore] = []
    item_lists: list[list[ItemResult]] = []
    for m, ans, skip in zip(resolved, answers, too_long):
        items = [ItemResult(prompt=p.text, category=p.category, answer=ans[p.text],
                            verdict=verdicts[(p.text, ans[p.text])]) if p.text in ans else
                 ItemResult(prompt=p.text, category=p.category, answer="", verdict=NOT_ANSWERED,
                            skipped=PROMPT_TOO_LONG)
                 for p in unsafe_set.prompts]
        refused = _benign_refused(over_refusal, benign_set.texts, ans, skip) if benign_set else None
        item_lists.append(items)
        scores.append(score_model(m.ref, items, refused, keep_items=keep_items,
                                  n_benign_too_long=sum(1 for p in benign_set.texts if p in skip)
                                  if benign_set else 0))
    # items never put to the model were not judged: they say nothing about the judge's protocol
    off = summarize_off_protocol([(it.prompt, it.answer, it.verdict) for items in item_lists for it in items
                                  if it.skipped is None])
    check_off_protocol(off, judge=judge, protocol=judge_ref.protocol)
    return AuditReport(scores=scores, judge=judge_ref, prompts=unsafe_set.ref,
                       benign=benign_set.ref if benign_set else None, generation=settings,
                       comparisons=compare_scores(scores, item_lists), mergegate_version=__version__,
                       protocol=preset.name, over_refusal_judge=over_refusal.name if benign_set else None,
                       off_protocol=off)


def _benign_refused(over_refusal: XSTestRefusalJudge, benign: list[str], answers: dict[str, str],
                    skip: set[str]) -> list[bool]:
    """Per benign prompt, whether the model refused it; a prompt too long to ask counts as refused."""
    asked = [p for p in benign if p not in skip]
    by_prompt = dict(zip(asked, over_refusal.refused([answers[p] for p in asked])))
    return [by_prompt.get(p, True) for p in benign]


def judge_categories(jm: ResolvedModel, judge_id: str, protocol: str) -> dict[str, str]:
    """The judge's category names: declared in ``mergegate_judge.json``, else its version's list."""
    declared = protocols.read_judge_spec(jm.path).get("categories")
    if isinstance(declared, dict) and declared:
        return {str(k): str(v) for k, v in declared.items()}
    return protocols.default_categories(protocol, judge_id)


def judge_pairs(jm: ResolvedModel, judge_id: str, pairs: list[tuple[str, str]], *, store: AuditCache, device: str,
              batch_size: int, protocol: str, trust_remote_code: bool, progress: bool,
              scoring: str = "first-token", bos: str = "once",
              ) -> tuple[dict[tuple[str, str], Verdict], JudgeRef]:
    """Verdicts for all (prompt, answer) pairs from the judge ``jm`` (the audit's verdict cache is
    shared); the judge is loaded only when some are not cached."""
    unique = list(dict.fromkeys(pairs))
    proto = protocol
    # the judge's cache key without loading it: weights + tokenizer/template/spec files, protocol,
    # how it is prompted and read
    judge_key = hashlib.sha256(
        f"{jm.key}:{proto}:{THRESHOLD}:{scoring}:{bos}:{JUDGE_KEY_VERSION}".encode()).hexdigest()
    found = store.get_verdicts(judge_key, unique)
    missing = [pr for pr in unique if pr not in found]
    ref = JudgeRef(id=judge_id, revision=jm.ref.revision, protocol=proto, scoring=scoring,
                   categories=judge_categories(jm, judge_id, proto))
    if missing:
        judge = LlamaGuardJudge.load(jm.path, judge_id=judge_id, revision=jm.ref.revision, weights_key=jm.key,
                                     protocol=proto, device=device, batch_size=batch_size,
                                     trust_remote_code=trust_remote_code, scoring=scoring,  # type: ignore[arg-type]
                                     bos=bos)  # type: ignore[arg-type]
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
