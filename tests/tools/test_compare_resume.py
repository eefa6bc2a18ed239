"""tools/compare.py stopped by SIGTERM to its process group mid-run, then run again: the
run continues from last.pt.

In its own file so that it runs beside test_compare.py's study (pytest-xdist, a file per worker).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seg.engine import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_an_interrupted_study_continues_where_it_stopped(tmp_path, tiny_config, compare_cli):
    out = tmp_path / "study"
    args = [
        tiny_config, "--variant", "lift/lift", "--seeds", "0", "--images", "0",
        "--set", "train.iters=100", "train.ckpt_interval=100", "--out", out,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "tools/compare.py", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as in a terminal or under a scheduler
    )
    train_log = out / "runs" / "lift-lift" / "seed0" / "train.log"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if train_log.is_file() and "iter 2/100" in train_log.read_text():
            break
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("training never reached iteration 2")
    # to the whole group, as Ctrl-C and schedulers do: tools/train.py gets it from the group
    # and again from compare.py, and must still save rather than abort
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "run the same command again" in stderr
    stopped = load_checkpoint(out / "runs" / "lift-lift" / "seed0" / "last.pt")["iteration"]
    assert 2 <= stopped < 100
    assert not (out / "runs" / "lift-lift" / "seed0" / "metrics.json").exists()
    compare_cli(*args, check=0)
    assert (
        f"resumed from {out / 'runs' / 'lift-lift' / 'seed0' / 'last.pt'} at iteration {stopped}"
        in (train_log.read_text())
    )
    assert load_checkpoint(out / "runs" / "lift-lift" / "seed0" / "last.pt")["iteration"] == 100


def test_a_run_killed_after_a_validation_but_before_its_first_save_continues(
    tmp_path, tiny_config, compare_cli
):
    # val_interval < ckpt_interval: a kill between the two leaves best.pt and no last.pt.
    # The study continues from best.pt instead of failing on every rerun.
    args = [
        tiny_config, "--variant", "max/bilinear", "model.down=max", "model.up=bilinear",
        "--seeds", 0, "--images", 0, "--out", tmp_path,
        "--set", "train.val_interval=2", "train.ckpt_interval=0",
    ]  # fmt: skip
    compare_cli(*args, check=0)
    run = tmp_path / "runs" / "max-bilinear" / "seed0"
    best = load_checkpoint(run / "best.pt")["iteration"]
    for name in ("last.pt", "metrics.json", "metrics.md"):
        (run / name).unlink()
    for scored in run.glob("eval_*"):
        for path in scored.iterdir():
            path.unlink()
        scored.rmdir()
    again = compare_cli(*args, check=0)
    assert "| max/bilinear | 1/1 |" in again.stdout
    assert f"resumed from {run / 'best.pt'} at iteration {best}" in (run / "train.log").read_text()
    assert load_checkpoint(run / "last.pt")["iteration"] == 3
