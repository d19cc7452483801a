"""Provenance check: rebuild a published recipe and compare it, tensor by tensor, with the weights.

``reproduced``: every tensor of the rebuild has the same name, dtype, shape and bytes as the
published one. ``differs``: some do not (the first ones are named). ``not checked``: the recipe is
random (DARE, DELLA, ...) and no seed is recorded in the card or ``mergegate_provenance.json``,
the inputs exceed the size budget, the recipe names local paths, or the engine cannot run it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mergegate.errors import MergegateError
from mergegate.batch.records import Provenance

log = logging.getLogger(__name__)

MAX_LISTED = 5
_CHUNK = 8 << 20


def tensor_digests(directory: Path) -> dict[str, tuple[str, tuple[int, ...], str]]:
    """``{tensor name: (dtype, shape, sha256 of its bytes)}`` in file order, read straight from the
    safetensors byte ranges (no tensor is materialised)."""
    from mergegate.merging.tensor_io import ModelReader

    reader = ModelReader(Path(directory))
    out: dict[str, tuple[str, tuple[int, ...], str]] = {}
    handles: dict[Path, Any] = {}
    try:
        for name, info in sorted(reader.tensors.items(), key=lambda kv: (kv[1].file.name, kv[1].start)):
            fh = handles.get(info.file)
            if fh is None:
                fh = handles[info.file] = open(info.file, "rb")  # noqa: SIM115 - closed below
            fh.seek(info.start)
            h = hashlib.sha256()
            left = info.nbytes
            while left > 0:
                chunk = fh.read(min(left, _CHUNK))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            out[name] = (str(info.dtype).removeprefix("torch."), tuple(info.shape), h.hexdigest())
    finally:
        for fh in handles.values():
            fh.close()
    return out


def compare_tensors(published: Path, rebuilt: Path) -> tuple[list[str], int]:
    """Names of the tensors that differ (missing on either side, other dtype/shape/bytes), in the
    published file order, and the number of tensors compared."""
    pub, new = tensor_digests(published), tensor_digests(rebuilt)
    differing = [n for n in pub if pub[n] != new.get(n)] + [n for n in new if n not in pub]
    return differing, len(pub.keys() | new.keys())


def recorded_seed(meta: dict[str, Any], snapshot: Path) -> int | None:
    """A merge seed the publisher recorded: mergegate's provenance file, or the card's metadata."""
    prov = snapshot / "mergegate_provenance.json"
    if prov.is_file():
        try:
            seed = json.loads(prov.read_text(encoding="utf-8")).get("seed")
            if isinstance(seed, int):
                return seed
        except (ValueError, AttributeError):
            pass
    for key in ("merge_seed", "mergekit_seed", "random_seed", "seed"):
        value = meta.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _pin_recipe(data: Any, pins: dict[str, str]) -> Any:
    """The recipe with every Hub reference pinned to the commit that was audited."""
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            if k in ("model", "base_model") and isinstance(v, str):
                path = v.strip().split("@", 1)[0]
                out[k] = f"{path}@{pins[path]}" if path in pins and "+" not in path else v
            else:
                out[k] = _pin_recipe(v, pins)
        return out
    if isinstance(data, list):
        return [_pin_recipe(v, pins) for v in data]
    return data


def check_provenance(recipe_data: dict[str, Any], recipe_text: str, published: Path, *,
                     pins: dict[str, str], seed: int | None, max_rebuild_bytes: int | None,
                     work_dir: Path, local_paths: list[str] | None = None) -> Provenance:
    """Rebuild ``recipe_data`` (Hub references pinned by ``pins``) and compare with ``published``."""
    from mergegate.merging.api import plan_merge, run_merge
    from mergegate.merging.config import parse_merge_config

    if local_paths:
        return Provenance(status="not checked", reason="the recipe names local paths: "
                          + ", ".join(local_paths))
    try:
        cfg = parse_merge_config(_pin_recipe(recipe_data, pins), source="recipe")
        plan = plan_merge(cfg)
    except MergegateError as exc:
        return Provenance(status="not checked", reason=f"the recipe cannot be rebuilt: {exc.message}")
    input_bytes = sum(f.stat().st_size for im in plan.inputs.values() for f in im.model.weight_files())
    budget = max_rebuild_bytes
    if budget is not None and max(input_bytes, plan.total_bytes) > budget:
        return Provenance(status="not checked",
                          reason=f"over the rebuild budget ({max(input_bytes, plan.total_bytes) / 1e9:.2f} GB "
                                 f"> {budget / 1e9:.2f} GB; raise --max-rebuild-gb)")
    if plan.method.spec.stochastic and seed is None:
        return Provenance(status="not checked",
                          reason=f"{cfg.merge_method} is random and no seed is recorded in the card or "
                                 "mergegate_provenance.json")
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="rebuild-", dir=work_dir))
    try:
        try:
            run_merge(cfg, tmp / "out", seed=seed, config_text=recipe_text)
        except MergegateError as exc:
            return Provenance(status="not checked", reason=f"the rebuild failed: {exc.message}", seed=seed)
        differing, n = compare_tensors(published, tmp / "out")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if differing:
        return Provenance(status="differs", differing_tensors=differing[:MAX_LISTED], n_differing=len(differing),
                          n_tensors=n, seed=seed,
                          reason=f"{len(differing)} of {n} tensors differ from the rebuild")
    return Provenance(status="reproduced", n_tensors=n, seed=seed,
                      reason=f"all {n} tensors match the rebuild byte for byte")


__all__ = ["check_provenance", "compare_tensors", "tensor_digests", "recorded_seed"]
