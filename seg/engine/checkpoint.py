"""Checkpoints: plain dictionaries of tensors and Python values, written atomically.

A checkpoint loads with ``torch.load(path, weights_only=True)``: it holds the model,
optimizer, LR-scheduler and grad-scaler states, the iteration, the best score, the RNG
states and the resolved config (a dictionary), plus what inference needs without the data
set (class names, palette, normalisation). `load_weights` starts a fine-tune from the
weights of a checkpoint, a state_dict or a ``.safetensors`` file, skipping by name what
doesn't fit.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seg.config import Config, ConfigError, config_from_dict, load_config
from seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from seg.models import build_model

LAST = "last.pt"
BEST = "best.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` via a temporary file in the same folder and a rename.

    A crash mid-write leaves the previous file intact: ``os.replace`` is atomic.
    """
    return atomic_write(path, lambda handle: torch.save(state, handle))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``path.write_text(text)`` that a reader (another process tabulating a study) or a
    crash never sees half-written, like `save_checkpoint`."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write(path: str | Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
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


# ---------------------------------------------------------------- weights for fine-tuning


WEIGHT_FORMATS = (
    "a liftseg checkpoint (last.pt / best.pt), a torch.save'd state_dict (.pt / .pth) or a "
    ".safetensors file"
)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights stored in ``path``, by name, on the CPU.

    ``path`` is a liftseg checkpoint (its ``model``), a state_dict saved with ``torch.save``
    (bare, or as ``{"state_dict": ...}``) or a ``.safetensors`` file. A ``module.`` prefix on
    every name (a DistributedDataParallel model saved whole) is dropped.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CheckpointError: the file holds no state_dict (the message says what it holds).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (give {WEIGHT_FORMATS})")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        state = load_checkpoint(path)
    if isinstance(state, dict) and not _is_state_dict(state):
        state = state.get("model", state.get("state_dict", state))
    if not _is_state_dict(state):
        kind = f"keys {sorted(map(str, state))[:8]}" if isinstance(state, dict) else "no dict"
        raise CheckpointError(
            f"{path} holds no model weights ({type(state).__name__} with {kind}): "
            f"give {WEIGHT_FORMATS}"
        )
    prefix = "module."
    if all(name.startswith(prefix) for name in state):
        state = {name[len(prefix) :]: tensor for name, tensor in state.items()}
    return state


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {path} as safetensors ({error})") from error


@dataclass
class WeightMatch:
    """How a weights file fits a model, tensor by tensor (names in the model's order)."""

    loaded: list[str] = field(default_factory=list)
    # "name (file [4, 16, 3, 3], model [6, 16, 3, 3])": kept as the model initialised them
    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model

    @property
    def complete(self) -> bool:
        """Every tensor of the model came from the file, and every tensor of the file fitted."""
        return not (self.mismatched or self.missing or self.unexpected)

    def skipped(self, limit: int | None = None) -> list[str]:
        """One ``"<what>: name, name, ..."`` line per kind of tensor that was not loaded."""
        kinds = (
            ("shape differs (kept as initialised)", self.mismatched),
            ("missing from the file (kept as initialised)", self.missing),
            ("not in the model (ignored)", self.unexpected),
        )
        lines = []
        for what, names in kinds:
            if names:
                shown = names if limit is None else names[:limit]
                more = f", ... ({len(names) - len(shown)} more)" if len(names) > len(shown) else ""
                lines.append(f"{len(names)} {what}: {', '.join(shown)}{more}")
        return lines


def match_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> WeightMatch:
    """Sort ``weights`` into those that fit ``model`` (same name and shape) and the rest.

    A tensor the model shares under two names (a LiftUpPool holds its LiftDownPool's
    predictors) counts as loaded when the file has it under either: safetensors'
    ``save_model`` keeps one name of each shared tensor.
    """
    own = model.state_dict()
    match = WeightMatch()
    for name, tensor in own.items():
        if name not in weights:
            match.missing.append(name)
        elif weights[name].shape != tensor.shape:
            shapes = f"file {list(weights[name].shape)}, model {list(tensor.shape)}"
            match.mismatched.append(f"{name} ({shapes})")
        else:
            match.loaded.append(name)
    filled = {_identity(own[name]) for name in match.loaded}
    match.missing = [name for name in match.missing if _identity(own[name]) not in filled]
    match.unexpected = [name for name in weights if name not in own]
    return match


def _identity(tensor: torch.Tensor) -> tuple:
    """Equal for two names of one tensor (same memory, shape and strides)."""
    return (tensor.device, tensor.data_ptr(), tuple(tensor.shape), tensor.stride())


def load_weights(model: nn.Module, path: str | Path, strict: bool = False) -> WeightMatch:
    """Copy the tensors of ``path`` (see `read_weights`) that fit ``model`` into it.

    The rest are skipped by name (a new head for another class count keeps its
    initialisation) and listed in the returned `WeightMatch`; with ``strict``, any of them
    is an error and nothing is loaded.

    Raises:
        ConfigError: ``strict`` and a tensor doesn't fit, or no tensor fits at all (the file
            holds another model); the message lists them.
        FileNotFoundError, CheckpointError: as `read_weights`.
    """
    weights = read_weights(path)
    match = match_weights(model, weights)
    if not match.loaded:
        raise ConfigError(
            f"none of the {len(weights)} tensors in {path} fits the model (e.g. "
            f"{', '.join(list(weights)[:3])}): it holds the weights of another model; "
            "load weights of this architecture"
        )
    if strict and not match.complete:
        raise ConfigError(
            f"--strict: the weights in {path} do not fit the model exactly; "
            f"{'; '.join(match.skipped(limit=10))}. Drop --strict (train.load_strict) to "
            "skip these by name, e.g. a head for another number of classes"
        )
    model.load_state_dict({name: weights[name] for name in match.loaded}, strict=False)
    return match


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
    """Python, NumPy, torch CPU and this process's CUDA generator states as tensors and
    plain values. One GPU's, the current one: a run resumed on fewer GPUs, or each DDP
    process on its own GPU, has that one to put it back on."""
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
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
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
    if not torch.cuda.is_available():
        return
    cuda = state.get("cuda")
    if isinstance(cuda, list):  # written before: every GPU's state as rank 0 saw them,
        cuda = cuda[0] if cuda else None  # of which it drew from its own, the first
    if cuda is not None:
        torch.cuda.set_rng_state(cuda)


def _to_plain(value):
    if isinstance(value, tuple | list):
        return [_to_plain(v) for v in value]
    return value
