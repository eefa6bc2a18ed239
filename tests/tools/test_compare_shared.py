"""Two tools/compare.py processes on one study, side by side, as README suggests for two
cores: real processes, real run locks.

In its own file so that it runs beside test_compare.py's tests (pytest-xdist, a file per worker).
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _trained(folder: Path) -> tuple[float, float]:
    """When a run trained: the first and last timestamps of its train.log."""
    stamps = [
        datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for line in (folder / "train.log").read_text().splitlines()
        if line[:4].isdigit()
    ]
    return stamps[0], stamps[-1]


@pytest.mark.slow
def test_two_processes_share_the_fair_protocol_and_train_each_run_once(tmp_path, tiny_config):
    """The same command twice, side by side, as the README suggests for two cores: they
    split the tuning, the seeds and the equal-time runs between them, each run trains once,
    and the equal-time budgets come from every seed."""
    study_file = tmp_path / "fair.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "config": str(tiny_config),
                "set": ["train.iters=6", "train.optimizer=adamw"],
                "seeds": [0, 1],
                "split": "test",
                "reference": "a",
                "equal_time": True,
                "images": 0,
                "sweep": {"grid": {"train.lr": [0.001, 0.01]}, "set": ["train.iters=3"]},
                "variants": {"a": ["model.down=lift", "model.up=lift"],
                             "b": ["model.down=max", "model.up=bilinear"]},
            }
        )
    )  # fmt: skip
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
    # side by side: some two runs trained at the same time
    spans = sorted(_trained(folder) for folder in folders)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))
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
