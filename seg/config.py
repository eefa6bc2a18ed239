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
are parsed as YAML (``0.02`` is a float, ``[1, 2]`` a list, ``null`` None). Files and
values are read with `load_yaml`, which takes every float spelling (``1e-3``, ``5E4``,
``.5``, ``1.e-3``) as a float, where plain YAML 1.1 reads ``1e-3`` as a string.

Every mistake is a `ConfigError` that names the key: an unknown key or name suggests the
closest valid one (`seg.registry.check_keys`), a value of the wrong type says the type
expected, a number out of range says the range. Ranges are part of the schema:
``lr: Annotated[float, Range(gt=0)]``; each section's ``check()`` checks them and the
rules between its fields.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from seg.registry import ConfigError, check_keys

SECTIONS = ("model", "data", "train", "eval", "output")
INCLUDE_KEY = "include"


@dataclass(frozen=True)
class Range:
    """The bounds of a numeric field, declared in the schema: ``Annotated[float, Range(gt=0)]``.

    They hold for the number, for each number of a list and for each value of a mapping;
    null and strings pass (the type says whether they may be there). Every number must
    also be finite: ``inf`` and ``nan`` are never a setting.
    """

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def __str__(self) -> str:
        bounds = ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
        return " and ".join(f"{op} {bound:g}" for op, bound in bounds if bound is not None)

    def holds(self, x: float) -> bool:
        """Whether ``x`` is finite and within the bounds."""
        return (
            math.isfinite(x)
            and (self.gt is None or x > self.gt)
            and (self.ge is None or x >= self.ge)
            and (self.lt is None or x < self.lt)
            and (self.le is None or x <= self.le)
        )


@dataclass
class TrainConfig:
    """The training schedule. Iteration-based: ``iters`` optimizer steps in all."""

    iters: Annotated[int, Range(ge=1)] = 2000
    # per process and micro-batch; the global batch is batch_size * accumulate * world size
    batch_size: Annotated[int, Range(ge=1)] = 8
    # Gradient accumulation: each optimizer step adds up the gradients of `accumulate`
    # micro-batches of batch_size (each one's loss scaled by 1/accumulate; under DDP the
    # gradients are synchronised once, on the last), so a step sees accumulate times the
    # images at the memory of one micro-batch. iters, the LR schedule and every interval
    # count optimizer steps; the NaN guard covers every micro-batch and grad_clip clips the
    # summed gradient. Equal to a batch accumulate times larger except where a micro-batch
    # is normalised on its own: BatchNorm statistics, and a mean over labelled pixels that
    # weighs micro-batches with more ignored pixels like the others.
    accumulate: Annotated[int, Range(ge=1)] = 1
    workers: Annotated[int, Range(ge=0)] = 2  # data-loading processes per training process
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: Annotated[float, Range(gt=0)] = 0.01
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9  # SGD only
    weight_decay: Annotated[float, Range(ge=0)] = 5e-4
    # AdamW only: [beta1, beta2]
    betas: Annotated[list[float], Range(ge=0, lt=1)] = field(default_factory=lambda: [0.9, 0.999])
    # lr = base * (1 - it / iters) ** poly_power
    poly_power: Annotated[float, Range(gt=0)] = 0.9
    min_lr: Annotated[float, Range(ge=0)] = 0.0  # where the poly curve ends; <= lr
    # linear warm-up from warmup_ratio * lr to the poly curve
    warmup_iters: Annotated[int, Range(ge=0)] = 0
    warmup_ratio: Annotated[float, Range(ge=0, le=1)] = 0.1
    # max global gradient norm; null = no clipping
    grad_clip: Annotated[float | None, Range(gt=0)] = None
    amp: Literal["bf16", "fp16", "none"] = "bf16"  # mixed precision, on CUDA only
    sync_bn: bool = False  # SyncBatchNorm across processes (ignored with one process)
    # torch.compile of the training forward: on / off (YAML booleans), or "auto": what was
    # measured fastest for the device (seg.engine.runtime.use_compile; docs/performance.md)
    compile: bool | Literal["auto"] = "auto"
    # {name: weight}, names from seg.engine.losses.LOSSES: ce, dice, lovasz
    loss: Annotated[dict[str, float], Range(ge=0)] = field(default_factory=lambda: {"ce": 1.0})
    # cross-entropy weight per class, or median_frequency (SegNet's, from the train split)
    class_weights: Annotated[list[float] | Literal["median_frequency"] | None, Range(ge=0)] = None
    # LiftPool regulariser weights (no effect without LiftPool)
    lambda_u: Annotated[float, Range(ge=0)] = 0.01
    lambda_p: Annotated[float, Range(ge=0)] = 0.1
    # validate (and maybe write best.pt) every N iterations; 0 = at the end only
    val_interval: Annotated[int, Range(ge=0)] = 500
    # write last.pt every N iterations (and always at the end); 0 = at the end only
    ckpt_interval: Annotated[int, Range(ge=0)] = 500
    log_interval: Annotated[int, Range(ge=1)] = 10  # TensorBoard scalars every N iterations
    # validation images drawn to TensorBoard (input / truth / prediction)
    num_vis: Annotated[int, Range(ge=0)] = 4
    seed: Annotated[int, Range(ge=0)] = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms + cudnn.deterministic
    # validate on the first N images only (null = all)
    val_max_images: Annotated[int | None, Range(ge=1)] = None
    # Fine-tuning: start from the weights in this file (a liftseg checkpoint, a torch.save'd
    # state_dict or a .safetensors file): weights only, optimizer and iteration start afresh.
    # Tensors whose name or shape doesn't fit the model (a head for another class count)
    # keep their initialisation and are listed by name in train.log. Applied once, before
    # the first step; a --resume restores the run's own weights and doesn't apply it again.
    load_from: str | None = None
    # with load_from: refuse (naming them) tensors that don't fit, instead of skipping them
    load_strict: bool = False

    def check(self) -> None:
        """Types and ranges (from the annotations), loss names, and the rules between fields.

        Raises:
            ConfigError: naming the key (``train.lr``, ``train.loss``, ...) and the fix.
        """
        from seg.engine.losses import LOSSES

        _check_fields(self, "train")
        if not self.loss:
            raise ConfigError("train.loss needs at least one term, e.g. {ce: 1.0}")
        check_keys("train.loss", self.loss, LOSSES, what="loss")
        if len(self.betas) != 2:
            raise ConfigError(f"train.betas must be two numbers [beta1, beta2], got {self.betas}")
        if self.load_from is not None and not self.load_from.strip():
            raise ConfigError(
                "train.load_from is empty: give the weights file to start from, or null"
            )
        if self.load_strict and self.load_from is None:
            raise ConfigError(
                "train.load_strict needs train.load_from (the weights to load strictly): "
                "tools/train.py CONFIG --load-from CKPT --strict"
            )
        if self.min_lr > self.lr:
            raise ConfigError(
                f"train.min_lr ({self.min_lr:g}) must be <= train.lr ({self.lr:g}): the "
                "learning rate decays from lr to min_lr"
            )


@dataclass
class EvalConfig:
    """How predictions are made for validation, tools/eval.py and tools/infer.py."""

    split: str = "val"
    mode: Literal["whole", "slide"] = "whole"
    # slide: window [height, width]; default: data.crop_size
    crop_size: Annotated[list[int] | None, Range(ge=1)] = None
    # slide: window step [height, width], <= crop_size; default: 2/3 of crop_size
    stride: Annotated[list[int] | None, Range(ge=1)] = None
    tta: Literal["none", "flip", "ms"] = "none"  # ms = multi-scale, with flips
    scales: Annotated[list[float], Range(gt=0)] = field(
        default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    )
    batch_size: Annotated[int, Range(ge=1)] = 4  # images per forward when they share a size
    workers: Annotated[int, Range(ge=0)] = 2
    # Boundary IoU band width: this times the image diagonal
    boundary_ratio: Annotated[float, Range(gt=0, le=1)] = 0.02

    def check(self) -> None:
        """Types and ranges (from the annotations), window shapes, and stride <= crop.

        Raises:
            ConfigError: naming the key (``eval.stride``, ``eval.scales``, ...) and the fix.
        """
        _check_fields(self, "eval")
        for key in ("crop_size", "stride"):
            value = getattr(self, key)
            if value is not None and len(value) != 2:
                raise ConfigError(f"eval.{key} must be [height, width], got {value}")
        if not self.scales:
            raise ConfigError("eval.scales needs at least one scale, e.g. [1.0]")
        crop, stride = self.crop_size, self.stride
        if crop is not None and stride is not None and any(s > c for s, c in zip(stride, crop)):
            raise ConfigError(
                f"eval.stride {stride} must be <= eval.crop_size {crop} (which defaults to "
                "data.crop_size) in each dimension: windows further apart than their size "
                "leave pixels unpredicted"
            )
        if self.mode == "slide" and crop is None:  # found now, not at the first validation
            raise ConfigError(
                "eval.mode=slide needs a window: set eval.crop_size (or data.crop_size), "
                "e.g. eval.crop_size=[512,512]"
            )


@dataclass
class OutputConfig:
    """Where a run writes: checkpoints, config.yaml, train.log, TensorBoard events."""

    work_dir: str | None = None  # default: work_dirs/<config file name>
    tensorboard: bool = True
    progress: bool = True  # tqdm bar on the main process

    def check(self) -> None:
        """Types (from the annotations).

        Raises:
            ConfigError: naming the key and the type it needs.
        """
        _check_fields(self, "output")


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

    def to_yaml(self) -> str:
        """`to_dict` as YAML text; `load_config` reads it back to an equal config."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def dump(self, path: str | Path) -> None:
        """Write `to_yaml` to ``path``."""
        Path(path).write_text(self.to_yaml())

    @property
    def work_dir(self) -> Path:
        return Path(self.output.work_dir or Path("work_dirs") / self.name)


# ---------------------------------------------------------------- YAML


class ConfigLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that reads every float spelling as a float.

    YAML 1.1 (PyYAML's) wants a dot and a signed exponent, so ``1e-3``, ``5e4``, ``-.5``
    and ``1.e3`` stay strings there; YAML 1.2 and Python read them as floats, and so does
    this loader. ``.inf`` and ``.nan`` are floats as before (the schema rejects them).
    """


_FLOAT_TAG = "tag:yaml.org,2002:float"
_FLOAT = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)
# SafeLoader's resolvers, with its float pattern swapped for _FLOAT in place (the order in
# which patterns are tried stays the same). SafeLoader itself is left as it is.
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, _FLOAT if tag == _FLOAT_TAG else regexp) for tag, regexp in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str) -> Any:
    """Parse YAML as config files and ``--set`` values are read: safely, with `ConfigLoader`.

    Use it for any YAML a user writes by hand (study files too), so ``1e-3`` is a number
    everywhere.
    """
    return yaml.load(text, Loader=ConfigLoader)


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
    from seg.data import check_data_config
    from seg.models import check_model_config

    raw = apply_overrides(dict(raw), overrides)
    check_keys("config", raw, [*SECTIONS, "name"], what="section")
    for section in ("model", "data"):
        if not isinstance(raw.get(section), Mapping):
            raise ConfigError(f"the config needs a '{section}' section (a mapping)")
    model, data = dict(raw["model"]), dict(raw["data"])
    check_model_config(model)
    check_data_config(data)
    sections = {
        # Only an absent or empty (``train:``) section means the defaults: ``train: []`` or
        # ``train: 0`` is a mistake to name, not to ignore.
        name: _build_section(name, schema, {} if raw.get(name) is None else raw[name])
        for name, schema in SCHEMA.items()
    }
    crop = data.get("crop_size")
    if sections["eval"].crop_size is None and crop is not None:
        # Sliding windows default to the training crop: the size the model learned on.
        sections["eval"].crop_size = [crop, crop] if isinstance(crop, int) else list(crop)
    for section in sections.values():
        section.check()
    return Config(model=model, data=data, name=str(raw.get("name", "config")), **sections)


def _read_with_includes(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"config include cycle: {chain}")
    try:
        text = load_yaml(path.read_text()) or {}
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
            value = load_yaml(text) if text.strip() else None
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


def _build_section(name: str, schema: type, values: Any) -> Any:
    """``schema(**values)`` once every key is one of its fields; `check` checks the values."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"'{name}' must be a mapping of keys, got {values!r}")
    check_keys(name, values, [f.name for f in dataclasses.fields(schema)])
    return schema(**values)


def _check_fields(section: Any, name: str) -> None:
    """Check each field of ``section`` against its annotation, in place.

    A value of the annotated type passes, converted where that loses nothing (an int for a
    float); a `Range` in ``Annotated[...]`` bounds its numbers.
    """
    for key, hint in typing.get_type_hints(type(section), include_extras=True).items():
        annotation, bounds = hint, ()
        if typing.get_origin(hint) is Annotated:
            annotation, *bounds = typing.get_args(hint)
        value = _check_type(f"{name}.{key}", getattr(section, key), annotation)
        for bound in bounds:
            _check_range(f"{name}.{key}", value, bound, nullable=_allows_none(annotation))
        setattr(section, key, value)


def _check_range(key: str, value: Any, bound: Range, nullable: bool) -> None:
    many = isinstance(value, list | Mapping)
    numbers = list(value.values()) if isinstance(value, Mapping) else value if many else [value]
    bad = [x for x in numbers if not (x is None or isinstance(x, str) or bound.holds(x))]
    if not bad:
        return
    finite = "finite " if not all(math.isfinite(x) for x in bad) else ""
    if many:
        raise ConfigError(f"{key} must hold {finite}numbers {bound}, got {value!r}")
    what = f"a finite number {bound}" if finite else str(bound)
    raise ConfigError(f"{key} must be {what}{' or null' if nullable else ''}, got {value!r}")


def _allows_none(annotation: Any) -> bool:
    return annotation is type(None) or type(None) in typing.get_args(annotation)


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


__all__ = [
    "Config",
    "ConfigError",
    "ConfigLoader",
    "EvalConfig",
    "OutputConfig",
    "Range",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "load_yaml",
    "merge",
]
