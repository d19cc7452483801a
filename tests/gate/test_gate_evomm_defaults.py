"""`mergegate run --weighting evomm` on the toy fleet finishes: pass or blocked, never an abort on one
odd judge token (with the default weighting options it used to die after 160 s on a first token '4'),
and report.json counts the off-protocol items.

The full default-options run (k = 1000 toy safety/expert examples, 100 CMA-ES evaluations) takes far
longer than the CI budget on 2 cores; it was run by hand (see the report of issue 10). This test
keeps the default alpha and search, with a smaller k and budget: the judge path is the same.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mergegate.cli.main import main


@pytest.mark.slow
def test_evomm_run_finishes_and_counts_off_protocol_items(toy_fleet: Path, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    shutil.copytree(toy_fleet, fleet)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe = tmp_path / "mergekit_config.yml"
        recipe.write_text(f"merge_method: task_arithmetic\nbase_model: {fleet / 'base'}\ndtype: float32\n"
                          f"models:\n  - model: {fleet / 'expert'}\n    parameters: {{weight: 1.0}}\n")
        policy = tmp_path / "mergegate.yml"
        policy.write_text("max_over_refusal_increase: null\n")
        out = tmp_path / "evomm"
        # default --alpha and search, all 240 evaluation prompts; the toy fleet's own data (no Hub here)
        code = main(["run", str(recipe), "--out", str(out), "--prompts", str(fleet / "prompts/unsafe.jsonl"),
                     "--benign", "none", "--judge", str(fleet / "guard"), "--max-new-tokens", "48",
                     "--no-github", "--policy", str(policy), "--weighting", "evomm", "--safety-prompts", "toy",
                     "--expert-prompts", "toy", "--weighting-k", "200", "--weighting-budget", "30"])
        report = json.loads((out / "report.json").read_text())
        assert code in (0, 1), report.get("error")
        assert report["decision"] in ("pass", "blocked")
        assert report["off_protocol"]["n"] == report["merged"]["n"] * (len(report["constituents"]) + 2)
        per_model = [m["n_off_protocol"] for m in [*report["constituents"], report["merged"]]]
        assert 0 <= sum(per_model) <= report["off_protocol"]["n_dominant"]  # the declared merge is audited too
        assert report["off_protocol"]["share"] <= report["off_protocol"]["max_share"]
        assert report["weighting"]["evaluations"] == 30
    finally:
        torch.set_num_threads(threads)
