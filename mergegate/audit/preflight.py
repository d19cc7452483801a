"""Check an audit's inputs before anything expensive happens (a merge built, a model loaded).

``check_audit_inputs`` loads the prompt sets (a missing file, an empty set, a bad column fail here),
resolves the judge and checks that it speaks its Llama Guard protocol: its tokenizer loads, its chat
template (or the protocol's builder) renders a probe conversation, and its vocabulary tells "safe"
from "unsafe" — everything ``LlamaGuardJudge`` needs except the weights themselves, whose files are
checked (headers, finite values) by :func:`mergegate.audit.models.resolve_model`.

Errors name the command-line option (``--prompts``, ``--benign``, ``--judge``) and the fix, because
the caller (``mergegate run``/``audit``/``batch``) reports them before hours of work, not after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mergegate.audit.cache import AuditCache
from mergegate.audit.models import ResolvedModel, read_chat_template, resolve_model
from mergegate.audit.prompts import PromptSet, load_prompts
from mergegate.errors import AuditError, InputError, MergegateError

REFUSAL_JUDGE = "refusal-patterns"
PROMPT_SOURCES_HINT = ("give 'beavertails', 'hub:OWNER/NAME[:config][:split]' or a .jsonl/.jsonl.gz/.csv/.parquet "
                       "file with a 'prompt' column")


@dataclass(frozen=True)
class PromptCheck:
    """A prompt set that loaded: how many prompts it has and how many the audit will use."""

    source: str
    available: int  # prompts in the set before --limit
    used: int  # prompts the audit uses (after --limit)
    limit: int | None
    prompts: PromptSet = field(repr=False, compare=False)  # the whole set, before --limit

    @property
    def capped(self) -> bool:
        """``--limit`` asked for more prompts than the set has (the whole set is used)."""
        return self.limit is not None and self.limit > self.available


@dataclass(frozen=True)
class JudgeCheck:
    """A judge that resolved and speaks its protocol (``protocol == 'refusal-patterns'``: string matching)."""

    id: str
    protocol: str
    path: Path | None = None
    revision: str | None = None


@dataclass(frozen=True)
class AuditInputs:
    prompts: PromptCheck
    benign: PromptCheck | None
    judge: JudgeCheck
    notes: list[str] = field(default_factory=list)  # caps and substitutions worth saying


def _with_option(exc: MergegateError, option: str, hint: str, *, force_hint: bool = False) -> MergegateError:
    """The same error (same class: its exit code), naming the command-line option and the fix."""
    out = type(exc).__new__(type(exc))
    out.__dict__.update(exc.__dict__)  # attributes a subclass keeps (e.g. what it was fetching)
    MergegateError.__init__(out, exc.message, source=exc.source, field=option,
                            hint=hint if force_hint else exc.hint or hint)
    return out


def check_prompts(source: str, *, limit: int | None, seed: int, benign: bool = False,
                  option: str = "--prompts") -> PromptCheck:
    """Load the prompt set ``source`` (as the audit will) and say how many prompts it gives.

    Raises:
        InputError: the file is missing, unreadable, has no ``prompt`` column or no prompt left;
            ``field`` is ``option``.
    """
    try:
        full = load_prompts(source, seed=seed, benign=benign)
    except InputError as exc:
        if getattr(exc, "hub_failure", None) is not None:  # the Hub failed: its error names what, why, the fix
            raise _with_option(exc, option, exc.hint or PROMPT_SOURCES_HINT) from None
        hint = exc.hint or PROMPT_SOURCES_HINT
        if benign:
            hint = ("give 'xstest' or a .jsonl/.jsonl.gz/.csv/.parquet file with a 'prompt' column"
                    if hint.startswith("give 'beavertails'") else hint) + "; or --benign none to skip over-refusal"
        raise _with_option(exc, option, hint, force_hint=True) from None  # the same error class
    used = len(full) if limit is None else min(limit, len(full))
    return PromptCheck(source=source, available=len(full), used=used, limit=limit, prompts=full)


def check_judge(judge: str, *, store: AuditCache, judge_protocol: str | None = None,
                trust_remote_code: bool = False, option: str = "--judge") -> JudgeCheck:
    """Resolve the judge and check it speaks its Llama Guard protocol (weights not loaded).

    Raises:
        InputError / ModelFilesError: not a directory nor a Hub id, broken files, an unknown protocol,
            a tokenizer that cannot tell "safe" from "unsafe", a chat template that does not render.
    """
    if judge == REFUSAL_JUDGE:
        return JudgeCheck(id=judge, protocol=REFUSAL_JUDGE)
    hint = (f"give {option} a local Llama Guard directory (config.json, tokenizer, *.safetensors), a Hub id such as "
            f"meta-llama/Llama-Guard-3-8B, or {REFUSAL_JUDGE}")
    from mergegate.audit.hub_sources import JUDGE_FIXES, judge_why

    try:
        model = resolve_model(judge, store, why=judge_why(judge), fixes=JUDGE_FIXES)
        protocol = _check_protocol(model, judge, judge_protocol=judge_protocol,
                                   trust_remote_code=trust_remote_code)
    except (InputError, AuditError) as exc:
        if getattr(exc, "hub_failure", None) is not None:  # the Hub failed: its error names what, why, the fix
            raise _with_option(exc, option, exc.hint or hint) from None
        if isinstance(exc, AuditError):  # a judge that cannot speak the protocol is a bad --judge
            raise InputError(exc.message, source=exc.source, field=option, hint=exc.hint or hint) from None
        if exc.field == "model":  # resolve_model's words for a model: say what a judge must be
            raise InputError(exc.message, source=exc.source, field=option, hint=hint) from None
        raise _with_option(exc, option, hint) from None
    return JudgeCheck(id=judge, protocol=protocol, path=model.path, revision=model.ref.revision)


def _check_protocol(model: ResolvedModel, judge_id: str, *, judge_protocol: str | None,
                    trust_remote_code: bool) -> str:
    from mergegate.audit import protocols
    from mergegate.audit.generators import load_tokenizer
    from mergegate.audit.judges import LlamaGuardJudge

    tok = load_tokenizer(model.path, trust_remote_code=trust_remote_code)
    if not getattr(tok, "chat_template", None):
        tok.chat_template = read_chat_template(model.path)
    protocol, categories = protocols.detect_protocol(judge_id, model.path, getattr(tok, "chat_template", None),
                                                     judge_protocol)
    try:  # everything the judge does before its first forward pass: template, label tokens, BOS
        LlamaGuardJudge(None, tok, protocol=protocol, judge_id=judge_id, categories=categories)
    except MergegateError:
        raise
    except Exception as exc:  # noqa: BLE001 - a template that does not render is a broken judge
        raise InputError(f"the judge's chat template does not render a {protocol} conversation "
                         f"({type(exc).__name__}: {str(exc)[:200]})", source=judge_id,
                         hint="use a Llama Guard model with its own tokenizer files, or "
                              "--judge-protocol to name its protocol") from None
    return protocol


def check_audit_inputs(*, prompts: str, benign: str | None, judge: str, limit: int | None, seed: int,
                       cache: str | Path | None = None, judge_protocol: str | None = None,
                       trust_remote_code: bool = False) -> AuditInputs:
    """Every check of an audit's inputs that needs no model generation: prompt sets and judge."""
    unsafe = check_prompts(prompts, limit=limit, seed=seed)
    benign_check = None
    if benign is not None and benign.lower() != "none":
        benign_check = check_prompts(benign, limit=limit, seed=seed, benign=True, option="--benign")
    judge_check = check_judge(judge, store=AuditCache(cache), judge_protocol=judge_protocol,
                              trust_remote_code=trust_remote_code)
    notes = [limit_note(c) for c in (unsafe, benign_check) if c is not None and c.capped]
    return AuditInputs(prompts=unsafe, benign=benign_check, judge=judge_check, notes=notes)


def limit_note(check: PromptCheck) -> str:
    """What ``--limit`` larger than a set means, in words (console and report)."""
    return (f"--limit {check.limit} is more than the {check.available} prompts of {check.source}: "
            f"all {check.available} are used")


__all__ = ["AuditInputs", "JudgeCheck", "PromptCheck", "check_audit_inputs", "check_judge", "check_prompts",
           "limit_note", "REFUSAL_JUDGE"]
