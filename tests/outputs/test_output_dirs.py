"""Item 1 of issue 9: mergegate never destroys a directory it did not write.

Every refusal is exit 2 with a message naming the path, what is there and what to pass instead,
and leaves the directory (and its parent) byte for byte as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _output_helpers import git_checkout, linear_recipe, siblings, tree

from mergegate.cli.main import main
from mergegate.errors import InputError
from mergegate.outdir import (
    BATCH_OUTPUT,
    DEMO_OUTPUT,
    check_output_dir,
    expand_path,
)


def merge(recipe: Path, out: str | Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["merge", str(recipe), str(out)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def assert_refused(code: int, text: str, *needles: str) -> None:
    assert code == 2, text
    assert "refusing to write here" in text or "is not set" in text, text
    for needle in needles:
        assert needle in text, (needle, text)


# --- `mergegate merge` into places that are not outputs ------------------------------------------

def test_merge_into_a_git_checkout_from_inside_it_is_refused(tmp_path: Path, recipe: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    project = git_checkout(tmp_path / "project")
    monkeypatch.chdir(project)
    before, parent_before = tree(project), tree(tmp_path)
    code, text = merge(recipe, ".", capsys)
    assert_refused(code, text, str(project), "not empty", ".git/", "src/", "README.md", "./merged")
    assert tree(project) == before and tree(tmp_path) == parent_before  # no lock, no staging left


@pytest.mark.parametrize("spelling", ["~", "~/", "$HOME", "${HOME}"])
def test_merge_into_the_home_directory_is_refused(tmp_path: Path, recipe: Path, spelling: str,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    (home / "documents").mkdir(parents=True)
    (home / ".bashrc").write_text("export PATH\n")
    monkeypatch.setenv("HOME", str(home))
    before = tree(tmp_path)
    code, text = merge(recipe, spelling, capsys)
    assert_refused(code, text, str(home), "your home directory", f"e.g. {spelling.rstrip('/')}/merged")
    assert tree(tmp_path) == before


def test_merge_into_a_directory_containing_home_is_refused(tmp_path: Path, recipe: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "users" / "me").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "users" / "me"))
    code, text = merge(recipe, tmp_path / "users", capsys)
    assert_refused(code, text, "contains your home directory")


def test_merge_into_root_is_refused(recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = merge(recipe, "/", capsys)
    assert_refused(code, text, "the root directory")


def test_merge_onto_a_file_is_refused(tmp_path: Path, recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    code, text = merge(recipe, target, capsys)
    assert_refused(code, text, str(target), "a file is there")
    assert target.read_text() == "keep me" and siblings(target) == []


def test_merge_into_a_foreign_directory_is_refused(tmp_path: Path, recipe: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    for i in range(9):
        (out / f"img{i}.jpg").write_bytes(bytes([i]) * 10)
    before = tree(tmp_path)
    code, text = merge(recipe, out, capsys)
    assert_refused(code, text, str(out), "img0.jpg", "and 3 more", "pass a new or empty directory")
    assert tree(tmp_path) == before


def test_merge_into_a_dangling_symlink_is_refused(tmp_path: Path, recipe: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    code, text = merge(recipe, tmp_path / "link", capsys)
    assert_refused(code, text, "symlink", "does not exist")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("what", ["empty", "previous output"])
def test_merge_into_the_current_directory_is_refused(tmp_path: Path, recipe: Path, what: str,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Replacing the directory the shell is in would leave the shell in a deleted directory."""
    out = tmp_path / "out"
    if what == "empty":
        out.mkdir()
    else:
        assert merge(recipe, out, capsys)[0] == 0
    before = tree(tmp_path)
    monkeypatch.chdir(out)
    code, text = merge(recipe, ".", capsys)
    hint = "a new directory inside it instead, e.g. ./merged" if what == "empty" else f"`cd {tmp_path}` and pass out"
    assert_refused(code, text, "this is the current directory", "deleted directory", hint)
    assert tree(tmp_path) == before


def test_unset_variable_is_refused_not_taken_literally(tmp_path: Path, recipe: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MERGEGATE_TEST_NOPE", raising=False)
    before = tree(tmp_path)
    code, text = merge(recipe, "$MERGEGATE_TEST_NOPE/out", capsys)
    assert code == 2 and "$MERGEGATE_TEST_NOPE is not set" in text
    assert tree(tmp_path) == before


# --- expansion: what the check saw is what the writer writes --------------------------------------

def test_tilde_and_variables_are_expanded_once(tmp_path: Path, recipe: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("MERGES", str(tmp_path / "merges"))
    monkeypatch.chdir(tmp_path)
    code, text = merge(recipe, "~/merged", capsys)
    assert code == 0 and f"into {home / 'merged'}" in text
    assert (home / "merged" / "model.safetensors").is_file() and not (tmp_path / "~").exists()
    code, text = merge(recipe, "$MERGES/out", capsys)
    assert code == 0 and (tmp_path / "merges" / "out" / "config.json").is_file()
    assert not (tmp_path / "$MERGES").exists()
    # a value is not expanded again
    monkeypatch.setenv("TRICKY", "$HOME")
    assert expand_path("$TRICKY/x") == tmp_path / "$HOME" / "x"
    monkeypatch.setenv("TILDE", "~")
    assert expand_path("$TILDE/x") == tmp_path / "~" / "x"


def test_symlink_to_a_previous_output_replaces_the_target(tmp_path: Path, recipe: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    real = tmp_path / "real"
    assert merge(recipe, real, capsys)[0] == 0
    (tmp_path / "link").symlink_to(real)
    code, text = merge(recipe, tmp_path / "link", capsys)
    assert code == 0 and f"into {real}" in text
    assert (tmp_path / "link").is_symlink() and (real / "model.safetensors").is_file()


# --- previous outputs are replaced, atomically, with normal permissions ---------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o027, 0o750)])
def test_output_directory_respects_the_umask(tmp_path: Path, recipe: Path, umask: int, mode: int,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    old = os.umask(umask)
    try:
        assert merge(recipe, tmp_path / "a" / "out", capsys)[0] == 0
    finally:
        os.umask(old)
    for path in (tmp_path / "a" / "out", tmp_path / "a"):
        assert path.stat().st_mode & 0o777 == mode, oct(path.stat().st_mode)


def test_previous_mergegate_output_is_replaced_and_nothing_is_left_beside_it(
        tmp_path: Path, models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert merge(linear_recipe(tmp_path / "a.yml", *models, 0.9, 0.1), out, capsys)[0] == 0
    first = (out / "model.safetensors").read_bytes()
    assert merge(linear_recipe(tmp_path / "b.yml", *models, 0.1, 0.9), out, capsys)[0] == 0
    assert (out / "model.safetensors").read_bytes() != first
    assert "0.9" in (out / "mergekit_config.yml").read_text().split("weight")[-1]
    assert siblings(out) == []  # no lock, staging or old copy left


def test_previous_output_with_foreign_files_is_refused(tmp_path: Path, recipe: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert merge(recipe, out, capsys)[0] == 0
    (out / "my-notes.txt").write_text("eval results I care about")
    (out / ".git").mkdir()
    before = tree(tmp_path)
    code, text = merge(recipe, out, capsys)
    assert_refused(code, text, "previous output of `mergegate merge`", ".git/", "my-notes.txt",
                   "would be lost", "move them out")
    assert tree(tmp_path) == before


def test_previous_mergekit_output_is_accepted(tmp_path: Path, recipe: Path, models: tuple[Path, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """What mergekit-yaml 0.1.5 writes (card, recipe, config, tokenizer, weights) is an output we
    may replace; mergekit itself writes into an existing directory, we swap it whole."""
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    out = tmp_path / "mk"
    text = recipe.read_text()
    run_merge(MergeConfiguration.model_validate(yaml.safe_load(text)), str(out),
              options=MergeOptions(copy_tokenizer=True, write_model_card=True, quiet=True), config_source=text)
    assert {"mergekit_config.yml", "config.json", "model.safetensors", "README.md"} <= set(os.listdir(out))
    assert check_output_dir(out).previous == "mergekit-yaml"
    code, text = merge(recipe, out, capsys)
    assert code == 0, text
    assert (out / "mergegate_provenance.json").is_file() and not (out / "README.md").exists()


def test_output_overlapping_an_input_model_is_refused(tmp_path: Path, models: tuple[Path, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    base, expert = models
    recipe = linear_recipe(tmp_path / "r.yml", base, expert)
    before = tree(base.parent)
    for out, says in [(base, "this is the input model"), (base / "merged", "inside the input model"),
                      (base.parent, "contains the input model")]:
        code, text = merge(recipe, out, capsys)
        assert_refused(code, text, says, str(base))
    assert tree(base.parent) == before


# --- `run`, `demo` and `batch` use the same check ---------------------------------------------------

def test_run_into_a_git_checkout_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gate"))
    from _gate_fakes import fake_audit, fake_merge, write_recipe

    from mergegate.gate import pipeline

    monkeypatch.setattr(pipeline, "_default_merge_fn", lambda: fake_merge())
    monkeypatch.setattr(pipeline, "_default_audit_fn", lambda: fake_audit({"base": 93, "expert": 41}))
    recipe = write_recipe(tmp_path / "work")
    project = git_checkout(tmp_path / "project")
    monkeypatch.chdir(project)
    monkeypatch.setenv("HOME", str(project))
    before = tree(tmp_path)
    for out in (".", "~", str(project / "src")):
        assert main(["run", str(recipe), "--out", out, "--no-github"]) == 2
        captured = capsys.readouterr()
        assert "refusing to write here" in captured.err and "report:" not in captured.out
    assert tree(tmp_path) == before  # in particular no report.json anywhere


def test_demo_and_batch_refuse_foreign_directories_and_accept_their_own(tmp_path: Path) -> None:
    from mergegate.batch.runner import collect
    from mergegate.gate.demo import run_demo

    foreign = git_checkout(tmp_path / "project")
    before = tree(foreign)
    with pytest.raises(InputError, match="not empty and is not a previous output of `mergegate demo`"):
        run_demo(foreign, fleet=tmp_path / "fleet")
    shard = tmp_path / "shard"
    shard.mkdir()
    (shard / "results.jsonl").write_text("")
    with pytest.raises(InputError, match="not empty and is not a previous output of `mergegate batch`"):
        collect([shard], foreign)
    assert tree(foreign) == before and not (tmp_path / "fleet").exists()
    # their own previous outputs are written into, never emptied
    demo = tmp_path / "demo"
    (demo / "recipes").mkdir(parents=True)
    (demo / "recipes" / "mergegate.yml").write_text("tolerance: 5\n")
    (demo / "my-notes.txt").write_text("kept")
    assert check_output_dir(demo, kinds=(DEMO_OUTPUT,), replace=False).previous == "`mergegate demo`"
    collect([shard], shard)
    assert check_output_dir(shard, kinds=(BATCH_OUTPUT,), replace=False).previous == "`mergegate batch`"
    assert (shard / "results.csv").is_file()


# --- what a killed run leaves beside the output ----------------------------------------------------

def test_stale_siblings_of_a_killed_run_are_cleaned_by_the_next_run(tmp_path: Path, recipe: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert merge(recipe, out, capsys)[0] == 0
    for name in (".out.partial-1a2b3c4d", ".out.weighting-abcdefgh", ".out.push-0000ffff", ".out.old-deadbeef"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".out.lock").write_text("12345\n")  # a killed run's lock file (its flock died with it)
    (tmp_path / ".other.partial-1a2b3c4d").mkdir()  # another output's: not ours to touch
    (tmp_path / ".out.partial-notmine").mkdir()  # not a name mergegate makes
    assert merge(recipe, out, capsys)[0] == 0
    assert siblings(out) == [".out.partial-notmine"]
    assert (tmp_path / ".other.partial-1a2b3c4d").is_dir()


def test_an_output_moved_aside_by_a_killed_replacement_is_put_back(tmp_path: Path, recipe: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert merge(recipe, out, capsys)[0] == 0
    before = tree(out)
    os.rename(out, tmp_path / ".out.old-0badf00d")  # killed between the two renames of a fallback swap
    (tmp_path / ".out.partial-12345678").mkdir()
    with check_output_dir(out).claim() as claim:
        assert claim.target.previous == "`mergegate merge`"
        assert tree(out) == before
    assert siblings(out) == []


def test_check_output_dir_reports_what_it_found(tmp_path: Path, recipe: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert check_output_dir(tmp_path / "new").previous is None
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty").previous is None
    assert merge(recipe, tmp_path / "m", capsys)[0] == 0
    target = check_output_dir(tmp_path / "m")
    assert target.previous == "`mergegate merge`" and target.path == tmp_path / "m"
    prov = json.loads((tmp_path / "m" / "mergegate_provenance.json").read_text())
    assert set(prov["outputs"]) == {"model.safetensors"}
