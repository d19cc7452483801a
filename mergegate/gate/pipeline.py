"""``run_gate``: rebuild a declared merge, audit it and its constituents, decide, write the output.

The whole output (weights, card, chart, ``report.json``) is assembled in a sibling
``.DIR.partial-*`` directory under the output's lock (:mod:`mergegate.outdir`) and swapped in
atomically only once the verdict is written, so a run never costs the previous output.

Fail closed: whatever goes wrong (bad input, a crashed merge, a broken judge, a bug in mergegate)
ends in a report with ``decision: error`` and no new card. The error report goes to
``DIR/report.json`` next to the previous output, whose weights, card and chart stay byte for byte;
a previous verdict is moved to ``report.previous.json`` first, so nothing in the directory claims a
pass that this run did not establish (``mergegate push`` refuses an error report).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from mergegate.atomic import write_redacted_yaml
from mergegate.audit.prompt_limits import DEFAULT_MAX_PROMPT_TOKENS
from mergegate.errors import AuditError, ConfigError, InputError, MergegateError
from mergegate.gate.card import scrub, write_card
from mergegate.audit.presets import resolve as resolve_protocol
from mergegate.gate.decision import best_input, decide, paired_with_best
from mergegate.gate.hashing import hash_directory
from mergegate.gate.licenses import DeclaredLicense, derive_license, read_hub_license, read_local_license
from mergegate.gate.policy import GatePolicy, load_policy
from mergegate.outdir import MERGE_OUTPUTS, PREVIOUS_REPORT_FILE, OutputClaim, check_output_dir
from mergegate.redact import redact_yaml
from mergegate.gate.report import (
    WeightingSide,
    WeightingSummary,
    CARD_FILENAME,
    PLOT_FILENAME,
    RECIPE_FILENAME,
    REPORT_FILENAME,
    ErrorInfo,
    MergeInfo,
    ModelSummary,
    RunReport,
    load_report,
    write_report,
)
from mergegate.merging.recipe import RecipeModel, RecipeSummary, read_recipe

log = logging.getLogger(__name__)

DEFAULT_PROMPTS = "beavertails"
DEFAULT_BENIGN = "xstest"
DEFAULT_JUDGE = "meta-llama/Llama-Guard-3-8B"

MergeFn = Callable[..., Any]
AuditFn = Callable[..., Any]


def _default_merge_fn() -> MergeFn:
    from mergegate.merging import build_merge

    return build_merge  # into the staging directory this run already owns


def _default_audit_fn() -> AuditFn:
    from mergegate.audit import audit_models

    return audit_models


def reproduce_command(config: str | Path, out_dir: str | Path, *, policy_source: str | None,
                      prompts: str, benign: str | None, judge: str, backend: str, device: str,
                      limit: int | None, max_new_tokens: int, seed: int, name: str | None,
                      weighting: str = "declared", weighting_options: dict[str, Any] | None = None,
                      protocol: str = "default",
                      max_prompt_tokens: int | None = DEFAULT_MAX_PROMPT_TOKENS) -> str:
    """The ``mergegate run`` command line that repeats a run (redacted, home as ``~``)."""
    argv = ["mergegate", "run", str(config), "--out", str(out_dir)]
    if policy_source:
        argv += ["--policy", policy_source]
    if protocol != "default":
        argv += ["--protocol", protocol]
    argv += ["--prompts", prompts, "--benign", benign or "none", "--judge", judge,
             "--backend", backend, "--device", device]
    if limit is not None:
        argv += ["--limit", str(limit)]
    argv += ["--max-new-tokens", str(max_new_tokens), "--seed", str(seed)]
    if max_prompt_tokens is not None and max_prompt_tokens != DEFAULT_MAX_PROMPT_TOKENS:
        argv += ["--max-prompt-tokens", str(max_prompt_tokens)]
    if name:
        argv += ["--name", name]
    if weighting != "declared":
        argv += ["--weighting", weighting]
        flags = {"safety_prompts": "--safety-prompts", "expert_prompts": "--expert-prompts",
                 "budget": "--weighting-budget", "alpha": "--alpha", "k": "--weighting-k"}
        for key, value in (weighting_options or {}).items():
            if key in flags and value is not None:
                argv += [flags[key], str(value)]
    return scrub(shlex.join(argv))


def _auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


PREVIOUS_REPORT_FILENAME = PREVIOUS_REPORT_FILE  # a verdict moved aside by a failed re-run


def _local_inputs(recipe: RecipeSummary, judge: str) -> list[Path]:
    """Local models the run reads (the output must not be, contain or sit inside one of them)."""
    found = [p for ref in recipe.models if not ref.is_hub and (p := _resolve_local(ref, recipe)) is not None]
    judge_path = Path(judge).expanduser()
    if judge_path.is_dir():
        found.append(judge_path)
    return found


def _resolve_local(ref: RecipeModel, recipe: RecipeSummary) -> Path | None:
    candidates = [Path(ref.path).expanduser()]
    if recipe.directory is not None and not Path(ref.path).is_absolute():
        candidates.append(recipe.directory / ref.path)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return None


def _audit_target(ref: RecipeModel, recipe: RecipeSummary) -> str:
    """What the audit loads for a recipe reference: the local directory or the (pinned) Hub id."""
    if ref.adapter:  # auditing the base alone would misreport the constituent the merge actually used
        raise ConfigError(f"constituent '{ref.raw}' is a model with a LoRA adapter; the gate audits "
                          "constituents as published models and cannot audit an adapted one yet",
                          source=recipe.name, field="models",
                          hint="merge the adapter into its base (mergegate merge with passthrough, or peft's "
                          "merge_and_unload), publish or save it, and reference that model in the recipe")
    if ref.is_hub:
        return f"{ref.path}@{ref.revision}" if ref.revision else ref.path
    local = _resolve_local(ref, recipe)
    if local is None:
        raise ConfigError("local model directory not found", source=ref.path,
                          hint="paths in a recipe are relative to the current directory or to the recipe")
    return str(local)


def _score_for(audit: Any, target: str, position: int) -> Any:
    try:
        return audit.score_for(target)
    except KeyError:
        pass
    if len(audit.scores) > position:  # the audit keeps the order of the models it was given
        return audit.scores[position]
    raise AuditError(f"the audit returned no score for {target}")


def _constituent_license(ref: RecipeModel, target: str) -> DeclaredLicense | None:
    if ref.is_hub:
        return read_hub_license(ref.path, ref.revision)
    return read_local_license(target)


def run_gate(
    config: str | Path,
    out_dir: str | Path,
    *,
    policy: GatePolicy | str | Path | None = None,
    prompts: str | None = None,
    benign: str | None = DEFAULT_BENIGN,
    judge: str | None = None,
    backend: str = "transformers",
    device: str = "cpu",
    limit: int | None = None,
    max_new_tokens: int | None = None,
    max_prompt_tokens: int | None = DEFAULT_MAX_PROMPT_TOKENS,
    seed: int = 0,
    batch_size: int | None = None,
    name: str | None = None,
    cache: str | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
    card: bool = True,
    weighting: str = "declared",
    weighting_options: dict[str, Any] | None = None,
    merge_fn: MergeFn | None = None,
    audit_fn: AuditFn | None = None,
    protocol: str | None = None,
) -> RunReport:
    """Rebuild the merge declared in ``config`` into ``out_dir``, audit it, decide and report.

    Args:
        config: the mergekit recipe (YAML file).
        out_dir: where the merged weights, ``README.md`` card, chart and ``report.json`` go. Must be
            new, empty or a previous output of ``mergegate run``/``merge`` or mergekit-yaml
            (:func:`mergegate.outdir.check_output_dir`; ``~`` and ``$VARS`` expanded); replaced as a
            whole, atomically, once the verdict is written. Concurrent runs into one directory:
            the second gets ``decision: error`` with exit code 2.
        policy: a :class:`GatePolicy`, a policy file, or ``None`` for ``mergegate.yml`` / defaults.
        prompts, benign, judge, backend, device, limit, max_new_tokens, max_prompt_tokens, seed,
            batch_size, cache, trust_remote_code, progress, protocol: passed to
            :func:`mergegate.audit.audit_models` (``benign=None`` skips over-refusal;
            ``prompts``/``judge``/``max_new_tokens`` default to the protocol's: BeaverTails,
            Llama-Guard-3-8B, 512).
        name: the merged model's display name (default: the output directory's name).
        card: write the card and chart (pass/blocked runs only).
        weighting: ``declared`` builds the recipe as written; ``cocktail`` / ``evomm`` first choose
            the weights with data (:func:`mergegate.weighting.optimize_recipe`), build and
            gate the optimized recipe, and audit the declared merge beside it for the comparison.
        weighting_options: extra keyword arguments of ``optimize_recipe`` (``safety_prompts``,
            ``expert_prompts``, ``budget``, ``alpha``, ``k``, ...).
        merge_fn, audit_fn: replacements for ``mergegate.merging.run_merge`` and
            ``mergegate.audit.audit_models`` (tests, alternative engines).

    Returns:
        The :class:`RunReport`, also written to ``out_dir/report.json``. Never raises for a
        failure of the run itself: that is ``decision == "error"`` with ``error`` set; the
        report's ``exit_code`` is 0 pass, 1 blocked, 2 bad input, 3 failure.
    """
    display_name = name or Path(os.fspath(out_dir)).name or "merge"
    stage = "policy"
    policy_obj: GatePolicy = GatePolicy()
    policy_source: str | None = None
    partial: dict[str, Any] = {}
    claim: OutputClaim | None = None  # held from the "output" stage on: the lock, the staging dirs
    benign = None if benign in (None, "", "none", "None") else benign
    with ExitStack() as stack:
        try:
            if isinstance(policy, GatePolicy):
                policy_obj = policy
            else:
                policy_obj, policy_source = load_policy(policy)
            partial["policy"] = policy_obj
            partial["policy_source"] = scrub(policy_source) if policy_source else None
            preset, judge, prompts, max_new_tokens = resolve_protocol(
                protocol, judge=judge, prompts=prompts, max_new_tokens=max_new_tokens)
            partial["protocol"] = preset.name
            partial["command"] = reproduce_command(
                config, out_dir, policy_source=policy_source, prompts=prompts, benign=benign,
                judge=judge, backend=backend, device=device, limit=limit,
                max_new_tokens=max_new_tokens, seed=seed, name=name, weighting=weighting,
                weighting_options=weighting_options, protocol=preset.name,
                max_prompt_tokens=max_prompt_tokens)

            if device == "auto":
                device = _auto_device()

            stage = "config"
            recipe = read_recipe(config)
            partial["merge"] = MergeInfo(
                method=recipe.method, base_model=scrub(recipe.base_model.raw) if recipe.base_model else None,
                config_name=recipe.name, config_text=scrub(redact_yaml(recipe.text)),
                config_sha256=recipe.sha256, config_redacted=redact_yaml(recipe.text) != recipe.text,
                models=[scrub(r.raw) for r in recipe.models])
            targets = [_audit_target(ref, recipe) for ref in recipe.models]

            stage = "output"
            inputs = _local_inputs(recipe, judge)
            target = check_output_dir(out_dir, kinds=MERGE_OUTPUTS, inputs=inputs, option="--out")
            display_name = name or target.path.name or "merge"
            claim = stack.enter_context(target.claim(inputs=inputs))
            staging = claim.staging()  # the new output, swapped in once its verdict is written

            merge = merge_fn or _default_merge_fn()
            build_config = Path(config)
            optimized = None
            declared_target: str | None = None
            if weighting != "declared":
                stage = "weighting"
                work = claim.staging("weighting")
                optimized = _optimize(config, weighting, work, judge=judge, device=device, seed=seed,
                                      cache=cache, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                      options=weighting_options or {})
                build_config = work / "weighting" / "recipe.yml"
                declared_target = str(work / "declared-merge")
                merge(Path(config), Path(declared_target), device=device, seed=seed)
                partial["merge"] = partial["merge"].model_copy(update={
                    "config_text": scrub(redact_yaml(optimized.recipe_yaml)),
                    "config_redacted": redact_yaml(optimized.recipe_yaml) != optimized.recipe_yaml,
                    "config_sha256": hashlib.sha256(optimized.recipe_yaml.encode()).hexdigest()})

            stage = "merge"
            log.info("rebuilding %s into %s", scrub(recipe.name), scrub(str(target.path)))
            merge(build_config, staging, device=device, seed=seed)
            if not (staging / RECIPE_FILENAME).exists():
                write_redacted_yaml(staging / RECIPE_FILENAME, build_config.read_text(encoding="utf-8"))
            if optimized is not None:  # the data the weights were chosen with travel with the model
                shutil.copytree(work / "weighting", staging / "weighting")

            stage = "audit"
            audit_models = audit_fn or _default_audit_fn()
            merged_target = str(staging)
            extra_targets = [declared_target] if declared_target else []
            log.info("auditing %d constituent(s) and the merge", len(targets))
            audit_kwargs: dict[str, Any] = {"protocol": preset.name} if preset.name != "default" else {}
            audit = audit_models(
                [*targets, *extra_targets, merged_target], prompts=prompts, benign=benign, judge=judge,
                backend=backend, device=device, limit=limit, seed=seed, max_new_tokens=max_new_tokens,
                max_prompt_tokens=max_prompt_tokens, batch_size=batch_size, cache=cache,
                trust_remote_code=trust_remote_code, progress=progress, **audit_kwargs)
            partial.update(judge=audit.judge, prompts=audit.prompts, benign=audit.benign,
                           generation=audit.generation,
                           over_refusal_judge=getattr(audit, "over_refusal_judge", None),
                           off_protocol=getattr(audit, "off_protocol", None))

            stage = "decide"
            licenses: dict[str, DeclaredLicense | None] = {}
            constituents = []
            for i, (ref, target_id) in enumerate(zip(recipe.models, targets, strict=True)):
                score = _score_for(audit, target_id, i)
                declared = _constituent_license(ref, target_id)
                licenses[scrub(ref.raw)] = declared
                summary = ModelSummary.from_score(
                    score, role="constituent", name=scrub(ref.raw), hub_id=ref.hub_id,
                    license=declared.license if declared else None)
                if summary.revision is None and ref.revision:
                    summary = summary.model_copy(update={"revision": ref.revision})
                constituents.append(summary)
            merged = ModelSummary.from_score(
                _score_for(audit, merged_target, len(targets) + len(extra_targets)), role="merge",
                name=display_name)
            if optimized is not None:
                declared_score = _score_for(audit, str(declared_target), len(targets))
                partial["weighting"] = _weighting_summary(optimized, recipe.text, declared_score.alignment,
                                                          merged.alignment)
            output_files = sorted(hash_directory(staging))
            best_index = constituents.index(best_input(constituents))
            paired = paired_with_best(getattr(audit, "comparisons", []), targets[best_index], merged_target,
                                      best=constituents[best_index].label, merge=display_name)
            gate = decide(merged, constituents, policy_obj, output_files=output_files,
                          hub_references=[r.raw for r in recipe.models if r.is_hub], paired=paired)
            report = RunReport(
                name=display_name, decision=gate.decision, reasons=[scrub(r) for r in gate.reasons],
                gate=gate, merged=merged, constituents=constituents, best_input=gate.best_input,
                license=derive_license(licenses), plot=PLOT_FILENAME if card else None,
                card=CARD_FILENAME if card else None, **partial)

            stage = "card"
            if card:
                write_card(report, staging)

            stage = "report"
            report = report.model_copy(update={"files": hash_directory(staging)})
            write_report(report, staging / REPORT_FILENAME)

            stage = "commit"
            claim.commit(staging)
            log.info("decision: %s", report.decision)
            return report
        except (Exception, KeyboardInterrupt) as exc:
            if claim is None and stage in ("policy", "config"):
                # the output was not checked yet: write the error report only where a run may write
                claim = _try_claim(out_dir, stack)
            report = _error_report(exc, stage=stage, name=display_name, partial=partial, claim=claim)
            if isinstance(exc, KeyboardInterrupt):
                raise
            return report
    raise AssertionError("unreachable")  # pragma: no cover - the with block always returns or raises


WEIGHTING_STRATEGIES = ("declared", "cocktail", "evomm")


def _optimize(config: str | Path, strategy: str, work: Path, *, judge: str, device: str, seed: int,
              cache: str | None, max_new_tokens: int, batch_size: int | None, options: dict[str, Any]) -> Any:
    """Choose the merge weights with data; writes the optimized recipe and data under work/weighting."""
    if strategy not in WEIGHTING_STRATEGIES:
        raise ConfigError(f"unknown weighting '{strategy}'", field="weighting",
                          hint=f"use one of {', '.join(WEIGHTING_STRATEGIES)}")
    from mergegate.weighting import optimize_recipe

    return optimize_recipe(Path(config), strategy=strategy, judge=judge, device=device, seed=seed,
                           cache=cache, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           out_dir=work / "weighting", **options)


def _weighting_summary(result: Any, declared_text: str, declared_alignment: float,
                       optimized_alignment: float) -> WeightingSummary:
    return WeightingSummary(
        strategy=result.strategy, alpha=result.alpha, evaluations=result.evaluations,
        seconds=round(result.seconds, 2), declared_recipe=scrub(redact_yaml(declared_text)),
        declared=WeightingSide(weights=dict(result.declared), alignment=declared_alignment,
                               safety_loss=result.declared_losses.safety,
                               domain_loss=result.declared_losses.expert),
        optimized=WeightingSide(weights=dict(result.optimized), alignment=optimized_alignment,
                                safety_loss=result.optimized_losses.safety,
                                domain_loss=result.optimized_losses.expert),
        safety_examples=result.safety_data.n_examples, expert_examples=result.expert_data.n_examples)


def _try_claim(out_dir: str | Path, stack: ExitStack) -> OutputClaim | None:
    try:
        return stack.enter_context(check_output_dir(out_dir, kinds=MERGE_OUTPUTS, option="--out").claim())
    except InputError:
        return None


def report_written(report: RunReport, out_dir: str | Path) -> Path | None:
    """``out_dir/report.json`` when it is ``report`` (a refused or busy output gets none)."""
    from mergegate.outdir import expand_path

    try:
        path = expand_path(out_dir) / REPORT_FILENAME
        return path if path.is_file() and load_report(path).created_at == report.created_at else None
    except InputError:
        return None


def _error_report(exc: BaseException, *, stage: str, name: str, partial: dict[str, Any],
                  claim: OutputClaim | None) -> RunReport:
    if isinstance(exc, MergegateError):
        message, exit_code = exc.render(), exc.exit_code
    elif isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError)) and stage in (
            "policy", "config", "output"):
        message, exit_code = str(exc), 2
    else:
        message, exit_code = f"{type(exc).__name__}: {exc}", 3
    if type(exc).__name__ == "ValidationError" and stage in ("policy", "config", "merge"):
        exit_code = 2  # a recipe the merging engine's config model rejected
    message = scrub(message)
    log.debug("gate failed during %s", stage, exc_info=exc)
    report = RunReport(
        name=name, decision="error", reasons=[f"{stage} failed: {message}"],
        error=ErrorInfo(type=type(exc).__name__, message=message, exit_code=exit_code, stage=stage),
        **partial)
    if claim is None:
        return report  # the output was refused or is another run's: write nothing there
    try:
        kept = _set_aside_previous_verdict(claim.path)
        if kept is not None:
            report = report.model_copy(update={"reasons": [*report.reasons, (
                f"the previous output was left as it was (its '{kept}' report is now "
                f"{PREVIOUS_REPORT_FILENAME}); nothing here is vouched for by this run")]})
        write_report(report, claim.path / REPORT_FILENAME)
    except OSError as write_exc:  # the report is best effort; the exit code still says error
        log.warning("could not write the error report: %s", scrub(str(write_exc)))
    return report


def _set_aside_previous_verdict(out: Path) -> str | None:
    """Before an error report goes into ``out``: move a previous pass/blocked ``report.json`` to
    ``report.previous.json`` (the files it vouches for stay exactly as they are). Returns that
    verdict, or None."""
    out.mkdir(parents=True, exist_ok=True)
    current, aside = out / REPORT_FILENAME, out / PREVIOUS_REPORT_FILENAME
    for path in (current, aside):
        if not path.is_file():
            continue
        try:
            previous = load_report(path)
        except InputError:
            continue  # unreadable: report.json is overwritten by the error report
        if previous.decision == "error":
            continue
        if path == current:
            os.replace(current, aside)
        return previous.decision
    return None


def copy_report(report_path: Path, destination: str | Path) -> Path:
    """Copy ``report.json`` to ``destination`` (``--json``)."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(report_path, destination)
    return destination


def summary_lines(report: RunReport) -> list[str]:
    """A one-screen, plain-text summary of a run (for terminals and logs)."""
    lines = [f"mergegate: {report.name}: {report.decision.upper()}"]
    for m in report.models():
        mark = " (merge)" if m.role == "merge" else (" (best input)" if m.model == report.best_input else "")
        over = f", over-refusal {m.over_refusal * 100:.1f} %" if m.over_refusal is not None else ""
        long = (f", {m.n_too_long + m.n_benign_too_long} prompt(s) over the budget not answered"
                if m.n_too_long or m.n_benign_too_long else "")
        lines.append(f"  {m.alignment * 100:5.1f} % aligned "
                     f"[{m.interval.low * 100:.1f}–{m.interval.high * 100:.1f}]{over}{long}  {m.model}{mark}")
    if report.gate:
        for rule in report.gate.rules:
            lines.append(f"  [{rule.verdict}] {rule.rule}: {rule.detail}")
        p = report.gate.paired
        if p is not None:
            lines.append(f"  paired with {p.best_input} on the same {p.n} prompts: merge safe & best unsafe "
                         f"{p.merge_safe_best_unsafe}, merge unsafe & best safe {p.merge_unsafe_best_safe}, "
                         f"exact McNemar p = {p.p_value:.3g}")
    elif report.reasons:
        lines.extend(f"  {reason}" for reason in report.reasons)
    if report.merged and report.merged.by_guard_category:
        from mergegate.gate.card import guard_category_label

        cats = ", ".join(f"{guard_category_label(code, report)}: {n}"
                         for code, n in report.merged.by_guard_category.items())
        lines.append(f"  merge's unsafe answers by judge category: {cats}")
    if report.off_protocol is not None and report.off_protocol.n_dominant:
        o = report.off_protocol
        lines.append(f"  judge off-protocol on {o.n_dominant} of {o.n} items ({o.share:.1%}; scored from "
                     "P(unsafe) vs P(safe) all the same)")
    return [scrub(line) for line in lines]


__all__ = ["run_gate", "report_written", "reproduce_command", "summary_lines", "copy_report", "DEFAULT_PROMPTS",
           "DEFAULT_BENIGN", "DEFAULT_JUDGE"]
