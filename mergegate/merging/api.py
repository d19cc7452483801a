"""Library entry points: ``plan_merge`` (validate + plan, the dry run), ``run_merge`` (checked, locked,
atomic) and ``build_merge`` (into a directory the caller already owns)."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergegate import __version__
from mergegate.atomic import write_redacted_json, write_redacted_yaml
from mergegate.errors import InputError, MergeFailure
from mergegate.merging.config import MergeConfig, ModelReference, load_merge_config
from mergegate.merging.executor import execute_plan
from mergegate.merging.lora import resolve_adapter
from mergegate.merging.plan import MergePlan, build_plan, load_inputs
from mergegate.models.resolver import ResolvedModel, resolve_model, resolve_tokenizer_files
from mergegate.merging.tensor_io import ShardedWriter, parse_size
from mergegate.merging.tokenizer_files import copy_model_files
from mergegate.outdir import MERGE_OUTPUTS, check_output_dir
from mergegate.redact import redact_yaml

log = logging.getLogger(__name__)

PROVENANCE_FILE = "mergegate_provenance.json"


@dataclass
class MergeResult:
    """What ``run_merge`` produced and from what, pinned."""

    out_dir: Path
    config: MergeConfig
    config_text: str
    provenance: list[dict[str, Any]]  # one entry per input model: id, revision, file sha256s
    files: dict[str, str]  # output weight file -> sha256
    seed: int | None
    num_tensors: int
    total_bytes: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def _resolve_all(config: MergeConfig, *, allow_pickle: bool) -> dict[ModelReference, ResolvedModel]:
    models = {}
    for ref in config.referenced_models():
        model = resolve_model(ref, allow_pickle=allow_pickle)
        if ref.lora is not None:
            model.adapter = resolve_adapter(ref.lora, allow_pickle=allow_pickle)
        models[ref] = model
    return models


def plan_merge(config: str | Path | dict[str, Any] | MergeConfig, *, allow_pickle: bool = False) -> MergePlan:
    """Validate the recipe, resolve (and if needed download) the inputs and plan every tensor."""
    cfg = config if isinstance(config, MergeConfig) else load_merge_config(config)[0]
    models = _resolve_all(cfg, allow_pickle=allow_pickle)
    return build_plan(cfg, load_inputs(models, allow_pickle=allow_pickle),
                      tokenizer_dirs=_resolve_tokenizer_source(cfg, models))


def _resolve_tokenizer_source(config: MergeConfig, models: dict[ModelReference, ResolvedModel]
                              ) -> dict[ModelReference, Path]:
    """A ``tokenizer_source`` model that is not an input: only its tokenizer files, pinned."""
    choice = config.tokenizer_choice
    if not isinstance(choice, ModelReference) or choice in models:
        return {}
    return {choice: resolve_tokenizer_files(choice)}


def _check_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA device is available", field="device",
                         hint="use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise InputError(f"unknown device '{device}'", field="device", hint="use cpu, cuda, cuda:N or auto")
    return device


@dataclass
class _Prepared:
    cfg: MergeConfig
    text: str
    device: str
    max_shard: int | None
    plan: MergePlan
    seed: int | None


def _load(config: str | Path | dict[str, Any] | MergeConfig, config_text: str | None) -> tuple[MergeConfig, str]:
    if isinstance(config, MergeConfig):
        return config, config_text or config.to_yaml()
    cfg, text = load_merge_config(config)
    return cfg, config_text or text


def local_inputs(config: MergeConfig) -> list[Path]:
    """The recipe's local model directories, found without resolving (or downloading) anything."""
    found = []
    for ref in config.referenced_models():
        for part in (ref.path, ref.lora.path if ref.lora else None):
            path = Path(part).expanduser() if part else None
            if path is not None and path.is_dir():
                found.append(path)
    return found


def _prepare(config: str | Path | dict[str, Any] | MergeConfig, *, device: str, seed: int | None,
             out_shard_size: str | int | None, allow_pickle: bool, config_text: str | None) -> _Prepared:
    cfg, text = _load(config, config_text)
    device = _check_device(device)
    max_shard = parse_size(out_shard_size)
    plan = plan_merge(cfg, allow_pickle=allow_pickle)
    if plan.method.spec.stochastic and seed is None:
        seed = secrets.randbits(31)
        log.warning("merge_method %s is random and no --seed was given: using seed %d (recorded)",
                    cfg.merge_method, seed)
    return _Prepared(cfg=cfg, text=text, device=device, max_shard=max_shard, plan=plan, seed=seed)


def _write(prep: _Prepared, directory: Path, *, progress: bool, started: float) -> MergeResult:
    """Write the merge into ``directory`` (empty, owned by the caller)."""
    plan, cfg, text = prep.plan, prep.cfg, prep.text
    try:
        writer = ShardedWriter(directory, [t.out for t in plan.tasks], prep.max_shard)
        try:
            execute_plan(plan, writer, device=prep.device, seed=prep.seed, progress=progress)
            files = writer.finish({"mergegate_version": __version__})
        finally:
            writer.abort()
        write_redacted_json(directory / "config.json", plan.out_config)
        copy_model_files(cfg, plan, directory)
        # the recipe copy stays a valid recipe: a secret in it becomes "***" (redact_yaml)
        copy = text if text.endswith("\n") else text + "\n"
        write_redacted_yaml(directory / "mergekit_config.yml", copy)
        provenance = [im.model.provenance() for im in plan.inputs.values()]
        record = {"mergegate_version": __version__, "merge_method": cfg.merge_method, "seed": prep.seed,
                  "device": prep.device, "config_source": str(plan.config_source), "inputs": provenance,
                  "outputs": files,
                  # of the recipe as declared; config_redacted says when the copy beside it differs
                  "config_sha256": _sha256_text(text),
                  "config_redacted": redact_yaml(copy) != copy}
        if plan.tokenizer is not None:
            record["tokenizer"] = {"source": plan.tokenizer.source, "tokens": len(plan.tokenizer.vocab),
                                   "rows": plan.tokenizer.rows, "added": plan.tokenizer.added,
                                   "source_dirs": {str(k): str(v) for k, v in plan.tokenizer_dirs.items()}}
        write_redacted_json(directory / PROVENANCE_FILE, record)
    except OSError as exc:
        raise MergeFailure(f"writing the output failed: {exc}", source=str(directory),
                           hint="check free disk space and permissions") from exc
    return MergeResult(out_dir=directory, config=cfg, config_text=text, provenance=provenance, files=files,
                       seed=prep.seed, num_tensors=len(plan.tasks), total_bytes=plan.total_bytes,
                       seconds=time.perf_counter() - started, notes=plan.notes)


def run_merge(config: str | Path | dict[str, Any] | MergeConfig, out_dir: str | Path, *, device: str = "cpu",
              seed: int | None = None, out_shard_size: str | int | None = None, allow_pickle: bool = False,
              progress: bool = False, config_text: str | None = None) -> MergeResult:
    """Rebuild a merge recipe into ``out_dir`` (mergekit-compatible layout).

    ``out_dir`` must pass :func:`mergegate.outdir.check_output_dir`: new, empty, or a previous
    output of ``mergegate merge``/``run`` or mergekit-yaml (``~`` and ``$VARS`` are expanded;
    a foreign non-empty directory, a file, ``/``, home, the current directory and any directory
    overlapping an input model are refused with :class:`InputError`). The output is built in a
    sibling ``.NAME.partial-*`` directory under the output's lock and swapped in atomically only
    when complete, so a failure never leaves a partial model that looks finished and never costs
    the previous output.
    """
    started = time.perf_counter()
    cfg, text = _load(config, config_text)
    # checked before anything is resolved or downloaded, then again under the lock
    target = check_output_dir(out_dir, kinds=MERGE_OUTPUTS, inputs=local_inputs(cfg), option="OUT_DIR")
    prep = _prepare(cfg, device=device, seed=seed, out_shard_size=out_shard_size,
                    allow_pickle=allow_pickle, config_text=text)
    inputs = [im.model.path for im in prep.plan.inputs.values()]
    with target.claim(inputs=inputs) as claim:
        result = _write(prep, claim.staging(), progress=progress, started=started)
        result.out_dir = claim.commit(Path(result.out_dir))
    result.seconds = time.perf_counter() - started
    return result


def build_merge(config: str | Path | dict[str, Any] | MergeConfig, directory: str | Path, *, device: str = "cpu",
                seed: int | None = None, out_shard_size: str | int | None = None, allow_pickle: bool = False,
                progress: bool = False, config_text: str | None = None) -> MergeResult:
    """Write the merge straight into ``directory``: an empty (or new) directory the caller owns.

    No output check, no lock, no swap: for callers that already hold an
    :class:`mergegate.outdir.OutputClaim` and build in its staging directory (``mergegate run``).
    Everything else should call :func:`run_merge`.
    """
    started = time.perf_counter()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise MergeFailure("build_merge needs an empty directory", source=str(directory))
    prep = _prepare(config, device=device, seed=seed, out_shard_size=out_shard_size,
                    allow_pickle=allow_pickle, config_text=config_text)
    return _write(prep, directory, progress=progress, started=started)


def _sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()

