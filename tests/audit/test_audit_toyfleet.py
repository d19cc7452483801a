"""The toy fleet: layout, loadable offline, deterministic, held-out prompt sets, reuse by stamp."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from mergegate.audit.toyfleet import RECIPE_VERSION, build_fleet, ensure_fleet
from mergegate.audit.toyfleet import data


def test_fleet_layout_and_offline_loading(toy_fleet: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    for name in ("base", "expert", "guard"):
        d = toy_fleet / name
        for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
            assert (d / f).is_file(), d / f
        assert list(d.glob("*.safetensors")) and not list(d.glob("*.bin"))
        cfg = AutoConfig.from_pretrained(d)
        assert cfg.model_type == "llama" and cfg.tie_word_embeddings is False
        tok = AutoTokenizer.from_pretrained(d)
        assert tok.chat_template
    assert json.loads((toy_fleet / "guard" / "mergegate_judge.json").read_text())["protocol"] == "llama-guard-3"
    base_cfg = json.loads((toy_fleet / "base" / "config.json").read_text())
    expert_cfg = json.loads((toy_fleet / "expert" / "config.json").read_text())
    assert base_cfg == expert_cfg  # same architecture: mergeable
    assert (toy_fleet / "base" / "tokenizer.json").read_bytes() == (toy_fleet / "expert" / "tokenizer.json").read_bytes()


def test_prompt_sets_are_held_out(toy_fleet: Path) -> None:
    rows = [json.loads(x) for x in (toy_fleet / "prompts" / "unsafe.jsonl").read_text().splitlines()]
    assert len(rows) >= 200 and len({r["prompt"] for r in rows}) == len(rows)
    assert {r["category"] for r in rows} == {c.key for c in data.CATEGORIES}
    train_unsafe = {p for p, _ in data.unsafe_train()}
    assert not train_unsafe & {r["prompt"] for r in rows}
    for r in rows:  # no training frame or training target in a held-out prompt
        assert not any(t in r["prompt"] for c in data.CATEGORIES for t in c.train_targets if t not in c.test_targets)
    benign = [json.loads(x)["prompt"] for x in (toy_fleet / "prompts" / "benign.jsonl").read_text().splitlines()]
    assert len(benign) == 60 and not set(benign) & set(data.benign_train())
    domain = [json.loads(x) for x in (toy_fleet / "prompts" / "domain.jsonl").read_text().splitlines()]
    assert all(set(d) == {"prompt", "answer"} for d in domain)
    assert not {d["prompt"] for d in domain} & {q for q, _ in data.facts_train()}


def _words(frames: tuple[str, ...]) -> set[str]:
    return {w for f in frames for w in re.findall(r"[a-z']+", f.lower())} - {"v", "t"}


def test_synthetic_training_frames_keep_held_out_frames_held_out() -> None:
    """The chat models learn from random frames that only the verb decides; their filler words
    occur neither in the held-out frames nor in the weighting's fresh toy frames."""
    from mergegate.weighting.data import TOY_SAFETY_FRAMES

    fillers = {w.lower() for w in data.FILLER_WORDS}
    assert not fillers & _words(data.TEST_FRAMES)
    assert not fillers & _words(TOY_SAFETY_FRAMES)
    unsafe_verbs = {v for c in data.CATEGORIES for v in c.verbs}
    rng = random.Random(0)
    for _ in range(500):
        frame = data.synthetic_frame(rng)
        assert frame.count("{v}") == 1 and frame.count("{t}") == 1
        benign = data.sample_benign(rng, synthetic=1.0, cross=0.5)
        assert not any(re.search(rf"\b{v}\b", benign) for v in unsafe_verbs), benign
        prompt, cat = data.sample_unsafe(rng, synthetic=1.0, cross=0.5)
        assert any(v in prompt for v in cat.verbs)


def test_fast_encoder_matches_the_chat_template() -> None:
    """Training encodes through ``_Encoder`` (the template rendered once); it must equal the chat
    template + tokenizer, also around the verbs, which the chat tokenizer holds as single tokens."""
    from mergegate.audit.toyfleet import train

    tok = train.build_tokenizer("chat")
    for verb in ("steal", "beat up", "build a bomb from", "paint"):
        (token,) = tok(verb, add_special_tokens=False)["input_ids"]
        assert tok.decode([token]) == verb
    assert len(tok("problem", add_special_tokens=False)["input_ids"]) == len("problem")  # not "rob"
    fast = train._Encoder(tok, guard=False)
    rng = random.Random(1)
    for _ in range(100):
        prompt = data.sample_unsafe(rng, synthetic=0.5, cross=0.25)[0] if rng.random() < 0.5 else \
            data.sample_benign(rng, synthetic=0.5, cross=0.25)
        assert fast(prompt, data.REFUSAL) == train.encode_chat(tok, prompt, data.REFUSAL), prompt


def test_ensure_fleet_reuses_a_matching_stamp(toy_fleet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mergegate.audit.toyfleet as tf

    assert (toy_fleet / "FLEET_VERSION").read_text().strip() == RECIPE_VERSION
    monkeypatch.setattr(tf, "build_fleet", lambda d: pytest.fail("rebuilt a fleet whose stamp matched"))
    assert ensure_fleet(toy_fleet) == toy_fleet


@pytest.mark.slow
def test_build_is_deterministic_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny-scale builds in one process and in two give byte-identical weights; ensure_fleet swaps
    a stale fleet in with one rename and leaves no temp dirs."""
    import hashlib

    import mergegate.audit.toyfleet as tf

    def digest(d: Path) -> str:
        return hashlib.sha256(b"".join((d / n / "model.safetensors").read_bytes()
                                       for n in ("base", "expert", "guard"))).hexdigest()

    a = build_fleet(tmp_path / "a", steps_scale=0.01, parallel=False)
    b = build_fleet(tmp_path / "b", steps_scale=0.01, parallel=True)
    assert digest(a) == digest(b)

    stale = tmp_path / "fleet"
    stale.mkdir()
    (stale / "FLEET_VERSION").write_text("old-recipe\n")
    (stale / "leftover.txt").write_text("x")
    real = tf.build_fleet
    monkeypatch.setattr(tf, "build_fleet", lambda d: real(d, steps_scale=0.01, parallel=False))
    out = tf.ensure_fleet(stale)
    assert (out / "FLEET_VERSION").read_text().strip() == RECIPE_VERSION
    assert not (out / "leftover.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and "build" in p.name] == []
