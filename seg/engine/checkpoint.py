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
        raise CheckpointError(
            f"cannot load checkpoint {path} ({type(error).__name__}: {error}); "
            "it may be truncated or not a liftseg checkpoint"
        ) from error


class CheckpointError(ValueError):
    """A file that is not a (readable) liftseg checkpoint; the message says what it is."""


_REQUIRED = ("model", "config", "meta")


def load_for_inference(
    path: str | Path,
    overrides: tuple[str, ...] = (),
    device: str | torch.device = "cpu",
    config: str | Path | None = None,
) -> tuple[nn.Module, Config, dict]:
    """The model of a checkpoint, in eval mode on ``device``, with its config and metadata.

    ``config``: a YAML file to use instead of the stored config (data paths, eval
    settings); the model is always built as the checkpoint's weights were trained, without
    fetching its encoder's pretrained weights (the checkpoint holds every weight). A bare
    ``state_dict`` loads too when ``config`` says what it is (model and data set).
    """
    state = load_checkpoint(path)
    if _is_state_dict(state) and config is not None:
        return _load_bare_weights(state, path, overrides, device, config)
    _check_liftseg(state, path)
    if config is not None:
        cfg = load_config(config, overrides)
    else:
        cfg = config_from_dict(state["config"], overrides)
    model = build_model(without_pretrained(state["config"]["model"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg, state["meta"]


def without_pretrained(model_cfg: dict) -> dict:
    """``model_cfg`` with no encoder weights to fetch: they are about to be overwritten."""
    return {**model_cfg, "encoder_weights": None} if "encoder_weights" in model_cfg else model_cfg


def _is_state_dict(state: Any) -> bool:
    return (
        isinstance(state, dict)
        and bool(state)
        and all(isinstance(v, torch.Tensor) for v in state.values())
    )


def _check_liftseg(state: Any, path: str | Path) -> None:
    if isinstance(state, dict) and all(key in state for key in _REQUIRED):
        return
    if _is_state_dict(state):
        what = f"a bare state_dict ({len(state)} tensors), not a liftseg checkpoint"
        fix = "pass --config CONFIG (the model and data set it was trained with) to load it"
    else:
        kind = (
            f"a dict with keys {sorted(map(str, state))[:8]}"
            if isinstance(state, dict)
            else f"a {type(state).__name__}"
        )
        what = f"{kind}, not a liftseg checkpoint"
        fix = "give a last.pt / best.pt written by tools/train.py"
    raise CheckpointError(f"{path} holds {what} (one has keys {', '.join(_REQUIRED)}, ...): {fix}")


def _load_bare_weights(state, path, overrides, device, config) -> tuple[nn.Module, Config, dict]:
    from seg.data import build_dataset

    cfg = load_config(config, overrides)
    model = build_model(without_pretrained(cfg.model))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(
            f"the weights in {path} do not fit the model of {config}: "
            f"{' '.join(str(error).split())[:400]}"
        ) from error
    meta = data_meta(build_dataset(cfg.data, cfg.eval.split), cfg.data)
    return model.to(device).eval(), cfg, meta


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
