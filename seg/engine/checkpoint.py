"""Checkpoints: plain dictionaries of tensors and Python values, written atomically.

A checkpoint loads with ``torch.load(path, weights_only=True)``: it holds the model,
optimizer, LR-scheduler and grad-scaler states, the iteration, the best score, the RNG
states and the resolved config (a dictionary), plus what inference needs without the data
set (class names, palette, normalisation).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seg.config import Config, config_from_dict, load_config
from seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from seg.models import build_model

LAST = "last.pt"
BEST = "best.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` via a temporary file in the same folder and a rename.

    A crash mid-write leaves the previous file intact: ``os.replace`` is atomic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(
            f"cannot load checkpoint {path} ({type(error).__name__}: {error}); "
            "it may be truncated or not a liftseg checkpoint"
        ) from error


def load_for_inference(
    path: str | Path,
    overrides: tuple[str, ...] = (),
    device: str | torch.device = "cpu",
    config: str | Path | None = None,
) -> tuple[nn.Module, Config, dict]:
    """The model of a checkpoint, in eval mode on ``device``, with its config and metadata.

    ``config``: a YAML file to use instead of the stored config (data paths, eval
    settings); the model is always built as the checkpoint's weights were trained.
    """
    state = load_checkpoint(path)
    if config is not None:
        cfg = load_config(config, overrides)
    else:
        cfg = config_from_dict(state["config"], overrides)
    model = build_model(state["config"]["model"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg, state["meta"]


def data_meta(dataset, data_cfg: dict) -> dict:
    """What inference needs without the data set: class names, palette, normalisation."""
    return {
        "classes": list(dataset.class_names),
        "palette": np.asarray(dataset.palette).astype(int).tolist(),
        "ignore_index": int(dataset.ignore_index),
        "mean": list(data_cfg.get("mean", IMAGENET_MEAN)),
        "std": list(data_cfg.get("std", IMAGENET_STD)),
    }


def find_latest(work_dir: str | Path) -> Path | None:
    """``work_dir/last.pt`` if it exists, else None."""
    path = Path(work_dir) / LAST
    return path if path.is_file() else None


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": _to_plain(random.getstate()),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(value):
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    return value
