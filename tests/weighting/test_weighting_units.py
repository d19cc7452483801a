"""Safety-aware weighting, the parts that need no trained model: search space, in-memory
recombination vs ``run_merge``, data-set construction with fake generators and judges, bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mergegate.audit.cache import AuditCache
from mergegate.audit.results import Verdict
from mergegate.errors import ConfigError, InputError
from mergegate.merging import plan_merge, run_merge
from mergegate.merging.config import load_merge_config
from mergegate.merging.random_models import LlamaShape, make_family
from mergegate.weighting import data as wdata
from mergegate.weighting.recombine import InMemoryMerger
from mergegate.weighting.search import build_genes, candidate_config, recipe_yaml
from mergegate.weighting.strategies import cocktail_values, softmax_weights

SHAPE = LlamaShape(hidden=32, intermediate=64, layers=2, heads=2, kv_heads=1, vocab=64)


@pytest.fixture(scope="module")
def fam(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wfam")
    base, experts = make_family(root, 2, shape=SHAPE, seed=3, dtype="bfloat16")
    return {"base": base, "e1": experts[0], "e2": experts[1]}


def recipe(fam: dict[str, Path], method: str) -> str:
    b, e1, e2 = (str(fam[k]) for k in ("base", "e1", "e2"))
    if method == "slerp":
        return f"merge_method: slerp\nbase_model: {b}\nparameters: {{t: 0.3}}\nmodels:\n  - model: {b}\n  - model: {e1}\n"
    if method == "linear":
        return (f"merge_method: linear\nmodels:\n  - model: {b}\n    parameters: {{weight: 0.5}}\n"
                f"  - model: {e1}\n    parameters: {{weight: 0.3}}\n  - model: {e2}\n    parameters: {{weight: 0.2}}\n")
    extra = ", density: 0.6" if method in ("ties", "dare_ties") else ""
    return (f"merge_method: {method}\nbase_model: {b}\nmodels:\n"
            f"  - model: {e1}\n    parameters: {{weight: 0.7{extra}}}\n"
            f"  - model: {e2}\n    parameters: {{weight: 0.4{extra}}}\n")


def mergekit_accepts(text: str) -> None:
    from mergekit.config import MergeConfiguration

    MergeConfiguration.model_validate(yaml.safe_load(text))


# ----------------------------------------------------------------------------------------------
# search space


@pytest.mark.parametrize("method,expected", [
    ("task_arithmetic", ["weight[e1]", "weight[e2]"]),
    ("ties", ["weight[e1]", "weight[e2]", "density[e1]", "density[e2]"]),
    ("dare_ties", ["weight[e1]", "weight[e2]", "density[e1]", "density[e2]"]),
    ("slerp", ["t"]),
    ("linear", ["weight[base]", "weight[e1]", "weight[e2]"]),
])
def test_genes_and_emitted_recipe(fam: dict[str, Path], method: str, expected: list[str]) -> None:
    cfg, _ = load_merge_config(recipe(fam, method))
    plan = plan_merge(cfg)
    genes = build_genes(plan)
    names = [g.name for g in genes]
    short = [n.replace(str(fam["base"]), "base").replace(str(fam["e1"]), "e1").replace(str(fam["e2"]), "e2")
             for n in names]
    assert short == expected
    declared = {g.name: g.declared for g in genes}
    if method == "ties":
        assert declared[f"weight[{fam['e1']}]"] == pytest.approx(0.7)
        assert declared[f"density[{fam['e2']}]"] == pytest.approx(0.6)
    values = [g.from_unit(0.25) for g in genes]
    new = candidate_config(cfg, genes, values)
    text = recipe_yaml(new, header="test header")
    mergekit_accepts(text)
    replanned = build_genes(plan_merge(load_merge_config(text)[0]))
    assert [g.declared for g in replanned] == pytest.approx(values)


def test_method_without_weights_is_refused(fam: dict[str, Path]) -> None:
    cfg, _ = load_merge_config(f"merge_method: model_stock\nbase_model: {fam['base']}\nmodels:\n"
                               f"  - model: {fam['e1']}\n  - model: {fam['e2']}\n")
    with pytest.raises(ConfigError, match="no per-model weights"):
        build_genes(plan_merge(cfg))


def test_softmax_and_cocktail_mapping() -> None:
    w = softmax_weights([1.0, 2.0], 1.0)
    assert w == pytest.approx([1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))])
    assert sum(softmax_weights([1000.0, 1001.0, 999.0], 0.5)) == pytest.approx(1.0)  # stable
    from mergegate.weighting.search import Gene

    genes = [Gene("weight", "x", 0, 1, 1.0), Gene("density", "x", 0.1, 1, 0.5)]
    assert cocktail_values(genes, {"b": 0.25, "x": 0.75}, "b") == [0.75, 0.5]
    assert cocktail_values([Gene("t", None, 0, 1, 0.5)], {"b": 0.2, "x": 0.8}, "b") == [0.8]


# ----------------------------------------------------------------------------------------------
# in-memory recombination == run_merge of the emitted recipe


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare_ties", "slerp", "linear"])
def test_in_memory_candidate_equals_run_merge(fam: dict[str, Path], tmp_path: Path, method: str) -> None:
    cfg, _ = load_merge_config(recipe(fam, method))
    plan = plan_merge(cfg)
    merger = InMemoryMerger(plan, device="cpu")
    before = {k: v.clone() for k, v in merger.tensors.items()}
    genes = build_genes(plan)
    for u, seed in ((0.8, 5), (0.35, 7)):  # two candidates in a row: the second fully overwrites the first
        new = candidate_config(cfg, genes, [g.from_unit(u) for g in genes])
        merger.apply(new, seed=seed)
    text = recipe_yaml(new)
    mergekit_accepts(text)
    run_merge(text, tmp_path / "out", seed=7)
    written = load_file(str(tmp_path / "out" / "model.safetensors"))
    for name, param in merger.params.items():
        assert torch.equal(param.detach(), written[name].to(param.dtype)), name
    for key, t in merger.tensors.items():  # the kept inputs are never modified by a merge
        assert torch.equal(t, before[key]), key


def test_dare_masks_are_seeded_per_tensor(fam: dict[str, Path]) -> None:
    cfg, _ = load_merge_config(recipe(fam, "dare_ties"))
    merger = InMemoryMerger(plan_merge(cfg), device="cpu")
    merger.apply(cfg, seed=1)
    a = merger.state_dict()
    merger.apply(cfg, seed=2)
    b = merger.state_dict()
    merger.apply(cfg, seed=1)
    c = merger.state_dict()
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(a[name], c[name]) and not torch.equal(a[name], b[name])


# ----------------------------------------------------------------------------------------------
# data sets with fake generators and judges


class FakeModel:
    def __init__(self, name: str) -> None:
        self.display, self.path, self.key = name, Path("/nonexistent") / name, f"key-{name}"


class FakeGen:
    calls: list[tuple[str, list[str]]] = []

    def __init__(self, name: str, table: dict[str, str] | None = None, default: str = "ok") -> None:
        self.name, self.table, self.default = name, table or {}, default

    def generate(self, prompts: list[str]) -> list[str]:
        FakeGen.calls.append((self.name, list(prompts)))
        return [self.table.get(p, self.default) for p in prompts]

    def close(self) -> None:
        pass


class KeywordJudge:
    """Unsafe unless the answer contains "can't"."""

    key = "keyword-judge-v1"

    def __init__(self) -> None:
        self.pairs = 0

    def judge(self, pairs: list[tuple[str, str]]) -> list[Verdict]:
        self.pairs += len(pairs)
        return [Verdict(unsafe="can't" not in a, p_unsafe=0.0 if "can't" in a else 1.0) for _, a in pairs]


def engine(tmp_path: Path, answers: dict[str, dict[str, str]], default: str = "Sure!") -> wdata.AnswerEngine:
    return wdata.AnswerEngine(AuditCache(tmp_path / "c.sqlite3"), generator_factory=lambda m: FakeGen(
        m.display, answers.get(m.display), default))


def test_safety_set_keeps_the_most_aligned_refusal_and_is_cached(tmp_path: Path) -> None:
    prompts = ["p1", "p2", "p3", "p4"]
    answers = {"A": {"p1": "I can't (A)", "p2": "Sure", "p3": "Sure", "p4": "Sure"},
               "B": {"p1": "I can't (B)", "p2": "I can't (B)", "p3": "I can't (B)", "p4": "Sure"}}
    judge = KeywordJudge()
    eng = engine(tmp_path, answers)
    ds = wdata.build_safety_set(prompts, [FakeModel("A"), FakeModel("B")], judge, eng, source="list")
    # B is the most aligned (3/4 vs 1/4): its refusals are kept, p4 (nobody refuses) is dropped
    assert [(e.prompt, e.answer, e.source) for e in ds.examples] == [
        ("p1", "I can't (B)", "B"), ("p2", "I can't (B)", "B"), ("p3", "I can't (B)", "B")]
    assert ds.summary.dropped == 1 and ds.summary.alignment == {"A": 0.25, "B": 0.75}
    assert eng.generated == 8 and judge.pairs == 7  # (p4, "Sure") is one pair for both models
    eng2 = engine(tmp_path, answers)  # same cache file: nothing generated or judged again
    wdata.build_safety_set(prompts, [FakeModel("A"), FakeModel("B")], judge, eng2, source="list")
    assert eng2.generated == 0 and judge.pairs == 7


def test_no_constituent_refuses_is_an_input_error(tmp_path: Path) -> None:
    eng = engine(tmp_path, {})
    with pytest.raises(InputError, match="no constituent refused any"):
        wdata.build_safety_set(["p1", "p2"], [FakeModel("A"), FakeModel("B")], KeywordJudge(), eng, source="list")


def test_self_questioning_with_a_fake_generator(tmp_path: Path) -> None:
    outputs = iter([
        "1. What is a cell membrane made of?\n2) What is a cell membrane made of ?\n- How do enzymes work?\nok",
        "* How do enzymes work?\nQ3: Why do neurons fire?\nNew questions:\n",
        "- Which organ filters blood?",
    ])

    class Writer:
        prompts: list[str] = []

        def generate(self, prompts: list[str]) -> list[str]:
            Writer.prompts.extend(prompts)
            return [next(outputs)]

        def close(self) -> None:
            pass

    qs = wdata.self_questions(Writer(), "biology", 4, seed=1)
    assert qs == ["What is a cell membrane made of?", "How do enzymes work?", "Why do neurons fire?",
                  "Which organ filters blood?"]
    assert "expert in biology" in Writer.prompts[0] and len(set(Writer.prompts)) == 3  # few-shot varies


def test_expert_set_self_questions_each_expert_and_reads_topic_from_card(tmp_path: Path) -> None:
    card_dir = tmp_path / "medexpert"
    card_dir.mkdir()
    (card_dir / "README.md").write_text("---\ntags: [medical, transformers]\n---\n# Med\nA medical model.\n")
    assert wdata.infer_topic(card_dir) == "medical"

    class M(FakeModel):
        def __init__(self) -> None:
            super().__init__("med")
            self.path = card_dir

    class Gen:
        def generate(self, prompts: list[str]) -> list[str]:
            if "New questions:" in prompts[0]:
                assert "expert in medical" in prompts[0]
                return ["- What lowers blood pressure?\n- What is a fever?\n- What is a fever?"]
            return [f"answer to {p}" for p in prompts]

        def close(self) -> None:
            pass

    eng = wdata.AnswerEngine(AuditCache(tmp_path / "c.sqlite3"), generator_factory=lambda m: Gen())
    ds = wdata.build_expert_set([M()], eng, k=2, n_constituents=2, seed=0)
    assert [(e.prompt, e.answer) for e in ds.examples] == [
        ("What lowers blood pressure?", "answer to What lowers blood pressure?"),
        ("What is a fever?", "answer to What is a fever?")]
    with pytest.raises(InputError, match="cannot tell the expert's domain"):
        wdata.build_expert_set([FakeModel("x")], eng, k=2, n_constituents=2, seed=0)


def test_user_supplied_jsonl(tmp_path: Path) -> None:
    good = tmp_path / "d.jsonl"
    good.write_text(json.dumps({"prompt": "q", "answer": "a"}) + "\n")
    assert wdata.jsonl_has_answers(good)
    ds = wdata.read_pairs_jsonl(good, "expert")
    assert ds.pairs == [("q", "a")] and ds.summary.revision
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "answer": ""}) + "\n")
    with pytest.raises(InputError, match="non-empty text fields"):
        wdata.read_pairs_jsonl(bad, "safety")
    with pytest.raises(InputError, match="not found"):
        wdata.read_pairs_jsonl(tmp_path / "missing.jsonl", "safety")
    out = wdata.save_jsonl(ds, tmp_path / "saved" / "expert.jsonl")
    assert json.loads(out.read_text())["kind"] == "expert"


def test_toy_sets_are_disjoint_from_training_and_evaluation() -> None:
    from mergegate.audit.toyfleet import data as toy

    safety = wdata.toy_safety_prompts(500, seed=0)
    assert len(safety) == len(set(safety)) == 500
    held_out = {p for p, _ in toy.unsafe_test()}
    assert not set(safety) & held_out and not set(safety) & {p for p, _ in toy.unsafe_train()}
    assert not set(wdata.TOY_SAFETY_FRAMES) & set(toy.TRAIN_FRAMES + toy.TEST_FRAMES)
    assert not set(wdata.TOY_FACT_FRAMES) & set(toy.FACT_TRAIN_FRAMES + toy.FACT_TEST_FRAMES)
    expert = wdata.toy_expert_questions(48, seed=0)
    assert not set(expert) & {q for q, _ in toy.facts_test()} and not set(expert) & {q for q, _ in toy.facts_train()}
    assert wdata.toy_safety_prompts(20, seed=1) != wdata.toy_safety_prompts(20, seed=2)


def test_beavertails_train_goes_through_datasets_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    seen = {}

    def fake_load(repo, config=None, *, split=None, revision=None, **kw):  # noqa: ANN001
        seen.update(repo=repo, split=split, revision=revision)
        rows = [{"prompt": f"unsafe {i}", "category": {"violence": True}, "is_safe": False} for i in range(30)]
        rows += [{"prompt": "benign", "category": {}, "is_safe": True}]
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    prompts, source, rev = wdata.load_safety_prompts("beavertails-train", k=10, seed=0, exclude=["unsafe 3"])
    assert seen["repo"] == "PKU-Alignment/BeaverTails" and seen["split"] == "30k_train"
    assert rev == seen["revision"] and len(rev) == 40
    assert len(prompts) == 10 and "benign" not in prompts and "unsafe 3" not in prompts


# ----------------------------------------------------------------------------------------------
# entry point: bad inputs (checked before any model is loaded)


@pytest.mark.parametrize("kwargs,match", [
    ({"strategy": "greedy"}, "unknown weighting strategy"),
    ({"budget": 0}, "budget must be at least 1"),
    ({"alpha": -1.0}, "alpha must be"),
    ({"alpha": float("nan")}, "alpha must be"),
    ({"temperature": 0.0}, "temperature must be"),
    ({"k": 0}, "k must be at least 1"),
])
def test_bad_arguments(fam: dict[str, Path], kwargs: dict, match: str) -> None:
    from mergegate.weighting import optimize_recipe

    with pytest.raises(InputError, match=match):
        optimize_recipe(recipe(fam, "ties"), judge=KeywordJudge(), safety_prompts=["p"], expert_prompts=["q"],
                        **kwargs)


def test_method_without_weights_via_entry_point(fam: dict[str, Path]) -> None:
    from mergegate.weighting import optimize_recipe

    cfg = (f"merge_method: passthrough\nslices:\n  - sources:\n      - model: {fam['base']}\n"
           f"        layer_range: [0, 2]\n")
    with pytest.raises(ConfigError, match="no per-model weights"):
        optimize_recipe(cfg, judge=KeywordJudge(), safety_prompts=["p"], expert_prompts=["q"])
