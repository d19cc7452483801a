"""Hostile YAML (recipes, policies, card front matter): refused within seconds, exit 2 naming the file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mergegate.cli.main import main
from mergegate.errors import ConfigError
from mergegate.safe_yaml import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, load_yaml


def billion_laughs(levels: int = 9) -> str:
    """Nine aliases of nine aliases ...: 500 bytes on disk, 9**9 (387 million) strings expanded."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    lines += ["merge_method: linear", "models:", f"  - model: *a{levels - 1}"]
    return "\n".join(lines) + "\n"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    started = time.perf_counter()
    code = main(argv)
    return code, capsys.readouterr().err, time.perf_counter() - started


@pytest.mark.parametrize("command", ["merge", "run"])
def test_billion_laughs_recipe_is_refused_within_seconds(tmp_path: Path, command: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "bomb.yml"
    recipe.write_text(billion_laughs())
    assert recipe.stat().st_size < 1000
    argv = ["merge", str(recipe), str(tmp_path / "out")] if command == "merge" else \
        ["run", str(recipe), "--out", str(tmp_path / "out"), "--judge", "refusal-patterns"]
    code, err, seconds = _run(argv, capsys)
    assert seconds < 5, f"took {seconds:.1f}s"
    if command == "merge":
        assert code == 2
        assert str(recipe) in err and "aliases" in err
    else:  # run: the gate's report says error, exit 2, and names the recipe
        import json

        assert code == 2
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert report["decision"] == "error" and report["error"]["exit_code"] == 2
        assert "bomb.yml" in report["error"]["message"] and "aliases" in report["error"]["message"]


def test_billion_laughs_policy_is_refused(tmp_path: Path) -> None:
    from mergegate.gate.policy import load_policy

    policy = tmp_path / "mergegate.yml"
    policy.write_text(billion_laughs().replace("merge_method: linear\nmodels:\n  - model: *a8\n",
                                               "tolerance: 1\n"))
    started = time.perf_counter()
    with pytest.raises(ConfigError) as exc:
        load_policy(policy)
    assert time.perf_counter() - started < 5
    assert exc.value.source == str(policy) and exc.value.exit_code == 2


@pytest.mark.parametrize("text, what", [
    ("a: &x [1, *x]\n", "refers to itself"),
    ("[" * (MAX_YAML_DEPTH + 1) + "]" * (MAX_YAML_DEPTH + 1), "nests deeper"),
    ("[" * 100_000 + "]" * 100_000, "nest"),  # libyaml's own depth limit, or ours
    ("x: " + "y" * (MAX_YAML_BYTES + 1), "larger than"),
    ("[" + ",".join(["0"] * (MAX_YAML_NODES + 1)) + "]", "more than"),
])
def test_yaml_limits(text: str, what: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=what) as exc:
        load_yaml(text, source="recipe.yml")
    assert time.perf_counter() - started < 5
    assert exc.value.source == "recipe.yml" and exc.value.hint


def test_yaml_within_limits_loads_like_safe_load() -> None:
    import yaml

    text = "base: &b {model: org/a}\nmodels:\n  - *b\n  - {model: org/c, parameters: {weight: [0.1, 0.9]}}\n"
    assert load_yaml(text) == yaml.safe_load(text)
    with pytest.raises(ConfigError, match="constructor"):  # no Python objects, as before
        load_yaml("!!python/object/apply:os.system ['true']")


def test_recipe_with_too_many_models_is_refused_before_validation(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "huge.yml"
    # 5,000 aliases of one model entry: 60 KB on disk, far past the model limit
    recipe.write_text("merge_method: linear\nx: &m {model: org/a}\nmodels:\n" + "  - *m\n" * 5000)
    code, err, seconds = _run(["merge", "--dry-run", str(recipe)], capsys)
    assert code == 2 and seconds < 5
    assert str(recipe) in err and "field 'models'" in err and "at most 1,000" in err


def test_recipe_with_too_many_slices_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "slices.yml"
    recipe.write_text("merge_method: passthrough\nslices:\n"
                      + "  - sources: [{model: org/a, layer_range: [0, 1]}]\n" * 10_001)
    code, err, seconds = _run(["merge", "--dry-run", str(recipe)], capsys)
    assert code == 2 and seconds < 15  # 550 KB of YAML is parsed first (~3 s on 2 busy cores)
    assert "field 'slices'" in err and "at most 10,000" in err


def test_huge_recipe_file_is_not_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "big.yml"
    with open(recipe, "wb") as handle:  # sparse: 2 GB on paper, nothing on disk
        handle.truncate(2 << 30)
    code, err, seconds = _run(["merge", "--dry-run", str(recipe)], capsys)
    assert code == 2 and seconds < 5
    assert str(recipe) in err and "larger than" in err


def test_huge_model_card_is_not_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    card = tmp_path / "README.md"
    with open(card, "wb") as handle:
        handle.truncate(1 << 30)
    code, err, seconds = _run(["merge", "--dry-run", str(card)], capsys)
    assert code == 2 and seconds < 5
    assert str(card) in err and "model card" in err and "larger than" in err


def test_hostile_card_front_matter_means_unknown_license(tmp_path: Path) -> None:
    from mergegate.gate.licenses import read_local_license

    front = billion_laughs().replace("merge_method: linear\nmodels:\n  - model: *a8\n", "license: *a8\n")
    (tmp_path / "README.md").write_text(f"---\n{front}---\n# card\n")
    started = time.perf_counter()
    assert read_local_license(tmp_path) is None
    assert time.perf_counter() - started < 5
