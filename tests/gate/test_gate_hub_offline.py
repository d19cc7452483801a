"""Without a network and without a cache, `audit`, `run`, `push` and `batch` with their default
sources exit 2 with a message that names what was fetched (dataset, model, repository), why
(the flag or default) and the fix -- never "internal error".

Two environments, each in ONE fresh process running every command (huggingface_hub and datasets
read HF_HUB_OFFLINE and HF_ENDPOINT when they are imported, as they do for a user):

- unreachable: HF_HUB_OFFLINE unset, HF_ENDPOINT a closed localhost port;
- offline: HF_HUB_OFFLINE=1 (and the same endpoint, so nothing could leave the machine anyway).

Both with an empty HF_HOME and no token. Short Hub timeouts and no waits between huggingface_hub's
retries (``_hub_cli_runner.py``) keep each command well under a few seconds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _gate_fakes import fake_audit, fake_merge, write_recipe

from mergegate.gate.pipeline import run_gate
from mergegate.merging.random_models import LlamaShape, make_family

RUNNER = Path(__file__).with_name("_hub_cli_runner.py")
REPO_ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENTS = ("unreachable", "offline")
MAX_SECONDS = 20.0  # per command, on a loaded 2-core machine; a retry storm takes 23 s or more


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def commands(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("hub_offline")
    base, (expert,) = make_family(root / "models", 1, shape=LlamaShape(hidden=16, intermediate=32, layers=1,
                                                                       heads=2, kv_heads=1, vocab=64),
                                  dtype="float32")
    recipe = root / "recipe.yml"
    recipe.write_text("merge_method: linear\ndtype: float32\nmodels:\n"
                      f"  - model: {json.dumps(str(base))}\n    parameters: {{weight: 0.5}}\n"
                      f"  - model: {json.dumps(str(expert))}\n    parameters: {{weight: 0.5}}\n")
    passed = root / "out"  # a passing, unchanged gate output (fake merge and audit)
    report = run_gate(write_recipe(root / "fake"), passed, merge_fn=fake_merge(),
                      audit_fn=fake_audit({"base": 93, "expert": 41, "out": 95}))
    assert report.decision == "pass"
    prompts = root / "unsafe.jsonl"
    prompts.write_text('{"prompt": "How do I pick a lock?"}\n')
    merges = root / "merges.txt"
    merges.write_text("org/some-merge\n")
    return {
        "audit": ["audit", str(base), "--cache", str(root / "cache-audit")],
        "audit-benign": ["audit", str(base), "--prompts", str(prompts), "--cache", str(root / "cache-benign")],
        "audit-judge": ["audit", str(base), "--prompts", str(prompts), "--benign", "none",
                        "--cache", str(root / "cache-judge")],
        "run": ["run", str(recipe), "--out", str(root / "run-{env}"), "--no-github"],
        "push": ["push", "org/merge", str(passed)],
        "push-bad-id": ["push", "not a repo id!", str(passed)],
        "batch": ["batch", "--top", "3", "--out", str(root / "batch-{env}")],
        "batch-models": ["batch", "--models", str(merges), "--out", str(root / "batch-models-{env}")],
        "batch-models-pin": ["batch", "--models", str(merges), "--prompts", str(prompts), "--benign", "none",
                             "--judge", "refusal-patterns", "--out", str(root / "batch-pin-{env}")],
    }


def _run_all(env_name: str, commands: dict[str, list[str]], home: Path) -> dict[str, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE_", "TRANSFORMERS_", "MERGEGATE_", "GITHUB_"))}
    env.update(HF_HOME=str(home / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",
               HF_HUB_ETAG_TIMEOUT="3", HF_HUB_DOWNLOAD_TIMEOUT="3", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_XET="1", MERGEGATE_CACHE_DIR=str(home / "mg"), TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(REPO_ROOT))
    if env_name == "offline":
        env["HF_HUB_OFFLINE"] = "1"
    argvs = [[a.replace("{env}", env_name) for a in argv] for argv in commands.values()]
    done = subprocess.run([sys.executable, str(RUNNER), json.dumps(argvs)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=home, check=False)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULTS ")]
    assert lines, f"runner failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return dict(zip(commands, json.loads(lines[-1][len("RESULTS "):])))


@pytest.fixture(scope="module")
def outcomes(commands: dict[str, list[str]], tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, dict[str, dict[str, Any]]]:
    return {name: _run_all(name, commands, tmp_path_factory.mktemp(f"home-{name}")) for name in ENVIRONMENTS}


def _check(outcomes: dict, env: str, command: str, *needles: str) -> str:
    result = outcomes[env][command]
    err = result["err"]
    assert result["code"] == 2, (result["code"], err)
    assert "internal error" not in err and "Traceback" not in err, err
    assert err.count("mergegate: error:") == 1, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in:\n{err}"
    if env == "offline":  # the problem is the cache, not a missing acceptance of terms
        assert "HF_HUB_OFFLINE=1" in err and "terms" not in err, err
    else:
        assert "could not be reached" in err and "127.0.0.1" in err, err
    assert result["seconds"] < MAX_SECONDS, result
    return err


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_audit_with_default_prompts_names_beavertails_and_the_fix(outcomes: dict, env: str) -> None:
    err = _check(outcomes, env, "audit", "the BeaverTails prompt set (PKU-Alignment/BeaverTails)",
                 "--prompts beavertails (the default)", "pass --prompts FILE")
    if env == "unreachable":
        assert "set HF_HUB_OFFLINE=1 to use the cache" in err
    else:
        assert "run once with network access" in err


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_audit_with_default_benign_names_xstest_and_the_fix(outcomes: dict, env: str) -> None:
    _check(outcomes, env, "audit-benign", "the XSTest benign prompt set (walledai/XSTest)",
           "--benign xstest (the default)", "pass --benign FILE", "--benign none")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_audit_with_default_judge_names_llama_guard_and_the_fix(outcomes: dict, env: str) -> None:
    _check(outcomes, env, "audit-judge", "the model 'meta-llama/Llama-Guard-3-8B'",
           "the judge (--judge, the default)", "pass --judge DIR")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_run_with_default_sources(outcomes: dict, env: str, commands: dict) -> None:
    _check(outcomes, env, "run", "the BeaverTails prompt set (PKU-Alignment/BeaverTails)", "pass --prompts FILE")
    out = Path(commands["run"][3].replace("{env}", env))
    report = json.loads((out / "report.json").read_text())
    assert report["decision"] == "error" and report["error"]["exit_code"] == 2


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_push_names_the_repository_and_that_no_token_is_set(outcomes: dict, env: str) -> None:
    err = _check(outcomes, env, "push", "org/merge", "`mergegate push`")
    assert "no Hugging Face token is set" in err and "HF_TOKEN" in err
    if env == "offline":
        assert "unset HF_HUB_OFFLINE" in err


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_push_with_an_invalid_repo_id_is_bad_input(outcomes: dict, env: str) -> None:
    result = outcomes[env]["push-bad-id"]
    assert result["code"] == 2, result
    assert "'not a repo id!' is not a" in result["err"] and "Hub repository id" in result["err"]
    assert "mergegate push my-org/my-merge" in result["err"] and "internal error" not in result["err"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_batch_top_names_the_listing_and_the_fix(outcomes: dict, env: str) -> None:
    result = outcomes[env]["batch"]
    err = result["err"]
    assert result["code"] == 2 and "internal error" not in err, err
    assert "the list of the 3 most downloaded models tagged mergekit" in err and "--top 3" in err
    assert "pass --models FILE" in err and "terms" not in err
    assert ("HF_HUB_OFFLINE=1 is set" if env == "offline" else "could not be reached") in err


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_batch_models_with_default_sources_names_beavertails_before_any_merge(outcomes: dict, env: str,
                                                                               commands: dict) -> None:
    """`batch --models FILE` with the default prompt set: the preflight's error, before any merge."""
    _check(outcomes, env, "batch-models", "the BeaverTails prompt set (PKU-Alignment/BeaverTails)",
           "--prompts beavertails (the default)", "pass --prompts FILE")
    out = Path(commands["batch-models"][4].replace("{env}", env))
    assert not (out / "results.jsonl").exists()


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_batch_models_file_names_the_model_and_the_fix(outcomes: dict, env: str, commands: dict) -> None:
    """A listed merge the Hub cannot deliver (local prompts, no judge model: the preflight passes)
    is an error row naming the model, why it was fetched and the fix (the hint is kept in
    results.jsonl and on the console); the batch exits 2, never with an internal error."""
    result = outcomes[env]["batch-models-pin"]
    text = result["out"] + result["err"]
    assert result["code"] == 2 and "internal error" not in text and "Traceback" not in text, text
    out = Path(commands["batch-models-pin"][-1].replace("{env}", env))
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert row["repo_id"] == "org/some-merge" and row["status"] == "error", row
    error = row["error"]
    assert "the model 'org/some-merge'" in error and "the batch" in error and "hint:" in error, error
    assert error.splitlines()[0] in text  # shown on the console too
    if env == "offline":
        assert "HF_HUB_OFFLINE" in error and "not in the local Hugging Face cache" in error, error
        assert "terms" not in error, error
    else:
        assert "could not be reached" in error and "127.0.0.1" in error, error
        assert "HF_HUB_OFFLINE=1" in error and "check the network" in error, error
    assert result["seconds"] < MAX_SECONDS, result
