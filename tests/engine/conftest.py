"""A training config small enough for a CPU test: SegNet x1/16, depth 3, 32x32 scenes."""

from __future__ import annotations

import pytest

from seg.config import config_from_dict


def tiny_config(work_dir, overrides=(), **sections):
    raw = {
        "model": {"name": "segnet", "num_classes": 4, "width": 0.0625, "depth": 3},
        "data": {
            "name": "synthetic",
            "size": 32,
            "num_classes": 4,
            "num_samples": {"train": 12, "val": 5, "test": 3},
        },
        "train": {
            "iters": 6,
            "batch_size": 2,
            "workers": 0,
            "lr": 0.05,
            "warmup_iters": 2,
            "val_interval": 3,
            "ckpt_interval": 3,
            "log_interval": 1,
            "num_vis": 2,
        },
        "eval": {"batch_size": 2, "workers": 0},
        "output": {"work_dir": str(work_dir), "progress": False},
    }
    for name, values in sections.items():
        raw[name] = values
    return config_from_dict(raw, overrides)


@pytest.fixture
def make_config():
    return tiny_config
