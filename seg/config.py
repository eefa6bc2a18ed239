"""Experiment configs: a typed schema, YAML files with includes, and ``--set a.b=c`` overrides.

A config has five sections::

    model:  {name: segnet, num_classes: 8, width: 0.25, down: lift, up: lift}   # build_model
    data:   {name: synthetic, size: 128}                                         # build_dataset
    train:  {iters: 2000, batch_size: 8, lr: 0.01, ...}                          # TrainConfig
    eval:   {mode: whole, tta: none, ...}                                        # EvalConfig
    output: {work_dir: work_dirs/NAME, ...}                                      # OutputConfig

``model`` and ``data`` stay dictionaries, checked key by key against what
`seg.models.build_model` and `seg.data.build_dataset` accept; ``train``, ``eval`` and
``output`` are dataclasses whose fields are the schema. A file may start with
``include: base.yaml`` (or a list): included files are merged first, in order, then the
file itself, nested mappings key by key. ``--set train.lr=0.02 model.up=bilinear`` values
are parsed as YAML (``0.02`` is a float, ``[1, 2]`` a list, ``null`` None).

Every mistake is a `ConfigError` that names the key: an unknown key suggests the closest
valid one, a value of the wrong type says the type expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

SECTIONS = ("model", "data", "train", "eval", "output")
INCLUDE_KEY = "include"


class ConfigError(ValueError):
    """A config that can't be used: the message names the key and the fix."""


@dataclass
class TrainConfig:
    """The training schedule. Iteration-based: ``iters`` optimizer steps in all."""

    iters: int = 2000
    batch_size: int = 8  # per process; the global batch is batch_size * world size
    workers: int = 2  # data-loading processes per training process
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW only
    poly_power: float = 0.9  # lr = base * (1 - it / iters) ** poly_power
    min_lr: float = 0.0
    warmup_iters: int = 0  # linear warm-up from warmup_ratio * lr to the poly curve
    warmup_ratio: float = 0.1
    grad_clip: float | None = None  # max global gradient norm; null = no clipping
    amp: Literal["bf16", "fp16", "none"] = "bf16"  # mixed precision, on CUDA only
    sync_bn: bool = False  # SyncBatchNorm across processes (ignored with one process)
    loss: dict[str, float] = field(default_factory=lambda: {"ce": 1.0})  # ce, dice, lovasz
    # cross-entropy weight per class, or median_frequency (SegNet's, from the train split)
    class_weights: list[float] | Literal["median_frequency"] | None = None
    lambda_u: float = 0.01  # LiftPool regulariser weights (no effect without LiftPool)
    lambda_p: float = 0.1
    val_interval: int = 500  # validate (and maybe write best.pt) every N iterations; 0 = end only
    ckpt_interval: int = 500  # write last.pt every N iterations (and always at the end)
    log_interval: int = 10  # TensorBoard scalars every N iterations
    num_vis: int = 4  # validation images drawn to TensorBoard (input / truth / prediction)
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms + cudnn.deterministic
    val_max_images: int | None = None  # validate on the first N images only (null = all)


@dataclass
class EvalConfig:
    """How predictions are made for validation, tools/eval.py and tools/infer.py."""

    split: str = "val"
    mode: Literal["whole", "slide"] = "whole"
    crop_size: list[int] | None = None  # slide: window [height, width]; default: data.crop_size
    stride: list[int] | None = None  # slide: window step [height, width]; default: 2/3 crop
    tta: Literal["none", "flip", "ms"] = "none"  # ms = multi-scale, with flips
    scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75])
    batch_size: int = 4  # images per forward when they share a size
    workers: int = 2
    boundary_ratio: float = 0.02  # Boundary IoU band width: this times the image diagonal


@dataclass
class OutputConfig:
    """Where a run writes: checkpoints, config.yaml, train.log, TensorBoard events."""

    work_dir: str | None = None  # default: work_dirs/<config file name>
    tensorboard: bool = True
    progress: bool = True  # tqdm bar on the main process


SCHEMA: dict[str, type] = {"train": TrainConfig, "eval": EvalConfig, "output": OutputConfig}


@dataclass
class Config:
    """A validated config. ``model`` and ``data`` are plain dictionaries."""

    model: dict[str, Any]
    data: dict[str, Any]
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    name: str = "config"  # the config file's stem; names the default work dir

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionaries, lists and scalars only: safe for YAML and checkpoints."""
        return {
            "model": dict(self.model),
            "data": dict(self.data),
            "train": dataclasses.asdict(self.train),
            "eval": dataclasses.asdict(self.eval),
            "output": dataclasses.asdict(self.output),
            "name": self.name,
        }

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @property
    def work_dir(self) -> Path:
        return Path(self.output.work_dir or Path("work_dirs") / self.name)


# ---------------------------------------------------------------- loading and merging


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (with its includes), apply ``a.b=value`` overrides, validate."""
    path = Path(path)
    raw = _read_with_includes(path, ())
    raw = apply_overrides(raw, overrides)
    raw.setdefault("name", path.stem)
    return config_from_dict(raw)


def config_from_dict(raw: Mapping[str, Any], overrides: Sequence[str] = ()) -> Config:
    """Validate a config dictionary (as read from YAML or stored in a checkpoint)."""
    raw = apply_overrides(dict(raw), overrides)
    unknown = [key for key in raw if key not in (*SECTIONS, "name")]
    for key in unknown:
        raise ConfigError(_unknown_key_message(key, [*SECTIONS, "name"], "the config"))
    for section in ("model", "data"):
        if not isinstance(raw.get(section), Mapping):
            raise ConfigError(f"the config needs a '{section}' section (a mapping)")
    model = _check_model(dict(raw["model"]))
    data = _check_data(dict(raw["data"]))
    sections = {
        name: _build_section(name, schema, raw.get(name) or {}) for name, schema in SCHEMA.items()
    }
    crop = data.get("crop_size")
    if sections["eval"].crop_size is None and crop is not None:
        # Sliding windows default to the training crop: the size the model learned on.
        sections["eval"].crop_size = [crop, crop] if isinstance(crop, int) else list(crop)
    return Config(model=model, data=data, name=str(raw.get("name", "config")), **sections)


def _read_with_includes(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"config include cycle: {chain}")
    try:
        text = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(text, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(text).__name__}")
    includes = text.pop(INCLUDE_KEY, [])
    if isinstance(includes, str):
        includes = [includes]
    merged: dict[str, Any] = {}
    for include in includes:
        merged = merge(merged, _read_with_includes(path.parent / include, (*seen, path)))
    return merge(merged, text)


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Nested mappings merge key by key; anything else in ``update`` replaces ``base``'s."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` (any depth); values are parsed as YAML."""
    for item in overrides:
        dotted, sep, text = item.partition("=")
        if not sep or not dotted.strip():
            raise ConfigError(f"--set expects key=value (e.g. train.lr=0.02), got {item!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({error})") from error
        raw = _set_path(raw, dotted.strip().split("."), value)
    return raw


def _set_path(raw: dict[str, Any], keys: list[str], value: Any) -> dict[str, Any]:
    out = dict(raw)
    node = out
    for key in keys[:-1]:
        child = node.get(key)
        child = dict(child) if isinstance(child, Mapping) else {}
        node[key] = child
        node = child
    node[keys[-1]] = value
    return out


# ---------------------------------------------------------------- validation


def _unknown_key_message(key: str, valid: Sequence[str], where: str) -> str:
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown key '{key}' in {where}{hint} Valid keys: {', '.join(sorted(valid))}"


def _check_model(model: dict[str, Any]) -> dict[str, Any]:
    from seg.models import MODELS, model_options

    name = model.get("name")
    if name is None or str(name).lower() not in MODELS:
        close = difflib.get_close_matches(str(name), list(MODELS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(
            f"model.name {name!r} is not a model{hint}; choose one of {sorted(MODELS)}"
        )
    valid = ["name", *model_options(str(name).lower())]
    for key in model:
        if key not in valid:
            raise ConfigError(_unknown_key_message(key, valid, f"model (a {name} model)"))
    if not isinstance(model.get("num_classes"), int) or isinstance(model["num_classes"], bool):
        raise ConfigError("model.num_classes must be an int (the number of classes)")
    return model


def _check_data(data: dict[str, Any]) -> dict[str, Any]:
    from seg.data import DATASETS, dataset_options

    name = data.get("name")
    if name not in DATASETS:
        close = difflib.get_close_matches(str(name), list(DATASETS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"data.name {name!r} is not a data set{hint}; choose one of {DATASETS}")
    valid = dataset_options(name)
    for key in data:
        if key not in valid:
            raise ConfigError(_unknown_key_message(key, valid, f"data (the '{name}' data set)"))
    return data


def _build_section(name: str, schema: type, values: Any) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"'{name}' must be a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(schema)
    fields = [f.name for f in dataclasses.fields(schema)]
    checked = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(key, fields, f"'{name}'"))
        checked[key] = _check_type(f"{name}.{key}", value, hints[key])
    section = schema(**checked)
    _check_values(name, section)
    return section


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{origin.__name__}[{args}]"
    return annotation.__name__


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    """``value`` converted to ``annotation`` where that loses nothing (int -> float), else error."""
    ok, converted = _convert(value, annotation)
    if not ok:
        raise ConfigError(
            f"{key} must be {_type_name(annotation)}, got {value!r} ({type(value).__name__})"
        )
    return converted


def _convert(value: Any, annotation: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return value in args, value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, converted = _convert(value, arg)
            if ok:
                return True, converted
        return False, value
    if annotation is type(None):
        return value is None, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if annotation is str:
        return isinstance(value, str), value
    if origin is list:
        if not isinstance(value, list | tuple):
            return False, value
        items = [_convert(item, args[0]) for item in value]
        return all(ok for ok, _ in items), [item for _, item in items]
    if origin is dict:
        if not isinstance(value, Mapping):
            return False, value
        items = {k: _convert(v, args[1]) for k, v in value.items()}
        ok = all(isinstance(k, str) for k in value) and all(ok for ok, _ in items.values())
        return ok, {k: item for k, (_, item) in items.items()}
    return isinstance(value, annotation), value


LOSSES = ("ce", "dice", "lovasz")


def _check_values(name: str, section: Any) -> None:
    """Range checks the types alone can't express."""
    if isinstance(section, TrainConfig):
        for key in ("iters", "batch_size"):
            if getattr(section, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(section, key)}")
        for key in ("workers", "warmup_iters", "val_interval", "ckpt_interval", "num_vis"):
            if getattr(section, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(section, key)}")
        if section.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {section.lr}")
        if section.log_interval < 1:
            raise ConfigError(f"train.log_interval must be >= 1, got {section.log_interval}")
        for loss in section.loss:
            if loss not in LOSSES:
                raise ConfigError(_unknown_key_message(loss, LOSSES, "train.loss"))
        if not section.loss:
            raise ConfigError("train.loss needs at least one term, e.g. {ce: 1.0}")
        if len(section.betas) != 2:
            raise ConfigError(f"train.betas must be two numbers, got {section.betas}")
    if isinstance(section, EvalConfig):
        for key in ("crop_size", "stride"):
            value = getattr(section, key)
            if value is not None and (len(value) != 2 or min(value) < 1):
                raise ConfigError(f"eval.{key} must be [height, width] of positive ints: {value}")
        if section.batch_size < 1:
            raise ConfigError(f"eval.batch_size must be >= 1, got {section.batch_size}")
        if not section.scales or min(section.scales) <= 0:
            raise ConfigError(f"eval.scales must be positive numbers, got {section.scales}")


__all__ = [
    "Config",
    "ConfigError",
    "EvalConfig",
    "OutputConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "merge",
]
