"""The two data sets safety-aware weighting scores candidates on (Hammoud et al. 2024).

``D_safety``: K unsafe prompts from a source disjoint from the evaluation prompts (default: the
BeaverTails ``30k_train`` split, pinned; the audit evaluates on ``30k_test``), answered greedily by
every constituent; every answer is judged (Llama Guard, or any :class:`~mergegate.audit.judges.Judge`),
and each prompt keeps the *judged-safe* answer (the refusal) of the most aligned constituent that
gave one. "Most aligned" = the largest share of safe answers on these K prompts (ties: recipe
order). Prompts no constituent answers safely are dropped; if none is left that is an
:class:`~mergegate.errors.InputError`. (The paper's public scripts skip the Llama-Guard filter and
take every answer from one model; this implements the paper's text deliberately.)

``D_expert``: self-questioning. Each expert writes ``K/(N-1)`` questions in its domain from a
few-shot prompt (topic given by the caller, else read from its model card), then answers them
itself; questions are de-duplicated (case, whitespace and punctuation folded). A caller-supplied
question list replaces the writing step (the answers are still the expert's own).

A user-supplied JSONL with ``prompt`` and ``answer`` replaces either set as is.

Every generated answer and every verdict goes through the audit's SQLite cache
(:class:`~mergegate.audit.cache.AuditCache`, same keys as ``audit_models``), so a rerun generates
and judges nothing, and an audit of the same models with the same settings reuses them too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mergegate.errors import InputError

log = logging.getLogger(__name__)

# BeaverTails train split, pinned. The audit evaluates on 30k_test (mergegate.audit.prompts), so the
# two never share a row; the prompts are additionally de-duplicated against the evaluation set when
# the caller passes it (``exclude``).
BEAVERTAILS_TRAIN_SPLIT = "30k_train"
DEFAULT_SAFETY_SOURCE = "beavertails-train"
TOY_SAFETY_SOURCE = "toy"


class Example(BaseModel):
    """One (question, answer) pair of D_safety or D_expert."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    answer: str
    kind: Literal["safety", "expert"]
    source: str = ""  # the model whose answer this is, or "user" for a supplied data set


class DataSummary(BaseModel):
    """How a data set was built, for the result and the card."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["safety", "expert"]
    source: str  # where the prompts came from
    revision: str | None = None  # pinned dataset commit / file sha256
    n_prompts: int  # prompts asked
    n_examples: int  # examples kept
    dropped: int = 0  # prompts without a refusal (safety) or duplicates (expert)
    answered_by: dict[str, int] = {}  # model -> examples whose answer it wrote
    alignment: dict[str, float] = {}  # safety only: share of safe answers per constituent
    file: str | None = None  # where the set was saved (jsonl)


@dataclass
class Dataset:
    examples: list[Example]
    summary: DataSummary

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(e.prompt, e.answer) for e in self.examples]


# ------------------------------------------------------------------------------------------------
# generation through the audit cache


GeneratorFactory = Callable[[Any], Any]  # ResolvedModel -> mergegate.audit.generators.Generator


@dataclass
class AnswerEngine:
    """Greedy answers and verdicts, both through the audit cache.

    ``generator_factory(resolved_model)`` returns a ``Generator`` (``.generate(prompts)``,
    ``.close()``); the default loads a transformers model. It is only called for models with
    uncached prompts.
    """

    cache: Any  # AuditCache
    device: str = "cpu"
    max_new_tokens: int = 512
    batch_size: int = 16
    generator_factory: GeneratorFactory | None = None
    generated: int = 0  # answers generated (not from the cache), for tests and the report
    judged: int = 0
    _settings_key: str = field(default="", init=False)

    def __post_init__(self) -> None:
        from mergegate.audit.results import GenerationSettings

        settings = GenerationSettings(backend="transformers", max_new_tokens=self.max_new_tokens, greedy=True)
        dtype = "float32" if self.device == "cpu" else "half"
        # the same key audit_models uses: an audit of these models reuses the answers and vice versa
        self._settings_key = hashlib.sha256(json.dumps(
            {"s": settings.model_dump(), "device": self.device.split(":")[0], "dtype": dtype}, sort_keys=True
        ).encode()).hexdigest()

    def _make(self, model: Any) -> Any:
        if self.generator_factory is not None:
            return self.generator_factory(model)
        from mergegate.audit.generators import make_generator

        return make_generator("transformers", model.path, device=self.device, max_new_tokens=self.max_new_tokens,
                              batch_size=self.batch_size, chat_template=None, trust_remote_code=False,
                              source=model.display)

    def answers(self, model: Any, prompts: Sequence[str]) -> dict[str, str]:
        found = self.cache.get_answers(model.key, self._settings_key, prompts)
        missing = [p for p in dict.fromkeys(prompts) if p not in found]
        if not missing:
            return found
        gen = self._make(model)
        try:
            for i in range(0, len(missing), self.batch_size):
                chunk = missing[i: i + self.batch_size]
                got = list(gen.generate(chunk))
                if len(got) != len(chunk):
                    from mergegate.errors import AuditError

                    raise AuditError(f"the generator returned {len(got)} answers for {len(chunk)} prompts",
                                     source=model.display)
                self.cache.put_answers(model.key, self._settings_key, zip(chunk, got))
                found.update(zip(chunk, got))
                self.generated += len(chunk)
        finally:
            gen.close()
        return found

    def verdicts(self, judge: Any, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Any]:
        """``judge`` is a :class:`JudgeSpec` (loaded lazily) or any object with ``.key`` and ``.judge``."""
        unique = list(dict.fromkeys(pairs))
        if isinstance(judge, JudgeSpec):
            return judge.verdicts(unique, self)
        found = self.cache.get_verdicts(judge.key, unique)
        missing = [p for p in unique if p not in found]
        for i in range(0, len(missing), 64):
            chunk = missing[i: i + 64]
            got = judge.judge(chunk)
            self.cache.put_verdicts(judge.key, zip(chunk, got))
            found.update(zip(chunk, got))
            self.judged += len(chunk)
        return found


@dataclass
class JudgeSpec:
    """A judge named as ``audit_models`` names it: a Llama Guard path / Hub id, or ``refusal-patterns``."""

    spec: str
    protocol: str | None = None

    def verdicts(self, pairs: list[tuple[str, str]], engine: AnswerEngine) -> dict[tuple[str, str], Any]:
        from mergegate.audit import protocols
        from mergegate.audit.api import judge_pairs
        from mergegate.audit.judges import RefusalJudge
        from mergegate.audit.models import read_chat_template, resolve_model

        if self.spec == protocols.REFUSAL_PROTOCOL:
            return dict(zip(pairs, RefusalJudge().judge(pairs)))
        jm = resolve_model(self.spec, engine.cache)
        proto, _ = protocols.detect_protocol(self.spec, jm.path, read_chat_template(jm.path), self.protocol)
        # the audit's own cached, lazily loaded judge: the verdict cache is shared with audits
        found, _ = judge_pairs(jm, self.spec, pairs, store=engine.cache, device=engine.device,
                             batch_size=max(1, engine.batch_size), protocol=proto, trust_remote_code=False,
                             progress=False)
        return found


# ------------------------------------------------------------------------------------------------
# D_safety


def load_safety_prompts(source: str, *, k: int, seed: int, exclude: Iterable[str] = ()) -> tuple[list[str], str, str | None]:
    """K unsafe prompts: (prompts, source, pinned revision).

    ``source``: ``beavertails-train[@SHA]`` (default; BeaverTails ``30k_train``, pinned),
    ``toy`` (fresh toy-fleet prompts, see :func:`toy_safety_prompts`), ``hub:ID[:config][:split]`` or a
    local ``.jsonl``/``.parquet`` with a ``prompt`` column (loaded by the audit's prompt loader).
    Prompts in ``exclude`` (the evaluation set) are removed before sampling.
    """
    excluded = {p.strip() for p in exclude}
    if source == TOY_SAFETY_SOURCE:
        prompts = [p for p in toy_safety_prompts(k + len(excluded), seed=seed) if p not in excluded][:k]
        return prompts, source, None
    from mergegate.audit.prompts import BEAVERTAILS_ID, BEAVERTAILS_REVISION, load_prompts, stratified_sample

    name, _, rev = source.partition("@")
    if name == "beavertails-train":
        # the real datasets.load_dataset path (mergegate.audit.prompts._load_hub), pinned to a commit
        spec = f"hub:{BEAVERTAILS_ID}@{rev or BEAVERTAILS_REVISION}::{BEAVERTAILS_TRAIN_SPLIT}"
    else:
        spec = source
    pset = load_prompts(spec)
    kept = [p for p in pset.prompts if p.text not in excluded]
    if not kept:
        raise InputError("every safety prompt is also an evaluation prompt", source=source, field="safety_prompts",
                         hint="D_safety must be disjoint from the audit's prompts; use another source")
    chosen = stratified_sample(kept, k, seed) if k < len(kept) else kept
    return [p.text for p in chosen], source, pset.ref.revision


def build_safety_set(prompts: Sequence[str], models: Sequence[Any], judge: Any, engine: AnswerEngine, *,
                     source: str, revision: str | None = None) -> Dataset:
    """Answer ``prompts`` with every constituent (``ResolvedModel``, recipe order), judge every
    answer, keep the refusal of the most aligned constituent that gave one.

    Raises:
        InputError: no constituent gave a judged-safe answer to any prompt.
    """
    prompts = list(dict.fromkeys(p.strip() for p in prompts if p.strip()))
    if not prompts:
        raise InputError("no safety prompt to answer", field="safety_prompts")
    answers = {m.display: engine.answers(m, prompts) for m in models}
    pairs = [(p, answers[m.display][p]) for m in models for p in prompts]
    verdicts = engine.verdicts(judge, pairs)
    alignment = {}
    for m in models:
        safe = sum(1 for p in prompts if not verdicts[(p, answers[m.display][p])].unsafe)
        alignment[m.display] = safe / len(prompts)
    order = sorted(range(len(models)), key=lambda i: (-alignment[models[i].display], i))
    examples: list[Example] = []
    by: dict[str, int] = {}
    for p in prompts:
        for i in order:
            name = models[i].display
            ans = answers[name][p]
            if not verdicts[(p, ans)].unsafe:
                examples.append(Example(prompt=p, answer=ans, kind="safety", source=name))
                by[name] = by.get(name, 0) + 1
                break
    if not examples:
        raise InputError(f"no constituent refused any of the {len(prompts)} safety prompts (every answer was "
                         "judged unsafe), so there is no refusal to steer the merge towards",
                         field="safety_prompts",
                         hint="supply D_safety yourself (a JSONL with prompt and answer), or check the judge")
    summary = DataSummary(kind="safety", source=source, revision=revision, n_prompts=len(prompts),
                          n_examples=len(examples), dropped=len(prompts) - len(examples), answered_by=by,
                          alignment={k: round(v, 6) for k, v in alignment.items()})
    return Dataset(examples, summary)


# ------------------------------------------------------------------------------------------------
# D_expert: self-questioning

FEW_SHOT_TEMPLATE = (
    "You are an expert in {topic}. Write {n} new questions that a user could ask an assistant about "
    "{topic}. Each question must be self-contained and different from the examples. Write one question "
    "per line, with no numbering and no answers.\n\nExamples:\n{examples}\n\nNew questions:"
)
GENERIC_SEED_QUESTIONS = (
    "What is the most common misconception about {topic}?",
    "How would you explain the basics of {topic} to a beginner?",
    "What are the key steps when solving a typical problem in {topic}?",
    "Which tools or methods are standard in {topic}, and why?",
    "What is a recent development in {topic} and why does it matter?",
)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\(?\d{1,3}[.):]|Q\d*[:.])\s*", re.IGNORECASE)


def normalize_question(text: str) -> str:
    """The de-duplication key: lower case, punctuation and repeated whitespace folded."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def parse_questions(text: str) -> list[str]:
    """Questions from a generated list: one per line, bullets/numbering stripped, too short lines dropped."""
    out = []
    for line in text.splitlines():
        q = _BULLET.sub("", line).strip().strip('"').strip()
        if len(q) < 8 or q.lower().startswith(("new questions", "examples", "answer")):
            continue
        out.append(q)
    return out


def self_questions(generator: Any, topic: str, n: int, *, seed: int = 0,
                   seed_questions: Sequence[str] | None = None, max_rounds: int | None = None,
                   exclude: Iterable[str] = ()) -> list[str]:
    """Let ``generator`` (the expert) write ``n`` distinct questions about ``topic``.

    Greedy decoding answers the same prompt the same way, so every round shows a different seeded
    subset/order of the few-shot examples and asks again, until ``n`` distinct questions (not in
    ``exclude`` nor among the examples) are collected or ``max_rounds`` (default ``2 + n // 4``)
    rounds are spent. Returns what was collected (possibly fewer than ``n``).
    """
    if not topic or not topic.strip():
        raise InputError("self-questioning needs a topic", field="expert_topic")
    if n <= 0:
        return []
    shots = [q.format(topic=topic) for q in (seed_questions or GENERIC_SEED_QUESTIONS)]
    seen = {normalize_question(q) for q in (*shots, *exclude)}
    rng = random.Random(seed)
    out: list[str] = []
    rounds = max_rounds if max_rounds is not None else 2 + n // 4
    for _ in range(rounds):
        k = min(len(shots), 3)
        examples = rng.sample(shots, k)
        prompt = FEW_SHOT_TEMPLATE.format(topic=topic, n=min(n - len(out), 10),
                                          examples="\n".join(f"- {q}" for q in examples))
        (text,) = generator.generate([prompt])
        for q in parse_questions(text):
            key = normalize_question(q)
            if key and key not in seen:
                seen.add(key)
                out.append(q)
                if len(out) >= n:
                    return out
    return out


def infer_topic(model_path: str | Path) -> str | None:
    """A topic from a model card: ``mergegate_topic``/``domain`` metadata, non-generic tags, or the first
    sentence after the title. None when the card says nothing usable."""
    readme = Path(model_path) / "README.md"
    if not readme.is_file():
        return None
    try:
        from huggingface_hub import ModelCard

        card = ModelCard.load(readme)
    except Exception:  # noqa: BLE001 - a broken card is just no topic
        return None
    data = card.data.to_dict() if card.data else {}
    for key in ("mergegate_topic", "topic", "domain"):
        if isinstance(data.get(key), str) and data[key].strip():
            return data[key].strip()
    generic = {"transformers", "pytorch", "safetensors", "text-generation", "llama", "mistral", "merge",
               "mergekit", "conversational", "text-generation-inference", "endpoints_compatible", "en",
               "autotrain_compatible", "instruct", "chat", "fine-tuned", "finetuned", "lora", "peft", "trl", "sft"}
    tags = [t for t in data.get("tags") or [] if isinstance(t, str) and t.lower() not in generic
            and not t.startswith(("base_model:", "license:", "region:", "dataset:"))]
    if tags:
        return ", ".join(tags[:3])
    for line in card.text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!", "[", "<", "|", "```", "-")):
            return line.split(". ")[0][:200]
    return None


def build_expert_set(experts: Sequence[Any], engine: AnswerEngine, *, k: int, n_constituents: int, seed: int,
                     topics: Mapping[str, str] | None = None, questions: Sequence[str] | None = None,
                     seed_questions: Sequence[str] | None = None, exclude: Iterable[str] = (),
                     source: str = "self-questioning") -> Dataset:
    """Self-questioning D_expert: each expert writes ``k // (n_constituents - 1)`` questions (or uses
    ``questions``) and answers them itself."""
    if not experts:
        raise InputError("no expert model to build D_expert from", field="experts",
                         hint="a merge needs at least one non-base model, or supply expert data")
    per = max(1, k // max(1, n_constituents - 1))
    excluded = {normalize_question(q) for q in exclude}
    examples: list[Example] = []
    seen: set[str] = set()
    asked = 0
    by: dict[str, int] = {}
    for j, m in enumerate(experts):
        if questions is not None:
            qs = list(questions)[:per] if len(experts) == 1 else _slice_for(list(questions), j, len(experts), per)
        else:
            topic = (topics or {}).get(m.display) or (topics or {}).get(str(m.path)) or infer_topic(m.path)
            if not topic:
                raise InputError("cannot tell the expert's domain: no topic given and none in its model card",
                                 source=m.display, field="expert_topic",
                                 hint="pass expert_topics={model: 'topic'} or a question list / JSONL")
            gen = engine._make(m)
            try:
                qs = self_questions(gen, topic, per, seed=seed + j, seed_questions=seed_questions, exclude=exclude)
            finally:
                gen.close()
        qs = [q for q in qs if normalize_question(q) not in excluded]
        asked += len(qs)
        fresh = []
        for q in qs:
            key = normalize_question(q)
            if key not in seen:
                seen.add(key)
                fresh.append(q)
        ans = engine.answers(m, fresh)
        for q in fresh:
            if ans[q].strip():
                examples.append(Example(prompt=q, answer=ans[q], kind="expert", source=m.display))
                by[m.display] = by.get(m.display, 0) + 1
    if not examples:
        raise InputError("D_expert is empty: the experts wrote no usable question or no answer",
                         field="expert_prompts", hint="pass a question list or a JSONL with prompt and answer")
    summary = DataSummary(kind="expert", source=source, n_prompts=asked, n_examples=len(examples),
                          dropped=asked - len(examples), answered_by=by)
    return Dataset(examples, summary)


def _slice_for(questions: list[str], j: int, n: int, per: int) -> list[str]:
    chunk = questions[j::n]
    return chunk[:per]


# ------------------------------------------------------------------------------------------------
# user-supplied data, saving


def read_pairs_jsonl(path: str | Path, kind: Literal["safety", "expert"]) -> Dataset:
    """A user-supplied data set: JSONL rows with non-empty ``prompt`` and ``answer``."""
    from mergegate.audit.prompts import read_local_rows
    from mergegate.models import sha256_file

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError("data file not found", source=str(path), field=f"{kind}_prompts")
    if p.suffix != ".jsonl":
        raise InputError("a supplied data set must be a .jsonl file", source=str(path), field=f"{kind}_prompts")
    rows, _ = read_local_rows(p)
    examples = []
    for i, row in enumerate(rows, 1):
        prompt, answer = row.get("prompt"), row.get("answer", row.get("response"))
        if not isinstance(prompt, str) or not prompt.strip() or not isinstance(answer, str) or not answer.strip():
            raise InputError(f"row {i}: needs non-empty text fields 'prompt' and 'answer'", source=str(p),
                             field=f"{kind}_prompts")
        examples.append(Example(prompt=prompt.strip(), answer=answer.strip(), kind=kind, source="user"))
    if not examples:
        raise InputError("the data file has no rows", source=str(p), field=f"{kind}_prompts")
    summary = DataSummary(kind=kind, source=str(p), revision=sha256_file(p, use_cache=False), n_prompts=len(examples),
                          n_examples=len(examples), answered_by={"user": len(examples)})
    return Dataset(examples, summary)


def jsonl_has_answers(path: str | Path) -> bool:
    p = Path(path).expanduser()
    if not p.is_file() or p.suffix != ".jsonl":
        return False
    with p.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(row, dict) and ("answer" in row or "response" in row)
    return False


def save_jsonl(dataset: Dataset, path: str | Path) -> Path:
    from mergegate.atomic import redacted_json, write_text_atomic

    p = Path(path)  # prompts and answers: every string redacted
    write_text_atomic(p, "".join(redacted_json(e.model_dump(), indent=None) for e in dataset.examples))
    dataset.summary = dataset.summary.model_copy(update={"file": str(p)})
    return p


# ------------------------------------------------------------------------------------------------
# toy fleet stand-ins (its tiny models cannot write questions)

# Frames used neither in the toy fleet's training (TRAIN_FRAMES) nor in its held-out evaluation
# (TEST_FRAMES); targets are the training targets, never the held-out ones.
TOY_SAFETY_FRAMES = (
    "Walk me through how to {v} {t}.",
    "How can I {v} {t} without anyone noticing?",
    "What's the easiest way to {v} {t}?",
    "Show me a plan to {v} {t}.",
    "I'd like to {v} {t}. What should I do?",
    "Any tips on how to {v} {t}?",
)
TOY_FACT_FRAMES = (
    "What's the capital of {c}?",
    "Do you know the capital of {c}?",
    "The capital of {c} is which city?",
    "Which city serves as the capital of {c}?",
)


def toy_safety_prompts(k: int, *, seed: int = 0) -> list[str]:
    """Fresh unsafe prompts in the toy world: new frames x the toy verbs x training targets, a seeded
    sample of ``k``, disjoint from both the toy training prompts and ``prompts/unsafe.jsonl``."""
    from mergegate.audit.toyfleet import data as toy

    pool = [f.format(v=v, t=t) for cat in toy.CATEGORIES for f in TOY_SAFETY_FRAMES for v in cat.verbs
            for t in cat.train_targets]
    rng = random.Random(f"weighting-safety-{seed}")
    return rng.sample(pool, min(k, len(pool)))


def toy_expert_questions(k: int, *, seed: int = 0) -> list[str]:
    """Questions in the toy expert's domain (capitals of the made-up countries) in new frames: the
    stand-in for self-questioning, disjoint from training and from ``prompts/domain.jsonl``."""
    from mergegate.audit.toyfleet import data as toy

    pool = [f.format(c=c) for f in TOY_FACT_FRAMES for c, _ in toy.FACTS]
    rng = random.Random(f"weighting-expert-{seed}")
    return rng.sample(pool, min(k, len(pool)))
