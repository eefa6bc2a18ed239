"""A training config small enough for a CPU test, built from the suite's shared ``tiny_raw``."""

from __future__ import annotations

import pytest

from seg.config import config_from_dict


@pytest.fixture
def make_config(tiny_raw):
    """``make_config(work_dir, overrides=(), **sections)``: each keyword replaces a whole section."""

    def make(work_dir, overrides=(), **sections):
        raw = tiny_raw(
            train={
                "iters": 6,
                "warmup_iters": 2,
                "val_interval": 3,
                "ckpt_interval": 3,
                "num_vis": 2,
            },
            output={"work_dir": str(work_dir), "progress": False},
        )
        raw.update(sections)
        return config_from_dict(raw, overrides)

    return make
