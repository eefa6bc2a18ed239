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


def _write_ab_study(
    path: Path, config: Path, settings: list[str], seeds: list[int], sweep_iters=None, **keys
) -> Path:
    """A study file with two variants of ``config``: a (lift/lift, the reference) and b
    (max/bilinear), compared at equal time; with ``sweep_iters``, a learning-rate sweep at
    that budget first. ``keys`` are further study keys (``split``)."""
    spec = {
        "config": str(config),
        "set": settings,
        "seeds": seeds,
        "reference": "a",
        "equal_time": True,
        "images": 0,
        "variants": {
            "a": ["model.down=lift", "model.up=lift"],
            "b": ["model.down=max", "model.up=bilinear"],
        },
        **keys,
    }
    if sweep_iters is not None:
        spec["sweep"] = {"grid": {"train.lr": [0.001, 0.01]}, "set": [f"train.iters={sweep_iters}"]}
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="session")
def ab_study():
    """Write a two-variant study file (`_write_ab_study`)."""
    return _write_ab_study
