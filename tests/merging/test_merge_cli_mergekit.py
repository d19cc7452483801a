"""`mergegate merge` as a drop-in for mergekit-yaml: its model card, and its pasted options."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mergegate.cli.main import main
from mergegate.merging.config import load_merge_config
from mergegate.merging.model_card import render_merge_card

from merge_helpers import write_config


def _recipe(f: dict[str, Path]) -> dict:
    return {"merge_method": "task_arithmetic", "base_model": str(f["base"]), "dtype": "bfloat16",
            "models": [{"model": str(f["e1"]), "parameters": {"weight": 0.5}}]}


def _mergekit_card(text: str, name: str) -> str:
    from mergekit.card import generate_card
    from mergekit.config import MergeConfiguration

    return generate_card(MergeConfiguration.model_validate(yaml.safe_load(text)), text, name=name)


def _split(card: str) -> tuple[dict, str]:
    """Front matter and body; the body's model bullets sorted (mergekit lists them in set order)."""
    _, front, body = card.split("---\n", 2)
    lines = body.split("\n")
    bullets = sorted(line for line in lines if line.startswith("* "))
    at = next((i for i, line in enumerate(lines) if line.startswith("* ")), len(lines))
    rest = [line for line in lines if not line.startswith("* ")]
    return yaml.safe_load(front), "\n".join(rest[:at] + bullets + rest[at:])


def test_merge_writes_mergekits_card(family, tmp_path, capsys):
    cfg = write_config(_recipe(family), tmp_path / "recipe.yml")
    out = tmp_path / "my-merge"
    assert main(["merge", str(cfg), str(out)]) == 0
    card = (out / "README.md").read_text()
    assert card == _mergekit_card(cfg.read_text(), "my-merge")  # local models: byte for byte
    assert "This model was merged using the [Task Arithmetic](https://arxiv.org/abs/2212.04089) merge method " \
           f"using {family['base']} as a base." in card
    assert f"* {family['e1']}\n" in card and cfg.read_text() in card
    # a second run replaces the previous output (card included) as a whole, atomically
    assert main(["merge", str(cfg), str(out), "--no-write-model-card"]) == 0
    assert not (out / "README.md").exists() and (out / "mergekit_config.yml").is_file()


def test_card_of_hub_recipe_has_mergekits_structure() -> None:
    text = ("merge_method: ties\nbase_model: org/base-model\ndtype: bfloat16\nmodels:\n"
            "  - model: org/expert@0123456789abcdef0123456789abcdef01234567\n"
            "    parameters: {weight: 0.7, density: 0.5}\n"
            "  - model: org/base-model\n")
    config, _ = load_merge_config(yaml.safe_load(text))
    ours, theirs = _split(render_merge_card(config, text, "m")), _split(_mergekit_card(text, "m"))
    assert ours[1] == theirs[1]  # the body, byte for byte
    # the same front matter (mergekit lists base_model in set order)
    assert sorted(ours[0].pop("base_model")) == sorted(theirs[0].pop("base_model")) == ["org/base-model",
                                                                                           "org/expert"]
    assert ours[0] == theirs[0] == {"library_name": "transformers", "tags": ["mergekit", "merge"]}
    assert "[org/base-model](https://huggingface.co/org/base-model) as a base" in ours[1]


def test_slerp_card_names_no_base() -> None:
    text = ("merge_method: slerp\nbase_model: org/a\ndtype: bfloat16\nparameters: {t: 0.5}\n"
            "slices:\n  - sources:\n      - {model: org/a, layer_range: [0, 2]}\n"
            "      - {model: org/b, layer_range: [0, 2]}\n")
    config, _ = load_merge_config(yaml.safe_load(text))
    ours, theirs = render_merge_card(config, text, "s"), _mergekit_card(text, "s")
    assert _split(ours)[1] == _split(theirs)[1]
    assert "merge method.\n" in ours and "* [org/a](https://huggingface.co/org/a)\n" in ours


def test_merge_refuses_a_foreign_directory_and_leaves_its_readme(family, tmp_path, capsys):
    cfg = write_config(_recipe(family), tmp_path / "recipe.yml")
    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "README.md").write_text("my own card\n")
    (mine / "notes.txt").write_text("x")
    assert main(["merge", str(cfg), str(mine)]) == 2
    assert (mine / "README.md").read_text() == "my own card\n"


def test_pasted_mergekit_options_are_aliases_or_notes(family, tmp_path, capsys):
    cfg = write_config(_recipe(family), tmp_path / "recipe.yml")
    out = tmp_path / "out"
    argv = ["merge", str(cfg), str(out), "--copy-tokenizer", "--lazy-unpickle", "--random-seed", "3",
            "--trust-remote-code", "--allow-crimes", "--low-cpu-memory", "-j", "4", "--no-write-model-card"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("mergegate: note: ")]
    assert [n.split(": ")[2].split()[0] for n in notes] == [
        "--random-seed", "--no-write-model-card", "--copy-tokenizer/--no-copy-tokenizer", "--lazy-unpickle",
        "--trust-remote-code", "--allow-crimes", "--low-cpu-memory", "--num-threads/-j"]
    assert "mergegate never mixes architectures" in captured.err
    assert ", seed 3" in captured.out  # --random-seed is --seed
    assert not (out / "README.md").exists()
    assert main(["merge", str(cfg), str(out), "--copy-tokenizer", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "note:" not in captured.err
    assert (out / "README.md").is_file()


def test_cuda_is_device_cuda(family, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    cfg = write_config(_recipe(family), tmp_path / "recipe.yml")
    assert main(["merge", str(cfg), str(tmp_path / "out"), "--cuda"]) == 2
    err = capsys.readouterr().err
    assert "--cuda: same as --device cuda" in err and "no CUDA device is available" in err
    assert main(["merge", str(cfg), str(tmp_path / "out"), "--cuda", "--device", "cpu"]) == 0  # explicit wins


@pytest.mark.parametrize(("flags", "message"), [
    (["--no-safe-serialization"], "--no-safe-serialization is not supported: mergegate writes safetensors only"),
    (["--transformers-cache", "/x"], "set HF_HUB_CACHE=PATH instead"),
    (["--lora-merge-dtype", "float16"], "--lora-merge-dtype is not supported"),
    (["--seed", "1", "--random-seed", "2"], "--seed 1 and --random-seed 2 disagree"),
])
def test_options_mergegate_cannot_honour_are_refused(family, tmp_path, capsys, flags, message):
    cfg = write_config(_recipe(family), tmp_path / "recipe.yml")
    assert main(["merge", str(cfg), str(tmp_path / "out"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_every_mergekit_option_is_in_the_table() -> None:
    from mergekit.options import MergeOptions

    from mergegate.merging.mergekit_flags import MERGEKIT_FLAGS

    # the options mergegate has under the same name, and mergekit's -v/--quiet (ours are global)
    own = {"device", "out_shard_size", "verbosity", "quiet"}
    assert set(MergeOptions.model_fields) - own == {f.dest for f in MERGEKIT_FLAGS}
