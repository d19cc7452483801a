"""`mergegate merge` imports only what merging needs: its fixed start-up is most of a small merge's
time, so a stray import of transformers, huggingface_hub's HTTP stack (for local models), jinja2,
matplotlib or the audit/gate packages would show directly in the time ratio to mergekit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mergegate.merging.random_models import make_family

from merge_helpers import TINY, write_config

# third-party packages a local merge never needs (torch, pydantic and yaml it does)
NOT_NEEDED = {"transformers", "httpx", "httpx2", "jinja2", "matplotlib", "datasets", "github", "cma", "tokenizers",
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
                  "own": sorted(m for m in mods if m.startswith("mergegate.")),
                  "hub": sorted(m for m in mods if m.split(".")[0] == "huggingface_hub")}))
"""


def _probe(*argv: str, hf_home: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN_PATH", "HF_OIDC_RESOURCE")}
    if hf_home is not None:  # no `hf auth login` token file unless the test writes one
        env["HF_HOME"] = str(hf_home)
    out = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, check=True,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_local_merge_imports_only_torch_pydantic_and_yaml(tmp_path: Path) -> None:
    base, (e1,) = make_family(tmp_path / "m", 1, shape=TINY, seed=3)
    cfg = write_config({"merge_method": "slerp", "base_model": str(base), "parameters": {"t": 0.5},
                        "models": [{"model": str(base)}, {"model": str(e1)}]}, tmp_path / "recipe.yml")
    seen = _probe("merge", str(cfg), str(tmp_path / "out"), hf_home=tmp_path / "hf")
    assert seen["rc"] == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert not NOT_NEEDED & set(seen["tops"]), NOT_NEEDED & set(seen["tops"])
    assert not [m for m in seen["own"] if m.startswith(NOT_NEEDED_OWN)]
    assert {"torch", "pydantic", "yaml"} <= set(seen["tops"])
    # of huggingface_hub only its path constants (redaction asks where `hf auth login` keeps a token)
    assert set(seen["hub"]) <= {"huggingface_hub", "huggingface_hub.constants"}, seen["hub"]


def test_merge_help_imports_neither_torch_nor_pydantic() -> None:
    seen = _probe("merge", "--help")
    assert seen["rc"] == 0
    assert not {"torch", "pydantic", "transformers", "huggingface_hub"} & set(seen["tops"])


def test_a_stored_login_token_is_still_redacted_from_a_local_merge(tmp_path: Path) -> None:
    """Redaction imports huggingface_hub's get_token only when a login token file exists: then the
    stored token (here not hf_-shaped, so only the lookup can know it) never reaches the output."""
    token = "custom-login-token-not-hf-shaped-123"
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "token").write_text(token + "\n")
    base, (e1,) = make_family(tmp_path / "m", 1, shape=TINY, seed=3)
    cfg = tmp_path / "recipe.yml"
    cfg.write_text(f"# pasted by mistake: {token}\n" + (write_config(
        {"merge_method": "slerp", "base_model": str(base), "parameters": {"t": 0.5},
         "models": [{"model": str(base)}, {"model": str(e1)}]}, tmp_path / "plain.yml").read_text()))
    seen = _probe("merge", str(cfg), str(tmp_path / "out"), hf_home=tmp_path / "hf")
    assert seen["rc"] == 0
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix != ".safetensors"]
    assert any("pasted by mistake" in p.read_text() for p in written)  # the recipe copy keeps comments
    assert not [p.name for p in written if token in p.read_text()]
