"""Shared by the tools' tests: a tiny training config and tools/compare.py's command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compare_cli(*args, check=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "tools/compare.py", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check is not None and done.returncode != check:
        raise AssertionError(f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="session")
def compare_cli():
    """Run tools/compare.py; ``check`` = the exit status expected (None: any)."""
    return _compare_cli


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory, tiny_raw):
    raw = tiny_raw(
        train={"iters": 3, "val_interval": 0, "ckpt_interval": 1, "num_vis": 0},
        output={"tensorboard": False},
    )
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
