"""Progress you can follow in a CI log (issue 14): `mergegate run` with stderr not a terminal writes
a line per stage and rate/ETA lines within long stages, GitHub Actions groups, and no library bars;
caps are said on the console and in the report; paths under the home directory are written as `~`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mergegate.gate.demo import DEMO_MERGES, render_recipe

ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys; from mergegate.cli.main import main; sys.exit(main())"


def _head(src: Path, dst: Path, n: int) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(src.read_text().splitlines(keepends=True)[:n]))
    return dst


@pytest.mark.slow
def test_run_in_a_log_prints_stage_and_progress_lines(toy_fleet: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    prompts = _head(toy_fleet / "prompts/unsafe.jsonl", home / "sets/unsafe.jsonl", 6)
    benign = _head(toy_fleet / "prompts/benign.jsonl", home / "sets/benign.jsonl", 4)
    recipe = tmp_path / "passes.yml"
    recipe.write_text(render_recipe(DEMO_MERGES["passes"][0], toy_fleet))
    out = home / "out"
    env = {**os.environ, "HOME": str(home), "GITHUB_ACTIONS": "true", "MERGEGATE_PROGRESS_INTERVAL": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("MERGEGATE_PROGRESS", None)
    proc = subprocess.run(
        [sys.executable, "-c", CLI, "run", str(recipe), "--out", str(out), "--prompts", str(prompts),
         "--benign", str(benign), "--judge", str(toy_fleet / "guard"), "--limit", "10", "--max-new-tokens", "8",
         "--no-github"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600, cwd=tmp_path)
    err, stdout = proc.stderr, proc.stdout
    assert proc.returncode in (0, 1), err + stdout

    # one line as each stage starts and ends, the merge's and each model's progress within
    for stage in ("preflight", "merge", "audit", "decide", "card", "report"):
        assert re.search(rf"^mergegate: \[\d\d:\d\d:\d\d\] run {stage}\b", err, re.M), (stage, err)
    assert re.search(r"run report: decision (pass|blocked) in ", err)
    assert re.search(r"merging: \d+/\d+ tensors \([\d.]+/s, ETA ", err), err  # rate and ETA within a stage
    assert re.search(r"merging: (\d+)/\1 tensors in ", err)
    for model in ("base", "expert", "out (merge)"):
        assert re.search(rf"generate {re.escape(model)}: \d+/10 prompts in ", err), (model, err)
    assert re.search(r"judge: \d+/\d+ answers in ", err)
    # GitHub Actions log groups, one per top-level stage, never nested
    markers = re.findall(r"^::(group|endgroup)::", err, re.M)
    assert len(markers) >= 12 and markers == ["group", "endgroup"] * (len(markers) // 2)
    # no terminal bars in a log: no carriage returns, no library bars
    assert "\r" not in err and "Writing model shards" not in err and "Loading" not in err

    # --limit over the set: said on the console and recorded in the report
    assert "note: --limit 10 is more than the 6 prompts of ~/sets/unsafe.jsonl: all 6 are used" in stdout
    text = (out / "report.json").read_text()
    report = json.loads(text)
    assert report["prompts"]["limit"] == 10 and report["prompts"]["n"] == 6
    assert any("--limit 10" in note for note in report["notes"])
    # every artifact names the home directory as ~ (the prompts and output live under HOME here)
    assert report["prompts"]["source"] == "~/sets/unsafe.jsonl"
    assert report["benign"]["source"] == "~/sets/benign.jsonl"
    for name in ("report.json", "README.md"):
        assert str(home) not in (out / name).read_text(), name
