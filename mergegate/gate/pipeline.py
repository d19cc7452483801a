"""``run_gate``: rebuild a declared merge, audit it and its constituents, decide, write the output.

Fail closed: whatever goes wrong (bad input, a crashed merge, a broken judge, a bug in mergegate)
ends in a report with ``decision: error`` and no card; a stale card or report from an earlier run
in the same directory is removed before anything else happens, so nothing can claim a pass that
this run did not establish.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mergegate.audit.prompt_limits import DEFAULT_MAX_PROMPT_TOKENS
from mergegate.errors import AuditError, ConfigError, InputError, MergegateError
from mergegate.gate.card import scrub, write_card
from mergegate.gate.decision import decide
from mergegate.gate.hashing import hash_directory
from mergegate.gate.licenses import DeclaredLicense, derive_license, read_hub_license, read_local_license
from mergegate.gate.policy import GatePolicy, load_policy
from mergegate.gate.recipe import ModelReference, Recipe, load_recipe
from mergegate.redact import redact_yaml
from mergegate.safe_write import write_yaml_text
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

log = logging.getLogger(__name__)

DEFAULT_PROMPTS = "beavertails"
DEFAULT_BENIGN = "xstest"
DEFAULT_JUDGE = "meta-llama/Llama-Guard-3-8B"

MergeFn = Callable[..., Any]
AuditFn = Callable[..., Any]


def _default_merge_fn() -> MergeFn:
    from mergegate.merging import run_merge

    return run_merge


def _default_audit_fn() -> AuditFn:
    from mergegate.audit import audit_models

    return audit_models


def reproduce_command(config: str | Path, out_dir: str | Path, *, policy_source: str | None,
                      prompts: str, benign: str | None, judge: str, backend: str, device: str,
                      limit: int | None, max_new_tokens: int, seed: int, name: str | None,
                      weighting: str = "declared", weighting_options: dict[str, Any] | None = None,
                      max_prompt_tokens: int | None = DEFAULT_MAX_PROMPT_TOKENS) -> str:
    """The ``mergegate run`` command line that repeats a run (redacted, home as ``~``)."""
    argv = ["mergegate", "run", str(config), "--out", str(out_dir)]
    if policy_source:
        argv += ["--policy", policy_source]
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


def _prepare_out_dir(out_dir: Path) -> None:
    """Make ``out_dir`` ready: empty, or a previous mergegate output whose files we remove."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("the output path exists and is not a directory", source=str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = [p for p in out_dir.iterdir()]
    if not entries:
        return
    previous = out_dir / REPORT_FILENAME
    if not previous.is_file():
        raise InputError("the output directory is not empty and holds no mergegate report",
                         source=str(out_dir),
                         hint="pass a new or empty directory to --out (the merge is written there)")
    try:
        recorded = list(load_report(previous).files)
    except InputError:
        recorded = []
    # Remove the verdict first: from here on nothing in the directory claims anything.
    previous.unlink()
    for name in [CARD_FILENAME, PLOT_FILENAME, *recorded]:
        target = (out_dir / name).resolve()
        if out_dir.resolve() in target.parents and target.is_file():
            target.unlink()
    for path in sorted(out_dir.rglob("*"), reverse=True):  # drop directories left empty
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _remove_claims(out_dir: Path) -> None:
    """After a failure: no card, no chart, nothing that could be read as a verdict."""
    for name in (CARD_FILENAME, PLOT_FILENAME):
        path = out_dir / name
        if path.is_file():
            path.unlink()


def _resolve_local(ref: ModelReference, recipe: Recipe) -> Path | None:
    candidates = [Path(ref.path).expanduser()]
    if recipe.directory is not None and not Path(ref.path).is_absolute():
        candidates.append(recipe.directory / ref.path)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return None


def _audit_target(ref: ModelReference, recipe: Recipe) -> str:
    """What the audit loads for a recipe reference: the local directory or the (pinned) Hub id."""
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


def _constituent_license(ref: ModelReference, target: str) -> DeclaredLicense | None:
    if ref.is_hub:
        return read_hub_license(ref.path, ref.revision)
    return read_local_license(target)


def run_gate(
    config: str | Path,
    out_dir: str | Path,
    *,
    policy: GatePolicy | str | Path | None = None,
    prompts: str = DEFAULT_PROMPTS,
    benign: str | None = DEFAULT_BENIGN,
    judge: str = DEFAULT_JUDGE,
    backend: str = "transformers",
    device: str = "cpu",
    limit: int | None = None,
    max_new_tokens: int = 512,
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
) -> RunReport:
    """Rebuild the merge declared in ``config`` into ``out_dir``, audit it, decide and report.

    Args:
        config: the mergekit recipe (YAML file).
        out_dir: where the merged weights, ``README.md`` card, chart and ``report.json`` go. Must be
            new, empty or a previous mergegate output (whose files are replaced).
        policy: a :class:`GatePolicy`, a policy file, or ``None`` for ``mergegate.yml`` / defaults.
        prompts, benign, judge, backend, device, limit, max_new_tokens, max_prompt_tokens, seed,
            batch_size, cache, trust_remote_code, progress: passed to :func:`mergegate.audit.audit_models`
            (``benign=None`` skips over-refusal).
        name: the merged model's display name (default: the output directory's name).
        card: write the card and chart (pass/blocked runs only).
        weighting: ``declared`` builds the recipe as written; ``cocktail`` / ``evomm`` first choose
            the weights with data (:func:`mergegate.merging.weighting.optimize_recipe`), build and
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
    out = Path(out_dir)
    display_name = name or out.resolve().name or "merge"
    stage = "policy"
    policy_obj: GatePolicy = GatePolicy()
    policy_source: str | None = None
    partial: dict[str, Any] = {}
    owned = False  # out_dir is ours to write (new, empty, or a previous mergegate output)
    cleanup: list[Path] = []
    benign = None if benign in (None, "", "none", "None") else benign
    try:
        if isinstance(policy, GatePolicy):
            policy_obj = policy
        else:
            policy_obj, policy_source = load_policy(policy)
        partial["policy"] = policy_obj
        partial["policy_source"] = scrub(policy_source) if policy_source else None
        partial["command"] = reproduce_command(
            config, out_dir, policy_source=policy_source, prompts=prompts, benign=benign,
            judge=judge, backend=backend, device=device, limit=limit,
            max_new_tokens=max_new_tokens, seed=seed, name=name, weighting=weighting,
            weighting_options=weighting_options, max_prompt_tokens=max_prompt_tokens)

        if device == "auto":
            device = _auto_device()

        stage = "config"
        recipe = load_recipe(config)
        partial["merge"] = MergeInfo(
            method=recipe.method, base_model=scrub(recipe.base_model.raw) if recipe.base_model else None,
            config_name=recipe.name, config_text=scrub(redact_yaml(recipe.text)), config_sha256=recipe.sha256,
            config_redacted=redact_yaml(recipe.text) != recipe.text, models=[scrub(r.raw) for r in recipe.models])
        targets = [_audit_target(ref, recipe) for ref in recipe.models]

        stage = "output"
        _prepare_out_dir(out)
        owned = True

        merge = merge_fn or _default_merge_fn()
        build_config = Path(config)
        optimized = None
        declared_target: str | None = None
        if weighting != "declared":
            stage = "weighting"
            out.parent.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".{out.name}.weighting-", dir=out.parent))
            cleanup.append(work)
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
        log.info("rebuilding %s into %s", scrub(recipe.name), scrub(str(out)))
        merge(build_config, out, device=device, seed=seed)
        if not (out / RECIPE_FILENAME).exists():
            write_yaml_text(out / RECIPE_FILENAME, build_config.read_text(encoding="utf-8"))
        if optimized is not None:  # the data the weights were chosen with travel with the model
            shutil.copytree(work / "weighting", out / "weighting")

        stage = "audit"
        audit_models = audit_fn or _default_audit_fn()
        merged_target = str(out)
        extra_targets = [declared_target] if declared_target else []
        log.info("auditing %d constituent(s) and the merge", len(targets))
        audit = audit_models(
            [*targets, *extra_targets, merged_target], prompts=prompts, benign=benign, judge=judge,
            backend=backend, device=device, limit=limit, seed=seed, max_new_tokens=max_new_tokens,
            max_prompt_tokens=max_prompt_tokens, batch_size=batch_size, cache=cache,
            trust_remote_code=trust_remote_code, progress=progress)
        partial.update(judge=audit.judge, prompts=audit.prompts, benign=audit.benign,
                       generation=audit.generation)

        stage = "decide"
        licenses: dict[str, DeclaredLicense | None] = {}
        constituents = []
        for i, (ref, target) in enumerate(zip(recipe.models, targets, strict=True)):
            score = _score_for(audit, target, i)
            declared = _constituent_license(ref, target)
            licenses[scrub(ref.raw)] = declared
            summary = ModelSummary.from_score(
                score, role="constituent", name=scrub(ref.raw), hub_id=ref.hub_id,
                license=declared.license if declared else None)
            if summary.revision is None and ref.revision:
                summary = summary.model_copy(update={"revision": ref.revision})
            constituents.append(summary)
        merged = ModelSummary.from_score(_score_for(audit, merged_target, len(targets) + len(extra_targets)),
                                         role="merge", name=display_name)
        if optimized is not None:
            declared_score = _score_for(audit, str(declared_target), len(targets))
            partial["weighting"] = _weighting_summary(optimized, recipe.text, declared_score.alignment,
                                                      merged.alignment)
        output_files = sorted(hash_directory(out))
        gate = decide(merged, constituents, policy_obj, output_files=output_files,
                      hub_references=[r.raw for r in recipe.models if r.is_hub])
        report = RunReport(
            name=display_name, decision=gate.decision, reasons=[scrub(r) for r in gate.reasons],
            gate=gate, merged=merged, constituents=constituents, best_input=gate.best_input,
            license=derive_license(licenses), plot=PLOT_FILENAME if card else None,
            card=CARD_FILENAME if card else None, **partial)

        stage = "card"
        if card:
            write_card(report, out)

        stage = "report"
        report = report.model_copy(update={"files": hash_directory(out)})
        write_report(report, out / REPORT_FILENAME)
        log.info("decision: %s", report.decision)
        return report
    except (Exception, KeyboardInterrupt) as exc:
        report = _error_report(exc, stage=stage, name=display_name, partial=partial, out=out,
                               owned=owned)
        if isinstance(exc, KeyboardInterrupt):
            raise
        return report
    finally:
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)


WEIGHTING_STRATEGIES = ("declared", "cocktail", "evomm")


def _optimize(config: str | Path, strategy: str, work: Path, *, judge: str, device: str, seed: int,
              cache: str | None, max_new_tokens: int, batch_size: int | None, options: dict[str, Any]) -> Any:
    """Choose the merge weights with data; writes the optimized recipe and data under work/weighting."""
    if strategy not in WEIGHTING_STRATEGIES:
        raise ConfigError(f"unknown weighting '{strategy}'", field="weighting",
                          hint=f"use one of {', '.join(WEIGHTING_STRATEGIES)}")
    from mergegate.merging.weighting import optimize_recipe

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


def _error_report(exc: BaseException, *, stage: str, name: str, partial: dict[str, Any],
                  out: Path, owned: bool) -> RunReport:
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
    try:
        # Write where it cannot clobber someone else's files: a new or empty directory, or a
        # previous mergegate output (whose verdict must not outlive this failed run).
        mine = owned or not out.exists() or (out.is_dir() and (
            (out / REPORT_FILENAME).is_file() or not any(out.iterdir())))
        if mine:
            out.mkdir(parents=True, exist_ok=True)
            _remove_claims(out)
            write_report(report, out / REPORT_FILENAME)
    except OSError as write_exc:  # the report is best effort; the exit code still says error
        log.warning("could not write the error report: %s", scrub(str(write_exc)))
    return report


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
    elif report.reasons:
        lines.extend(f"  {reason}" for reason in report.reasons)
    return [scrub(line) for line in lines]


__all__ = ["run_gate", "reproduce_command", "summary_lines", "copy_report", "DEFAULT_PROMPTS",
           "DEFAULT_BENIGN", "DEFAULT_JUDGE"]
