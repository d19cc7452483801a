"""Shipped files: the pre-commit hook manifest, examples, templates, method table.

The Action and the workflows are checked in tests/ecosystem/test_action_yml.py."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import yaml

from mergegate.gate.methods import METHODS, method_info
from mergegate.gate.policy import load_policy
from mergegate.merging.recipe import read_recipe, summarize_recipe

ROOT = Path(__file__).resolve().parents[2]


def test_pre_commit_hook_manifest() -> None:
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "mergegate" and hook["stages"] == ["pre-push"]
    assert hook["entry"].startswith("mergegate run mergekit_config.yml")
    assert hook["language"] == "python" and hook["pass_filenames"] is False and hook["always_run"] is True
    assert hook["minimum_pre_commit_version"] == "3.2.0"  # the `pre-push` stage name needs it
    for key in ("id", "name", "entry", "language"):
        assert hook[key]


def test_pre_commit_entry_parses_with_the_cli() -> None:
    from mergegate.cli.main import build_parser

    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    args = build_parser().parse_args([*hook["entry"].split()[1:], "--limit", "200"])
    assert args.config == "mergekit_config.yml" and args.limit == 200


def test_example_policy_and_recipes() -> None:
    policy, _ = load_policy(ROOT / "examples/mergegate.yml")
    assert policy.require_pinned_revisions and policy.tolerance == 1.0
    ties = read_recipe(ROOT / "examples/recipes/ties-pinned.yml")
    assert ties.method == "ties" and all(r.is_hub and r.revision for r in ties.models)
    local = summarize_recipe((ROOT / "examples/recipes/linear-local.yml").read_text())
    assert not any(r.is_hub for r in local.models)


def test_templates_are_package_data() -> None:
    # pyproject ships mergegate/templates/*.j2 as package data: the gate's templates match it
    names = {p.name for p in resources.files("mergegate.templates").iterdir()}
    assert {"model_card.md.j2", "summary.md.j2", "demo_blocked.yml.j2", "demo_passes.yml.j2"} <= names


def test_demo_recipes_render_with_fleet_paths(tmp_path: Path) -> None:
    from mergegate.gate.demo import DEMO_MERGES, render_recipe

    fleet = tmp_path / "fleet with space"
    for template, _ in DEMO_MERGES.values():
        recipe = summarize_recipe(render_recipe(template, fleet))
        assert [r.path for r in recipe.models] == [str(fleet / "base"), str(fleet / "expert")]
        assert recipe.method == "linear"


def test_method_table_matches_mergekit() -> None:
    registry = pytest.importorskip("mergekit.merge_methods.registry")
    methods = {m.spec.name: m.spec for m in registry.registered_methods()}
    assert set(methods) <= set(METHODS)
    for name, spec in methods.items():
        assert METHODS[name].pretty_name == spec.pretty_name, name
        assert METHODS[name].reference_url == spec.reference_url, name
    assert method_info("unknown_method").pretty_name == "unknown_method"
