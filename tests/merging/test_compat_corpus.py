"""The compatibility corpus (tests/merging/compat_recipes/): recipes written the way published
recipes are — mis-indented or typo'd keys, the modules: form mergekit writes into cards, LoRA
references, named chat templates, tokenizer unions over inputs with added tokens, the legacy
``model:`` tokenizer prefix, and slerp, nuslerp, sce, arcee_fusion, karcher, nearswap, multislerp,
ram and ramplus_tl over tokenizer unions (``union_<method>[_<dtype>].yml``; bf16, fp16 and fp32
compute) — run through mergekit 0.1.5 and ``mergegate merge`` on tiny random models: the weights
must be bit-identical and the tokenizer files byte-identical (a named chat
template is mergegate's own text, so it must render identically instead).

``refused/`` holds recipes mergegate refuses; each names, in its first line, the message that must
say which construct is refused. ``--dry-run`` and the real run must agree on every recipe.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from compat_helpers import RECIPES, expected_refusal, make_compat_family, render_recipe
from merge_helpers import load_dir

from mergegate.cli.main import main
from mergegate.merging import run_merge

pytest.importorskip("mergekit")

CORPUS = sorted(p.stem for p in RECIPES.glob("*.yml"))
REFUSED = sorted(p.stem for p in (RECIPES / "refused").glob("*.yml"))
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "added_tokens.json", "vocab.json", "merges.txt", "chat_template.json", "generation_config.json")
CONVERSATIONS = [
    [{"role": "user", "content": "Hi there "}],
    [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": " 4\n"}, {"role": "user", "content": "and 3+3?"}],
]


@pytest.fixture(scope="module")
def compat_family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_compat_family(tmp_path_factory.mktemp("compat"))


def _recipe_file(name: str, family: dict[str, Path], tmp_path: Path, *, refused: bool = False) -> Path:
    src = (RECIPES / "refused" if refused else RECIPES) / f"{name}.yml"
    out = tmp_path / f"{name}.yml"
    out.write_text(render_recipe(src, family))
    return out


def _for_mergekit(text: str) -> str:
    """mergekit 0.1.5 dropped the ``model:`` tokenizer prefix of mergekit < 0.1 (it now fails to load
    "model:<path>" as a repo id); the reference is given the same source without the prefix."""
    data = yaml.safe_load(text)
    if isinstance(data.get("tokenizer_source"), str):
        data["tokenizer_source"] = data["tokenizer_source"].removeprefix("model:")
    return yaml.safe_dump(data, sort_keys=False)


def _recipe_order(self):  # type: ignore[no-untyped-def]
    """mergekit's MergeConfiguration.referenced_models returns ``list(set(...))``: which model is
    "the first" and the order of a tokenizer union's inputs vary with the process's hash seed.
    For a deterministic comparison the reference is given the recipe's order (base first), which
    is the order mergegate always uses."""
    seen: dict = {}
    if self.base_model:
        seen[self.base_model] = None
    for m in self.models or []:
        seen[m.model] = None
    for s in self.slices or []:
        for src in s.sources:
            seen[src.model] = None
    for module in (self.modules or {}).values():
        for m in module.models or []:
            seen[m.model] = None
        for s in module.slices or []:
            for src in s.sources:
                seen[src.model] = None
    return list(seen)


def run_mergekit_yaml(text: str, out: Path, lora_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge as mk_run_merge
    from mergekit.options import MergeOptions

    monkeypatch.setattr(MergeConfiguration, "referenced_models", _recipe_order)
    config = MergeConfiguration.model_validate(yaml.safe_load(text))
    mk_run_merge(config, str(out), options=MergeOptions(copy_tokenizer=True, write_model_card=False, quiet=True,
                                                       lora_merge_cache=str(lora_cache)), config_source=text)
    return out


def _render(template: str, tokenizer_dir: Path) -> list[str]:
    from transformers.utils.chat_template_utils import render_jinja_template

    cfg = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    rendered, _ = render_jinja_template(conversations=CONVERSATIONS, chat_template=template,
                                        add_generation_prompt=True, bos_token=cfg.get("bos_token"),
                                        eos_token=cfg.get("eos_token"))
    return rendered


def assert_same_output(ours: Path, theirs: Path, *, named_template: bool) -> None:
    a, b = load_dir(ours), load_dir(theirs)
    assert set(a) == set(b), f"tensor names differ: {sorted(set(a) ^ set(b))}"
    for name in sorted(b):
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, \
            f"{name}: {a[name].dtype} {list(a[name].shape)} vs mergekit {b[name].dtype} {list(b[name].shape)}"
        same = torch.equal(a[name].contiguous().view(torch.uint8), b[name].contiguous().view(torch.uint8))
        assert same, f"{name}: max abs diff {float((a[name].float() - b[name].float()).abs().max()):.3g}"
    for file in TOKENIZER_FILES:
        if (theirs / file).is_file():
            assert (ours / file).is_file(), f"mergegate did not write {file}"
            assert (ours / file).read_bytes() == (theirs / file).read_bytes(), f"{file} differs"
    template = theirs / "chat_template.jinja"
    assert template.is_file() == (ours / "chat_template.jinja").is_file()
    if template.is_file():
        mine = (ours / "chat_template.jinja").read_text()
        if named_template:  # mergegate's own text for mergekit's named template: same rendering
            assert _render(mine, ours) == _render(template.read_text(), theirs)
        else:
            assert mine == template.read_text()
    ours_cfg, their_cfg = (json.loads((d / "config.json").read_text()) for d in (ours, theirs))
    for key in ("vocab_size", "num_hidden_layers"):
        assert ours_cfg[key] == their_cfg[key], key


@pytest.mark.slow
@pytest.mark.parametrize("name", CORPUS)
def test_corpus_matches_mergekit(name: str, compat_family: dict[str, Path], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = _recipe_file(name, compat_family, tmp_path)
    text = recipe.read_text()
    theirs = run_mergekit_yaml(_for_mergekit(text), tmp_path / "mergekit", tmp_path / "lora-cache", monkeypatch)
    result = run_merge(recipe, tmp_path / "ours")
    named = str(yaml.safe_load(text).get("chat_template")) in ("llama3", "chatml", "alpaca", "mistral", "exaone")
    assert_same_output(result.out_dir, theirs, named_template=named)


@pytest.mark.slow
@pytest.mark.parametrize("name", CORPUS + [f"refused/{n}" for n in REFUSED])
def test_dry_run_and_run_agree(name: str, compat_family: dict[str, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """Whatever --dry-run accepts the real run accepts, and what one refuses the other refuses
    with the same message — before any output is written."""
    refused = name.startswith("refused/")
    stem = name.removeprefix("refused/")
    recipe = _recipe_file(stem, compat_family, tmp_path, refused=refused)
    dry = main(["merge", str(recipe), "--dry-run"])
    dry_err = capsys.readouterr().err
    out = tmp_path / "out"
    real = main(["merge", str(recipe), str(out)])
    real_err = capsys.readouterr().err
    assert dry == real == (2 if refused else 0), (dry, real, dry_err, real_err)
    if refused:
        message = expected_refusal(RECIPES / "refused" / f"{stem}.yml")
        assert message in dry_err and message in real_err
        assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))
