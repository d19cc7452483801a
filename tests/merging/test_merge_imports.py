"""`mergegate merge` imports only what merging needs: its fixed start-up is most of a small merge's
time, so a stray import of transformers, huggingface_hub (for local models), jinja2, matplotlib or
the audit/gate packages would show directly in the time ratio to mergekit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mergegate.merging.random_models import make_family

from merge_helpers import TINY, write_config

# third-party packages a local merge never needs (torch, pydantic and yaml it does)
NOT_NEEDED = {"transformers", "huggingface_hub", "jinja2", "matplotlib", "datasets", "github", "cma", "tokenizers",
              "safetensors", "requests", "mergekit", "scipy", "pandas"}
NOT_NEEDED_OWN = ("mergegate.audit", "mergegate.gate", "mergegate.batch", "mergegate.weighting",
                  "mergegate.merging.weighting")

_PROBE = """
import json, sys
from mergegate.cli.main import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:  # --help
    rc = exc.code
mods = set(sys.modules)
print(json.dumps({"rc": rc, "tops": sorted({m.split(".")[0] for m in mods}),
                  "own": sorted(m for m in mods if m.startswith("mergegate."))}))
"""


def _probe(*argv: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_local_merge_imports_only_torch_pydantic_and_yaml(tmp_path: Path) -> None:
    base, (e1,) = make_family(tmp_path / "m", 1, shape=TINY, seed=3)
    cfg = write_config({"merge_method": "slerp", "base_model": str(base), "parameters": {"t": 0.5},
                        "models": [{"model": str(base)}, {"model": str(e1)}]}, tmp_path / "recipe.yml")
    seen = _probe("merge", str(cfg), str(tmp_path / "out"))
    assert seen["rc"] == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert not NOT_NEEDED & set(seen["tops"]), NOT_NEEDED & set(seen["tops"])
    assert not [m for m in seen["own"] if m.startswith(NOT_NEEDED_OWN)]
    assert {"torch", "pydantic", "yaml"} <= set(seen["tops"])


def test_merge_help_imports_neither_torch_nor_pydantic() -> None:
    seen = _probe("merge", "--help")
    assert seen["rc"] == 0
    assert not {"torch", "pydantic", "transformers", "huggingface_hub"} & set(seen["tops"])
