"""Library entry points: ``plan_merge`` (validate + plan, the dry run) and ``run_merge``."""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mergegate import __version__
from mergegate.atomic import replace_dir
from mergegate.errors import InputError, MergegateError, MergeFailure
from mergegate.merging.config import MergeConfig, ModelReference, load_merge_config
from mergegate.merging.executor import execute_plan
from mergegate.merging.plan import MergePlan, build_plan, load_inputs
from mergegate.merging.resolver import ResolvedModel, resolve_model
from mergegate.merging.tensor_io import ShardedWriter, parse_size
from mergegate.merging.tokenizer_files import copy_model_files
from mergegate.redact import redact_yaml
from mergegate.safe_write import write_json, write_yaml_text

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
    return {ref: resolve_model(ref, allow_pickle=allow_pickle) for ref in config.referenced_models()}


def plan_merge(config: str | Path | dict[str, Any] | MergeConfig, *, allow_pickle: bool = False) -> MergePlan:
    """Validate the recipe, resolve (and if needed download) the inputs and plan every tensor."""
    cfg = config if isinstance(config, MergeConfig) else load_merge_config(config)[0]
    models = _resolve_all(cfg, allow_pickle=allow_pickle)
    return build_plan(cfg, load_inputs(models, allow_pickle=allow_pickle))


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


def run_merge(config: str | Path | dict[str, Any] | MergeConfig, out_dir: str | Path, *, device: str = "cpu",
              seed: int | None = None, out_shard_size: str | int | None = None, allow_pickle: bool = False,
              progress: bool = False, config_text: str | None = None) -> MergeResult:
    """Rebuild a merge recipe into ``out_dir`` (mergekit-compatible layout).

    The output is built in a temporary sibling directory and renamed into place only when complete,
    so a failure never leaves a partial model that looks finished.
    """
    started = time.perf_counter()
    if isinstance(config, MergeConfig):
        cfg, text = config, config_text or config.to_yaml()
    else:
        cfg, text = load_merge_config(config)
        text = config_text or text
    device = _check_device(device)
    max_shard = parse_size(out_shard_size)
    plan = plan_merge(cfg, allow_pickle=allow_pickle)
    if plan.method.spec.stochastic and seed is None:
        seed = secrets.randbits(31)
        log.warning("merge_method %s is random and no --seed was given: using seed %d (recorded)",
                    cfg.merge_method, seed)
    out_dir = Path(out_dir).expanduser().resolve()
    for im in plan.inputs.values():
        src = im.model.path.resolve()
        if out_dir == src or out_dir in src.parents or src in out_dir.parents:
            raise InputError(f"the output directory overlaps the input model {im.model.ref}", field="out_dir",
                             source=str(out_dir), hint="write the merge to a directory outside every input model")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        writer = ShardedWriter(tmp, [t.out for t in plan.tasks], max_shard)
        try:
            execute_plan(plan, writer, device=device, seed=seed, progress=progress)
            files = writer.finish({"mergegate_version": __version__})
        finally:
            writer.abort()
        write_json(tmp / "config.json", plan.out_config)
        copy_model_files(cfg, plan, tmp)
        # the recipe copy stays a valid recipe: a secret in it becomes "***" (redact_yaml)
        copy = text if text.endswith("\n") else text + "\n"
        write_yaml_text(tmp / "mergekit_config.yml", copy)
        provenance = [im.model.provenance() for im in plan.inputs.values()]
        record = {"mergegate_version": __version__, "merge_method": cfg.merge_method, "seed": seed,
                  "device": device, "config_source": str(plan.config_source), "inputs": provenance,
                  "outputs": files,
                  # of the recipe as declared; config_redacted says when the copy beside it differs
                  "config_sha256": _sha256_text(text),
                  "config_redacted": redact_yaml(copy) != copy}
        write_json(tmp / PROVENANCE_FILE, record)
        replace_dir(tmp, out_dir)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, (MergegateError, KeyboardInterrupt)):
            raise
        if isinstance(exc, OSError):
            raise MergeFailure(f"writing the output failed: {exc}", source=str(out_dir),
                               hint="check free disk space and permissions") from exc
        raise
    return MergeResult(out_dir=out_dir, config=cfg, config_text=text, provenance=provenance, files=files,
                       seed=seed, num_tensors=len(plan.tasks), total_bytes=plan.total_bytes,
                       seconds=time.perf_counter() - started, notes=plan.notes)


def _sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()

