"""The fault-injection matrix of issue 9 (items 2 and 3): kill -9 at every stage of ``run``, disk
full, a crashing judge and two concurrent runs. After each, the previous output is intact byte for
byte (or, only while a fallback swap is between its two renames, absent and put back by the next
run), never half-new; no report anywhere says pass for files it did not measure; and the next run
cleans up and succeeds.

Runs are real processes killed with SIGKILL: forked from the test process (so they start in
milliseconds; they use the fake merge and audit, no torch) and paused at a stage through
monkeypatched hooks. The disk-full merge runs the real engine in a fresh interpreter under
``RLIMIT_FSIZE``.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _output_helpers import siblings, tree

from mergegate.cli.main import main
from mergegate.gate import pipeline
from mergegate.gate.hashing import hash_directory
from mergegate.gate.pipeline import run_gate
from mergegate.gate.report import load_report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gate"))
from _gate_fakes import fake_audit, fake_merge, write_recipe  # noqa: E402

if "fork" not in multiprocessing.get_all_start_methods() or not hasattr(resource, "RLIMIT_FSIZE"):
    pytest.skip("needs fork() and RLIMIT_FSIZE (POSIX)", allow_module_level=True)
FORK = multiprocessing.get_context("fork")
ALIGN = {"base": 93, "expert": 41, "out": 95}


class Case:
    """A previous passing output ``out`` of recipe A, and recipe B (different weights) to re-run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.recipe_a = write_recipe(root, expert_weight=0.2, name="a.yml")
        self.recipe_b = write_recipe(root, expert_weight=0.3, name="b.yml")
        self.policy = root / "mergegate.yml"
        self.policy.write_text("tolerance: 0\n")
        self.out = root / "out"
        assert self.run(self.recipe_a).decision == "pass"
        self.before = tree(self.out)
        self.marker = root / "markers"
        self.marker.mkdir()

    def run(self, recipe: Path, **kw):
        return run_gate(recipe, self.out, policy=self.policy, merge_fn=kw.pop("merge_fn", fake_merge()),
                        audit_fn=kw.pop("audit_fn", fake_audit(ALIGN)), **kw)


def _child(case: Case, stage: str, setup: Callable[[], None] | None) -> None:
    """In the forked process: run B, pausing at ``stage`` until ``markers/go`` exists."""
    import mergegate.atomic as atomic
    from mergegate import outdir
    from mergegate.gate import pipeline as pl

    def pause(name: str) -> None:
        if name == stage:
            tmp = case.marker / f".at-{name}"
            tmp.write_text(str(os.getpid()))
            os.rename(tmp, case.marker / f"at-{name}")  # the test reads the pid as soon as the name exists
            while not (case.marker / "go").exists():
                time.sleep(0.01)

    def wrap_after(obj, attr: str, name: str) -> None:
        real = getattr(obj, attr)

        def hooked(*a, **k):
            result = real(*a, **k)
            pause(name)
            return result

        setattr(obj, attr, hooked)

    real_policy, real_commit = pl.load_policy, outdir.OutputClaim.commit
    pl.load_policy = lambda p: (pause("policy"), real_policy(p))[1]
    outdir.OutputClaim.commit = lambda self, s: (pause("commit"), real_commit(self, s))[1]
    wrap_after(pl, "write_card", "card")
    wrap_after(pl, "write_report", "report")
    wrap_after(atomic, "_fsync_dir", "swapped")  # after the exchange, before the old copy is deleted
    if stage == "swap-fallback":  # no exchange: rename the old aside, then the new in
        atomic.exchange_paths = lambda a, b: False
        real_replace = os.replace

        def replace(src, dst):
            real_replace(src, dst)
            if ".old-" in os.fspath(dst):
                pause("swap-fallback")

        os.replace = replace

    def merge(config, out_dir, **_):
        out = Path(out_dir)
        (out / "model.safetensors").write_bytes(b"new weights, first half ")
        pause("merge")
        fake_merge()(config, out_dir)

    def audit(models, **kw):
        pause("audit")
        return fake_audit(ALIGN)(models, **kw)

    if setup is not None:
        setup()
    report = pl.run_gate(case.recipe_b, case.out, policy=case.policy, merge_fn=merge, audit_fn=audit)
    os._exit(report.exit_code)


def start(case: Case, stage: str, setup: Callable[[], None] | None = None):
    proc = FORK.Process(target=_child, args=(case, stage, setup))
    proc.start()
    return proc


def wait_at(case: Case, stage: str, proc, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while not (case.marker / f"at-{stage}").exists():
        assert proc.is_alive(), f"the run ended (exit {proc.exitcode}) before reaching {stage}"
        assert time.monotonic() < deadline, f"the run never reached {stage}"
        time.sleep(0.01)
    return int((case.marker / f"at-{stage}").read_text())


def no_false_pass(root: Path) -> None:
    """Every report.json under ``root`` (outputs and stale staging dirs alike) that says pass
    vouches exactly for the files beside it."""
    for path in root.rglob("report.json"):
        report = load_report(path)
        if report.decision == "pass":
            assert report.files == hash_directory(path.parent), path


def assert_recovers(case: Case) -> None:
    """The next run cleans what the killed one left and writes B's output."""
    report = case.run(case.recipe_b)
    assert report.decision == "pass", report.reasons
    assert siblings(case.out) == []
    assert (case.out / "model.safetensors").read_bytes().startswith(b"fake weights ")
    assert b"0.3" in (case.out / "model.safetensors").read_bytes()
    assert load_report(case.out).files == hash_directory(case.out)


# --- kill -9 at every stage ---------------------------------------------------------------------

@pytest.mark.parametrize("stage, after", [
    ("policy", "previous"), ("merge", "previous"), ("audit", "previous"), ("card", "previous"),
    ("report", "previous"), ("commit", "previous"), ("swapped", "new"), ("swap-fallback", "absent"),
])
def test_kill_9_at_each_stage_of_run(tmp_path: Path, stage: str, after: str) -> None:
    case = Case(tmp_path)
    proc = start(case, stage)
    pid = wait_at(case, stage, proc)
    os.kill(pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    if after == "previous":
        assert tree(case.out) == case.before  # byte for byte, report.json included
    elif after == "new":  # the exchange happened: the complete new output, verified
        assert load_report(case.out).decision == "pass" and b"0.3" in (case.out / "model.safetensors").read_bytes()
    else:  # between the two renames of a swap without renameat2: absent, the old copy beside it
        assert not case.out.exists()
        (old,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
        assert tree(old) == case.before
    no_false_pass(tmp_path)
    if after == "absent":  # the next writer puts the previous output back before anything else
        from mergegate.outdir import check_output_dir

        with check_output_dir(case.out).claim():
            assert tree(case.out) == case.before
    assert_recovers(case)


# --- a crashing judge, a full disk ----------------------------------------------------------------

def _assert_previous_kept_with_error_report(case: Case, stage: str) -> None:
    after = tree(case.out)
    assert after.pop("report.previous.json")[0] == case.before["report.json"][0]
    error = load_report(case.out)
    assert error.decision == "error" and error.error and error.error.stage == stage and error.files == {}
    after.pop("report.json")
    before = dict(case.before)
    before.pop("report.json")
    assert after == before  # weights, card, chart, recipe: byte for byte
    no_false_pass(case.root)
    assert siblings(case.out) == []


def test_judge_crash_keeps_the_previous_output(tmp_path: Path) -> None:
    from mergegate.errors import AuditError

    case = Case(tmp_path)
    report = case.run(case.recipe_b, audit_fn=fake_audit(ALIGN, fail=AuditError("the judge crashed: CUDA error")))
    assert report.decision == "error" and report.exit_code == 3
    _assert_previous_kept_with_error_report(case, "audit")
    assert_recovers(case)


def _fsize_limit(limit: int) -> Callable[[], None]:
    def setup() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return setup


def test_disk_full_while_writing_the_card_keeps_the_previous_output(tmp_path: Path) -> None:
    case = Case(tmp_path)
    proc = start(case, "none", setup=_fsize_limit(12_000))  # the chart is larger than this, the error report not
    proc.join(60)
    assert proc.exitcode == 3
    _assert_previous_kept_with_error_report(case, "card")
    assert "File too large" in load_report(case.out).error.message  # type: ignore[union-attr]
    assert_recovers(case)


@pytest.mark.slow
def test_disk_full_during_a_real_merge_keeps_the_previous_output(tmp_path: Path, recipe: Path) -> None:
    out = tmp_path / "out"
    assert main(["merge", str(recipe), str(out)]) == 0
    before = tree(out)
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from mergegate.cli.main import run; sys.argv[0] = 'mergegate'; run()",
         "merge", str(recipe), str(out)],
        preexec_fn=_fsize_limit(64_000), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert "writing the output failed" in proc.stderr and "File too large" in proc.stderr
    assert "check free disk space" in proc.stderr
    assert tree(out) == before and siblings(out) == []


# --- two runs into one directory ------------------------------------------------------------------

def test_concurrent_runs_the_second_refuses_and_changes_nothing(tmp_path: Path, models: tuple[Path, Path],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from _output_helpers import linear_recipe

    case = Case(tmp_path)
    proc = start(case, "audit")
    pid = wait_at(case, "audit", proc)
    monkeypatch.setattr(pipeline, "_default_merge_fn", lambda: fake_merge())
    monkeypatch.setattr(pipeline, "_default_audit_fn", lambda: fake_audit(ALIGN))
    capsys.readouterr()
    code = main(["run", str(case.recipe_a), "--out", str(case.out), "--policy", str(case.policy), "--no-github"])
    captured = capsys.readouterr()
    assert code == 2
    assert f"another mergegate process (pid {pid}) is writing this output" in captured.err
    assert str(case.out) in captured.err and ".out.lock" in captured.err
    assert "PASS" not in captured.out and "report:" not in captured.out  # no verdict for files it does not own
    real = linear_recipe(tmp_path / "real.yml", *models)
    assert main(["merge", str(real), str(case.out)]) == 2
    assert f"(pid {pid}) is writing this output" in capsys.readouterr().err
    assert tree(case.out) == case.before  # neither refused run touched anything
    (case.marker / "go").write_text("")
    proc.join(60)
    assert proc.exitcode == 0
    assert b"0.3" in (case.out / "model.safetensors").read_bytes()
    assert load_report(case.out).files == hash_directory(case.out) and siblings(case.out) == []
