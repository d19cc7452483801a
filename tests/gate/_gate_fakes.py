"""Synthetic audit results, a fake merge engine and a fake audit, so gate tests need no model."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from mergegate.audit.results import (
    AuditReport,
    CategoryTally,
    DatasetRef,
    GenerationSettings,
    JudgeRef,
    ModelRef,
    ModelScore,
)
from mergegate.audit.scoring import wilson_interval

FIXED_TIME = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
JUDGE = JudgeRef(id="meta-llama/Llama-Guard-3-8B", revision="a" * 40, protocol="llama-guard-3",
                 categories={"S1": "Violent Crimes.", "S7": "Privacy."})
PROMPTS = DatasetRef(source="beavertails", revision="8401fe609d288129cc684a9b3be6a93e41cfe678",
                     split="30k_test", n=100, seed=0)
BENIGN = DatasetRef(source="xstest", revision="b" * 40, split="train", n=50)


def score(model_id: str, n_safe: int, n: int = 100, *, refused: int | None = 5, n_benign: int = 50,
          revision: str | None = None, categories: dict[str, tuple[int, int]] | None = None,
          guard: dict[str, int] | None = None) -> ModelScore:
    cats = categories if categories is not None else {
        "violence": (40, max(0, (n - n_safe) // 2)), "privacy": (60, (n - n_safe) - (n - n_safe) // 2)}
    return ModelScore(
        model=ModelRef(id=model_id, revision=revision, weights_sha256="c" * 64),
        n=n, n_safe=n_safe, alignment=n_safe / n, interval=wilson_interval(n_safe, n),
        over_refusal=None if refused is None else refused / n_benign,
        over_refusal_interval=None if refused is None else wilson_interval(refused, n_benign),
        n_benign=n_benign if refused is not None else 0,
        by_source_category={k: CategoryTally(n=a, unsafe=b) for k, (a, b) in cats.items()},
        by_guard_category=guard if guard is not None else ({"S1": n - n_safe} if n > n_safe else {}))


def audit_report(scores: list[ModelScore], *, benign: bool = True) -> AuditReport:
    return AuditReport(scores=scores, judge=JUDGE, prompts=PROMPTS, benign=BENIGN if benign else None,
                       generation=GenerationSettings(max_new_tokens=48), mergegate_version="0.1.0",
                       created_at=FIXED_TIME)


def fake_merge(*, weights: str = "model.safetensors", fail: BaseException | None = None) -> Callable:
    """A stand-in for ``run_merge``: writes a tiny 'model' into out_dir (replacing it, like the real one)."""

    def merge(config, out_dir, *, device="cpu", seed=None, **_):
        if fail is not None:
            raise fail
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / weights).write_bytes(b"fake weights " + Path(config).read_bytes())
        (out / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
        (out / "mergekit_config.yml").write_text(Path(config).read_text())
        return None

    return merge


def fake_audit(alignment: dict[str, int], *, refused: dict[str, int] | None = None,
               fail: BaseException | None = None, calls: list | None = None) -> Callable:
    """A stand-in for ``audit_models``: ``alignment`` maps a substring of the model path to n_safe/100."""

    def audit_models(models, *, prompts, benign, judge, **kwargs):
        if calls is not None:
            calls.append({"models": list(models), "prompts": prompts, "benign": benign, "judge": judge,
                          **kwargs})
        if fail is not None:
            raise fail
        scores = []
        for model in models:
            key = next((k for k in alignment if k in model), None)
            if key is None:
                raise AssertionError(f"no scripted alignment for {model}")
            r = (refused or {}).get(key, 5)
            scores.append(score(model, alignment[key], refused=r if benign else None))
        return audit_report(scores, benign=benign is not None)

    return audit_models


def write_local_model(directory: Path, *, license: str | None = "apache-2.0") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text("{}")
    (directory / "model.safetensors").write_bytes(b"weights of " + directory.name.encode())
    if license:
        (directory / "README.md").write_text(f"---\nlicense: {license}\n---\n# {directory.name}\n")
    return directory


def write_recipe(root: Path, *, expert_weight: float = 0.8, name: str = "mergekit_config.yml",
                 expert_license: str | None = "apache-2.0") -> Path:
    """A linear recipe over two local models ``root/models/base`` and ``root/models/expert``."""
    base = write_local_model(root / "models" / "base")
    expert = write_local_model(root / "models" / "expert", license=expert_license)
    recipe = root / name
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(
        "merge_method: linear\ndtype: float32\nmodels:\n"
        f"  - model: {json.dumps(str(base))}\n    parameters:\n      weight: {1 - expert_weight:.1f}\n"
        f"  - model: {json.dumps(str(expert))}\n    parameters:\n      weight: {expert_weight:.1f}\n")
    return recipe


MISTRAL = "mistralai/Mistral-7B-Instruct-v0.2"
EXPERT = "example-org/uncensored-expert"
MISTRAL_SHA = "3ad372fc79158a2148299e3318516c786aeded6c"
EXPERT_SHA = "0123456789abcdef0123456789abcdef01234567"
SYNTHETIC_RECIPE = f"""merge_method: ties
base_model: {MISTRAL}@{MISTRAL_SHA}
models:
  - model: {EXPERT}@{EXPERT_SHA}
    parameters:
      weight: 0.7
      density: 0.5
dtype: bfloat16
"""


def synthetic_run_report(merged_safe: int = 62, *, tolerance: float = 0.0,
                         licenses: tuple[str | None, str | None] = ("apache-2.0", "apache-2.0")):
    """A fixed, fully synthetic RunReport (no model, no clock): the golden card's input."""
    from mergegate.gate.decision import PairedResult, decide
    from mergegate.gate.licenses import DeclaredLicense, derive_license
    from mergegate.gate.policy import GatePolicy
    from mergegate.gate.report import MergeInfo, ModelSummary, RunReport

    base_ref, expert_ref = f"{MISTRAL}@{MISTRAL_SHA}", f"{EXPERT}@{EXPERT_SHA}"
    cats = {"violence,aiding_and_abetting,incitement": (40, 3), "privacy_violation": (60, 4)}
    constituents = [
        ModelSummary.from_score(score(MISTRAL, 93, revision=MISTRAL_SHA, refused=4, categories=cats,
                                      guard={"S1": 3, "S7": 4}),
                                role="constituent", name=base_ref, hub_id=MISTRAL, license=licenses[0]),
        ModelSummary.from_score(score(EXPERT, 41, revision=EXPERT_SHA, refused=1,
                                      categories={"violence,aiding_and_abetting,incitement": (40, 25),
                                                  "privacy_violation": (60, 34)},
                                      guard={"S1": 25, "S7": 34}),
                                role="constituent", name=expert_ref, hub_id=EXPERT, license=licenses[1]),
    ]
    bad = 100 - merged_safe
    merged = ModelSummary.from_score(
        score("out/my-merge", merged_safe, refused=3,
              categories={"violence,aiding_and_abetting,incitement": (40, bad // 2),
                          "privacy_violation": (60, bad - bad // 2)},
              guard={"S1": bad // 2, "S7": bad - bad // 2}),
        role="merge", name="my-merge")
    policy = GatePolicy(tolerance=tolerance, max_over_refusal_increase=10)
    # paired with the best input (93 safe) on the same 100 prompts: one prompt only the merge answered
    # safely, the rest of the difference the other way
    from mergegate.audit.scoring import mcnemar_exact

    only_merge, only_best = 1, 1 + 93 - merged_safe if merged_safe <= 93 else 0
    if merged_safe > 93:
        only_merge = 1 + merged_safe - 93
        only_best = 1
    _, _, p_value = mcnemar_exact([True] * only_merge + [False] * only_best,
                                  [False] * only_merge + [True] * only_best)
    paired = PairedResult(best_input=MISTRAL, n=100, merge_safe_best_unsafe=only_merge,
                          merge_unsafe_best_safe=only_best, p_value=p_value)
    gate = decide(merged, constituents, policy, output_files=["config.json", "model.safetensors"],
                  hub_references=[base_ref, expert_ref], paired=paired)
    lic = derive_license({base_ref: DeclaredLicense(licenses[0]) if licenses[0] else None,
                          expert_ref: DeclaredLicense(licenses[1]) if licenses[1] else None})
    import hashlib

    return RunReport(
        created_at=FIXED_TIME, mergegate_version="0.1.0", name="my-merge", decision=gate.decision,
        reasons=gate.reasons, gate=gate, merged=merged, constituents=constituents,
        best_input=gate.best_input, policy=policy, policy_source="mergegate.yml", judge=JUDGE,
        over_refusal_judge="xstest-strmatch",
        prompts=PROMPTS, benign=BENIGN, generation=GenerationSettings(max_new_tokens=48),
        merge=MergeInfo(method="ties", base_model=base_ref, config_name="mergekit_config.yml",
                        config_text=SYNTHETIC_RECIPE,
                        config_sha256=hashlib.sha256(SYNTHETIC_RECIPE.encode()).hexdigest(),
                        models=[base_ref, expert_ref]),
        license=lic, files={"config.json": "d" * 64, "model.safetensors": "e" * 64},
        command="mergegate run mergekit_config.yml --out out/my-merge --prompts beavertails "
                "--benign xstest --judge meta-llama/Llama-Guard-3-8B --backend transformers "
                "--device cuda --limit 100 --max-new-tokens 48 --seed 0",
        card="README.md", plot="mergegate_alignment.png")
