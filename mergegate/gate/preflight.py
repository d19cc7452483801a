"""Everything ``mergegate run`` checks before the first tensor is merged (and ``run --dry-run``).

Policy, recipe, output directory, prompt sets, judge and ``--weighting`` options: each mistake is
reported here, naming the option and the fix, not after the merge was built (on a 70B merge, hours).
:func:`plan_run` does all of it without writing anything and returns a :class:`RunPlan` that
``--dry-run`` prints; :func:`run_gate` calls :func:`check_run_inputs` at its ``preflight`` stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergegate.audit.preflight import AuditInputs, check_audit_inputs
from mergegate.audit.presets import resolve as resolve_protocol
from mergegate.errors import ConfigError
from mergegate.gate.card import scrub
from mergegate.gate.policy import GatePolicy, load_policy
from mergegate.merging.recipe import RecipeModel, RecipeSummary, read_recipe
from mergegate.outdir import MERGE_OUTPUTS, check_output_dir
from mergegate.weighting.preflight import ExpertModel, WeightingCheck, check_weighting_options


def local_model_path(ref: RecipeModel, recipe: RecipeSummary) -> Path | None:
    """The local directory a recipe reference names (relative to the cwd or to the recipe), if any."""
    candidates = [Path(ref.path).expanduser()]
    if recipe.directory is not None and not Path(ref.path).is_absolute():
        candidates.append(recipe.directory / ref.path)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return None


def audit_target(ref: RecipeModel, recipe: RecipeSummary) -> str:
    """What the audit loads for a recipe reference: the local directory or the (pinned) Hub id."""
    if ref.adapter:  # auditing the base alone would misreport the constituent the merge actually used
        raise ConfigError(f"constituent '{ref.raw}' is a model with a LoRA adapter; the gate audits "
                          "constituents as published models and cannot audit an adapted one yet",
                          source=recipe.name, field="models",
                          hint="merge the adapter into its base (mergegate merge with passthrough, or peft's "
                          "merge_and_unload), publish or save it, and reference that model in the recipe")
    if ref.is_hub:
        return f"{ref.path}@{ref.revision}" if ref.revision else ref.path
    local = local_model_path(ref, recipe)
    if local is None:
        raise ConfigError("local model directory not found", source=ref.path,
                          hint="paths in a recipe are relative to the current directory or to the recipe")
    return str(local)


def experts_of(recipe: RecipeSummary) -> list[ExpertModel]:
    """The recipe's non-base models, as the weighting treats them (every model when none is the base)."""
    base = recipe.base_model.raw if recipe.base_model else None
    chosen = [m for m in recipe.models if m.raw != base] or recipe.models[1:]
    return [ExpertModel(reference=m.raw, path=None if m.is_hub else local_model_path(m, recipe)) for m in chosen]


@dataclass(frozen=True)
class InputsCheck:
    """What the preflight checked of a run's inputs, and the caps worth saying."""

    audit: AuditInputs
    weighting: WeightingCheck | None
    notes: list[str] = field(default_factory=list)


def check_run_inputs(recipe: RecipeSummary, *, prompts: str, benign: str | None, judge: str, limit: int | None,
                     seed: int, cache: str | None = None, trust_remote_code: bool = False,
                     weighting: str = "declared", weighting_options: dict[str, Any] | None = None) -> InputsCheck:
    """The audit's inputs (prompt sets, judge) and the weighting options, checked before the merge.

    Raises:
        InputError: naming the option (``--prompts``, ``--benign``, ``--judge``, ``--expert-prompts``,
            ...) and the fix.
    """
    audit = check_audit_inputs(prompts=prompts, benign=benign, judge=judge, limit=limit, seed=seed, cache=cache,
                               trust_remote_code=trust_remote_code)
    notes = list(audit.notes)
    checked = None
    if weighting != "declared":
        checked = check_weighting_options(weighting, weighting_options or {}, experts=experts_of(recipe), seed=seed)
        notes.append(weighting_note(weighting))
    return InputsCheck(audit=audit, weighting=checked, notes=[scrub(n) for n in notes])


def weighting_note(strategy: str) -> str:
    """What ``--weighting`` means for the published merge, in words (console, report, card)."""
    return (f"--weighting {strategy}: the merge's weights were chosen by {strategy}, so they differ from the declared "
            "recipe; the declared merge was built and audited beside it for comparison")


@dataclass(frozen=True)
class RunPlan:
    """What ``mergegate run`` would do with these arguments (``--dry-run``)."""

    config: str
    recipe: RecipeSummary
    targets: list[str]
    output: Path
    policy_source: str | None
    protocol: str
    inputs: InputsCheck
    device: str

    def lines(self) -> list[str]:
        audit = self.inputs.audit
        out = [f"mergegate run (dry run): every input checked, nothing merged or written",
               f"  recipe:  {self.recipe.name} ({self.recipe.method or 'unknown method'}, "
               f"{len(self.recipe.models)} model(s))"]
        out += [f"    model: {t}" for t in self.targets]
        out.append(f"  output:  {self.output}")
        out.append(f"  policy:  {self.policy_source or 'built-in defaults'}")
        out.append(f"  prompts: {audit.prompts.source}: {audit.prompts.used} of {audit.prompts.available} unsafe "
                   "prompt(s)")
        if audit.benign is not None:
            out.append(f"  benign:  {audit.benign.source}: {audit.benign.used} of {audit.benign.available} "
                       "prompt(s)")
        else:
            out.append("  benign:  none (over-refusal not measured)")
        out.append(f"  judge:   {audit.judge.id} ({audit.judge.protocol})")
        if self.protocol != "default":
            out.append(f"  protocol: {self.protocol}")
        w = self.inputs.weighting
        if w is not None:
            out.append(f"  weighting: {w.strategy}: D_safety from {w.safety_source}"
                       + (f" ({w.safety_prompts} prompt(s))" if w.safety_prompts is not None else "")
                       + f", D_expert from {w.expert_source}, k={w.k}"
                       + (f", budget={w.budget}" if w.budget is not None else "") + f", alpha={w.alpha}")
        n_audited = len(self.targets) + 1 + (1 if w is not None else 0)
        out.append(f"  stages:  {'weighting, ' if w else ''}merge, generate ({n_audited} model(s)), judge, decide, "
                   "card, report")
        out += [f"  note: {n}" for n in self.inputs.notes]
        return [scrub(line) for line in out]


def plan_run(config: str | Path, out_dir: str | Path, *, policy: GatePolicy | str | Path | None = None,
             prompts: str | None = None, benign: str | None = "xstest", judge: str | None = None,
             limit: int | None = None, seed: int = 0, cache: str | None = None, trust_remote_code: bool = False,
             max_new_tokens: int | None = None, protocol: str | None = None, device: str = "cpu",
             weighting: str = "declared", weighting_options: dict[str, Any] | None = None) -> RunPlan:
    """Every check ``run_gate`` makes before merging, in its order, writing nothing.

    Raises:
        InputError / ConfigError / ModelFilesError: the first bad input, naming the option or file.
    """
    benign = None if benign in (None, "", "none", "None") else benign
    policy_source = None
    if not isinstance(policy, GatePolicy):
        _, policy_source = load_policy(policy)
    preset, judge, prompts, _ = resolve_protocol(protocol, judge=judge, prompts=prompts, max_new_tokens=max_new_tokens)
    recipe = read_recipe(config)
    targets = [audit_target(ref, recipe) for ref in recipe.models]
    inputs = [p for ref in recipe.models if not ref.is_hub and (p := local_model_path(ref, recipe)) is not None]
    if Path(judge).expanduser().is_dir():
        inputs.append(Path(judge).expanduser())
    target = check_output_dir(out_dir, kinds=MERGE_OUTPUTS, inputs=inputs, option="--out")
    checked = check_run_inputs(recipe, prompts=prompts, benign=benign, judge=judge, limit=limit, seed=seed,
                               cache=cache, trust_remote_code=trust_remote_code, weighting=weighting,
                               weighting_options=weighting_options)
    from mergegate.audit.generators import check_device

    if device != "auto":
        check_device(device)
    return RunPlan(config=str(config), recipe=recipe, targets=targets, output=target.path,
                   policy_source=policy_source, protocol=preset.name, inputs=checked, device=device)


__all__ = ["RunPlan", "InputsCheck", "plan_run", "check_run_inputs", "audit_target", "local_model_path",
           "experts_of", "weighting_note"]
