"""Two tools/compare.py processes on one study, side by side, as README suggests for two
cores: real processes, real run locks.

In its own file so that it runs beside test_compare.py's tests (pytest-xdist, a file per worker).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from seg.engine.study import hold_run, is_held

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_processes_share_the_fair_protocol_and_train_each_run_once(
    tmp_path, tiny_config, ab_study
):
    """The same command twice, side by side, as the README suggests for two cores: they
    split the tuning, the seeds and the equal-time runs between them, each run trains once,
    and the equal-time budgets come from every seed."""
    study_file = ab_study(
        tmp_path / "fair.yaml",
        tiny_config,
        ["train.iters=6", "train.optimizer=adamw"],
        [0, 1],
        sweep_iters=3,
        split="test",
    )
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env["SEG_COMPARE_POLL_S"] = "0.5"
    command = [sys.executable, "tools/compare.py", "--study", str(study_file), "--out", str(out)]
    processes = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    folders = sorted(path.parent for path in out.rglob("compare_run.json"))
    assert len(folders) == 4 + 4 + 2  # tuning, seeds, equal time
    for folder in folders:
        assert (folder / "compare.log").read_text().count("tools/train.py") == 1, folder
        assert "resumed" not in (folder / "train.log").read_text()
    # side by side: both processes trained some of them (compare.log names the process)
    pids = {
        int(line.rsplit(" ", 1)[1])
        for folder in folders
        for line in (folder / "compare.log").read_text().splitlines()
        if line.startswith("# ") and "tools/compare.py pid" in line
    }
    assert pids == {process.pid for process in processes}
    results = json.loads((out / "results.json").read_text())
    spi = {
        name: np.mean([r["train"]["seconds_per_iter"] for r in results["runs"] if r["variant"] == name])
        for name in ("a", "b")
    }  # fmt: skip
    timed = yaml.safe_load(
        (out / "equal_time" / "runs" / "b-equal-time" / "seed1" / "config.yaml").read_text()
    )
    assert timed["train"]["iters"] == max(1, round(6 * spi["a"] / spi["b"]))
    assert len(results["equal_time"]["runs"]) == 2


@pytest.mark.slow
def test_a_run_stays_held_while_its_trainer_outlives_a_killed_compare(tmp_path, tiny_config):
    """compare.py killed outright (no chance to stop its trainer): the trainer keeps the run
    held, so another process sharing the study does not start a second trainer there."""
    out = tmp_path / "out"
    command = [
        sys.executable, "tools/compare.py", str(tiny_config), "--variant", "a", "--seeds", "0",
        "--images", "0", "--set", "train.iters=1000", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    folder = out / "runs" / "a" / "seed0"
    try:
        deadline = time.monotonic() + 300
        while not (
            (folder / "train.log").is_file() and "iter 2/1000" in (folder / "train.log").read_text()
        ):
            assert time.monotonic() < deadline, "training never reached iteration 2"
            time.sleep(0.2)
        process.kill()  # SIGKILL to compare.py alone
        process.wait()
        assert is_held(folder)  # by tools/train.py, still training
        with hold_run(folder) as hold:
            assert hold is None
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the orphaned trainer
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 60
    while is_held(folder):
        assert time.monotonic() < deadline, "the lock outlived its trainer"
        time.sleep(0.2)
