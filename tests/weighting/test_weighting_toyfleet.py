"""Safety-aware weighting end to end on the toy fleet (real models, real judge, real gate, CPU).

D_safety: 48 fresh toy unsafe prompts (``safety_prompts="toy"``: frames used neither in training
nor in ``prompts/unsafe.jsonl``) answered by base and expert, judged by the toy guard; D_expert:
48 toy domain questions in new frames (the tiny expert cannot write questions), answered by the
expert. The gate evaluates on the held-out ``prompts/unsafe.jsonl``; the domain is measured by the
teacher-forced answer cross-entropy on the held-out ``prompts/domain.jsonl`` (exact match is 0 for
every merge aligned enough to pass: the toy expert only says the right capital at weight >= 0.7).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mergegate.audit.batching import STATS
from mergegate.merging import run_merge
from mergegate.weighting import optimize_recipe


@pytest.fixture(scope="module")
def fleet(toy_fleet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy: the shared fleet directory may be rebuilt by a concurrent session."""
    dst = tmp_path_factory.mktemp("wfleet") / "fleet"
    shutil.copytree(toy_fleet, dst)
    return dst


@pytest.fixture
def one_thread() -> None:
    """The toy models are tiny: extra OpenMP threads only spin-wait on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def declared(fleet: Path, method: str = "task_arithmetic") -> str:
    b, e = fleet / "base", fleet / "expert"
    if method == "slerp":
        return f"merge_method: slerp\nbase_model: {b}\ndtype: float32\nparameters: {{t: 0.9}}\nmodels:\n" \
               f"  - model: {b}\n  - model: {e}\n"
    extra = ", density: 0.5" if method == "dare_ties" else ""
    return (f"merge_method: {method}\nbase_model: {b}\ndtype: float32\nmodels:\n"
            f"  - model: {e}\n    parameters: {{weight: 1.0{extra}}}\n")


def toy_args(fleet: Path) -> dict:
    return dict(judge=str(fleet / "guard"), safety_prompts="toy", expert_prompts="toy", k=48, max_new_tokens=48)


def mergekit_accepts(text: str) -> None:
    from mergekit.config import MergeConfiguration

    MergeConfiguration.model_validate(yaml.safe_load(text))


@pytest.mark.parametrize("method", ["task_arithmetic", "dare_ties", "slerp"])
def test_evomm_is_deterministic_cached_and_rebuildable(fleet: Path, tmp_path: Path, method: str,
                                                       one_thread: None) -> None:
    cfg = declared(fleet, method)
    first = optimize_recipe(cfg, strategy="evomm", budget=6, seed=3, out_dir=tmp_path / "w", **toy_args(fleet))
    batches = STATS["generate_batches"], STATS["judge_forwards"]
    again = optimize_recipe(cfg, strategy="evomm", budget=6, seed=3, **toy_args(fleet))
    assert (STATS["generate_batches"], STATS["judge_forwards"]) == batches  # data from the audit cache
    assert again.optimized == first.optimized and again.history == first.history
    assert first.evaluations == len(first.history) == 6
    assert first.optimized_losses.total <= first.declared_losses.total
    assert first.merge_seed == (3 if method == "dare_ties" else None)
    for name in ("safety.jsonl", "expert.jsonl", "recipe.yml", "weighting.json"):
        assert (tmp_path / "w" / name).is_file()
    rows = [json.loads(line) for line in (tmp_path / "w" / "safety.jsonl").read_text().splitlines()]
    assert rows and all(r["kind"] == "safety" and r["source"].endswith("base") for r in rows)
    held_out = {json.loads(line)["prompt"] for line in (fleet / "prompts/unsafe.jsonl").read_text().splitlines()}
    assert not {r["prompt"] for r in rows} & held_out

    # the emitted recipe is mergekit YAML, and run_merge rebuilds exactly the in-memory best candidate
    mergekit_accepts(first.recipe_yaml)
    run_merge(first.recipe_yaml, tmp_path / "rebuilt", seed=first.merge_seed)
    written = load_file(str(tmp_path / "rebuilt" / "model.safetensors"))
    params = again.merger.params
    assert set(params) == set(written)
    for name, p in params.items():
        assert torch.equal(p.detach(), written[name].to(p.dtype)), name


def test_cocktail_weights_are_a_softmax_of_constituent_losses(fleet: Path, one_thread: None) -> None:
    r = optimize_recipe(declared(fleet), strategy="cocktail", temperature=2.0, **toy_args(fleet))
    losses = list(r.constituent_losses.values())
    z = torch.softmax(-torch.tensor(losses, dtype=torch.float64) / 2.0, 0)
    assert list(r.cocktail_weights.values()) == pytest.approx(z.tolist(), abs=1e-6)
    expert = str(fleet / "expert")
    assert r.optimized[f"weight[{expert}]"] == pytest.approx(r.cocktail_weights[expert], abs=1e-4)
    assert r.evaluations == 2 and r.temperature == 2.0
    mergekit_accepts(r.recipe_yaml)


def test_no_refusal_anywhere_is_an_input_error(fleet: Path) -> None:
    from mergegate.audit.results import Verdict
    from mergegate.errors import InputError

    class AllUnsafe:
        key = "all-unsafe-v1"

        def judge(self, pairs):  # noqa: ANN001, ANN201
            return [Verdict(unsafe=True, p_unsafe=1.0) for _ in pairs]

    args = toy_args(fleet) | {"judge": AllUnsafe(), "k": 6}
    with pytest.raises(InputError, match="no constituent refused any"):
        optimize_recipe(declared(fleet), strategy="evomm", budget=2, **args)


# ----------------------------------------------------------------------------------------------


def _domain_ce(model_dir: Path, fleet: Path) -> float:
    from mergegate.audit.generators import load_causal_lm, load_tokenizer
    from mergegate.weighting.loss import encode_pairs, mean_ce

    rows = [json.loads(line) for line in (fleet / "prompts/domain.jsonl").read_text().splitlines()]
    tok = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, device="cpu")
    return mean_ce(model, encode_pairs(tok, [(r["prompt"], r["answer"]) for r in rows]), device="cpu",
                   pad_id=tok.pad_token_id)


@pytest.mark.slow
def test_gate_blocks_declared_evomm_passes_cocktail_improves(fleet: Path, tmp_path: Path, one_thread: None) -> None:
    from mergegate.gate.pipeline import run_gate
    from mergegate.gate.policy import GatePolicy

    gate_args = dict(policy=GatePolicy(), prompts=str(fleet / "prompts/unsafe.jsonl"),
                     benign=str(fleet / "prompts/benign.jsonl"), judge=str(fleet / "guard"), limit=100,
                     max_new_tokens=48, progress=False, card=False)

    def gate(text: str, name: str):  # noqa: ANN202
        path = tmp_path / f"{name}.yml"
        path.write_text(text)
        report = run_gate(path, tmp_path / name, **gate_args)
        assert report.decision != "error", report.reasons
        return report

    text = declared(fleet)
    rep_declared = gate(text, "declared")
    assert rep_declared.decision == "blocked"  # the expert at weight 1.0 is the misaligned expert

    t0 = time.perf_counter()
    evo = optimize_recipe(text, strategy="evomm", budget=100, seed=0, **toy_args(fleet))
    evomm_seconds = time.perf_counter() - t0
    assert evo.evaluations == 100 and len(evo.history) == 100
    assert evomm_seconds < 300, f"EvoMM 100 evaluations took {evomm_seconds:.1f}s"
    rep_evo = gate(evo.recipe_yaml, "evomm")
    assert rep_evo.decision == "pass", rep_evo.reasons

    coc = optimize_recipe(text, strategy="cocktail", **toy_args(fleet))
    rep_coc = gate(coc.recipe_yaml, "cocktail")
    assert rep_coc.merged.alignment > rep_declared.merged.alignment

    ce = {name: _domain_ce(path, fleet) for name, path in (
        ("base", fleet / "base"), ("expert", fleet / "expert"), ("declared", tmp_path / "declared"),
        ("evomm", tmp_path / "evomm"), ("cocktail", tmp_path / "cocktail"))}
    assert ce["evomm"] < ce["base"]  # the passing merge knows the expert's domain better than base

    summary = {
        "evomm_seconds": round(evomm_seconds, 1), "evals_per_s": round(100 / evomm_seconds, 2),
        "recombine_s": evo.recombine_seconds, "score_s": evo.score_seconds,
        "weights": {"declared": 1.0, "evomm": list(evo.optimized.values())[0],
                    "cocktail": list(coc.optimized.values())[0]},
        "alignment": {"base": rep_declared.constituents[0].alignment, "expert": rep_declared.constituents[1].alignment,
                      "declared": rep_declared.merged.alignment, "evomm": rep_evo.merged.alignment,
                      "cocktail": rep_coc.merged.alignment},
        "domain_answer_ce": {k: round(v, 4) for k, v in ce.items()},
    }
    print("WEIGHTING-SUMMARY", json.dumps(summary))
