"""Data sets, transforms and palettes; `build_dataset` builds one from a config dict.

Every data set yields ``(image, mask)``: a float32 ``[3, H, W]`` tensor and an int64
``[H, W]`` tensor of class ids (255 = ignore), and exposes ``num_classes``,
``class_names``, ``palette``, ``ignore_index`` and ``load_raw(i)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from seg.data.ade20k import ADE20K
from seg.data.base import IGNORE_INDEX, SegmentationDataset, median_frequency_weights
from seg.data.camvid import CamVid
from seg.data.cityscapes import ID_TO_TRAIN_ID, Cityscapes
from seg.data.folder import FolderDataset
from seg.data.palettes import (
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    CAMVID_CLASSES,
    CAMVID_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    VOC_CLASSES,
    colorize,
    distinct_palette,
    voc_palette,
)
from seg.data.synthetic import SyntheticShapes
from seg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_train_transform,
    build_val_transform,
    check_mean,
    check_scale,
    check_size,
    check_std,
    denormalize,
)
from seg.data.voc import VOCSegmentation
from seg.registry import ConfigError, check_keys, config_error

__all__ = [
    "ADE20K",
    "ADE20K_CLASSES",
    "ADE20K_PALETTE",
    "CAMVID_CLASSES",
    "CAMVID_PALETTE",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "CamVid",
    "DATASETS",
    "ID_TO_TRAIN_ID",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VOC_CLASSES",
    "Cityscapes",
    "FolderDataset",
    "SegmentationDataset",
    "SyntheticShapes",
    "VOCSegmentation",
    "build_dataset",
    "check_data_config",
    "dataset_options",
    "build_train_transform",
    "build_val_transform",
    "colorize",
    "denormalize",
    "distinct_palette",
    "median_frequency_weights",
    "voc_palette",
]

# Keys every data config may carry (transform settings), then each data set's own keys.
_COMMON_KEYS = {"name", "crop_size", "scale", "mean", "std", "resize"}
_DATASET_KEYS = {
    "voc": {"root", "train_split"},
    "cityscapes": {"root"},
    "camvid": {"root"},
    "ade20k": {"root"},
    "folder": {
        "root",
        "images",
        "masks",
        "classes",
        "palette",
        "ignore_color",
        "mask_suffix",
        "ignore_index",
        "reduce_zero_label",
    },
    "synthetic": {"num_samples", "size", "num_classes", "seed"},
}
DATASETS = tuple(_DATASET_KEYS)
# Keys a data set can't do without (a folder's root defaults to the working directory).
_REQUIRED_KEYS = {
    "voc": ("root",),
    "cityscapes": ("root",),
    "camvid": ("root",),
    "ade20k": ("root",),
    "folder": ("images", "masks", "classes"),
}
_TRANSFORM_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "crop_size": check_size,
    "resize": check_size,
    "scale": check_scale,
    "mean": check_mean,
    "std": check_std,
}
_DEFAULT_CROP = {"voc": 512, "cityscapes": (512, 1024), "camvid": (360, 480), "ade20k": 512}
_SYNTHETIC_SAMPLES = {"train": 1000, "val": 200, "test": 200}
# Synthetic splits draw from disjoint seeds so val never repeats a training scene.
_SYNTHETIC_SEED_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def dataset_options(name: str) -> list[str]:
    """The config keys data set ``name`` accepts (``name`` and the transform keys included)."""
    return sorted(_COMMON_KEYS | _DATASET_KEYS[name])


def check_data_config(cfg: Mapping[str, Any]) -> str:
    """Check a data config without reading any file; return its data set name.

    Checks ``name`` against `DATASETS`, every other key against `dataset_options`, that
    the keys the data set can't do without are there, and the transform settings
    (``crop_size``, ``resize``, ``scale``, ``mean``, ``std``; null = the default).

    Raises:
        ConfigError: naming the key (``data.name``, ``data.crop_size``, ...) and the fix.
    """
    name = cfg.get("name")
    check_keys("data.name", [name], DATASETS, what="data set")
    check_keys("data", cfg, dataset_options(name))
    for key in _REQUIRED_KEYS.get(name, ()):
        if key not in cfg:
            raise ConfigError(
                f"data.{key} is missing: the '{name}' data set needs it (data/README.md "
                "says where each data set goes)"
            )
    for key, check in _TRANSFORM_CHECKS.items():
        if cfg.get(key) is not None:
            check(cfg[key], f"data.{key}")
    if not isinstance(cfg.get("reduce_zero_label", False), bool):
        raise ConfigError(
            f"data.reduce_zero_label must be true or false, got {cfg['reduce_zero_label']!r}"
        )
    return name


def build_dataset(
    cfg: Mapping[str, Any], split: str, transform: Callable | None = None
) -> SegmentationDataset:
    """Build the data set that ``cfg`` describes, for ``split`` ("train", "val" or "test").

    ``cfg["name"]`` is one of `DATASETS`. Without ``transform``, the train split gets
    `build_train_transform` (``crop_size``, ``scale``, ``mean``, ``std`` from ``cfg``) and
    other splits `build_val_transform` (``mean``, ``std``, ``resize``). Folder paths
    (``images``, ``masks``) may contain ``{split}`` and are relative to ``root`` if given.
    Example: ``{"name": "voc", "root": "data", "train_split": "trainaug", "crop_size": 512}``.

    Raises:
        ConfigError: (a ValueError) a key or value `check_data_config` rejects, or one
            the data set rejects (its message prefixed with ``data:``).
        FileNotFoundError: the data set's files aren't where ``cfg`` says.
    """
    name = check_data_config(cfg)
    try:
        if transform is None:
            transform = _build_transform(cfg, name, split)
        return _DATASET_BUILDERS[name](cfg, split, transform)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        context = f"data: the '{name}' data set ({split} split) can't be built from this config"
        raise config_error(context, error) from error


def _build_voc(cfg: Mapping[str, Any], split: str, transform: Callable) -> SegmentationDataset:
    voc_split = cfg.get("train_split", "train") if split == "train" else split
    return VOCSegmentation(cfg["root"], voc_split, transform)


def _build_cityscapes(cfg: Mapping[str, Any], split: str, transform: Callable) -> Cityscapes:
    return Cityscapes(cfg["root"], split, transform)


def _build_camvid(cfg: Mapping[str, Any], split: str, transform: Callable) -> CamVid:
    return CamVid(cfg["root"], split, transform)


def _build_ade20k(cfg: Mapping[str, Any], split: str, transform: Callable) -> ADE20K:
    return ADE20K(cfg["root"], split, transform)


def _build_folder(cfg: Mapping[str, Any], split: str, transform: Callable) -> FolderDataset:
    root = Path(cfg.get("root", "."))
    return FolderDataset(
        root / str(cfg["images"]).format(split=split),
        root / str(cfg["masks"]).format(split=split),
        classes=cfg["classes"],
        palette=cfg.get("palette"),
        transform=transform,
        ignore_color=cfg.get("ignore_color"),
        mask_suffix=cfg.get("mask_suffix", ""),
        ignore_index=int(cfg.get("ignore_index", IGNORE_INDEX)),
        # masks store 0 for "no class" (ignored) and class c as c + 1
        reduce_zero_label=bool(cfg.get("reduce_zero_label", False)),
    )


def _build_synthetic(cfg: Mapping[str, Any], split: str, transform: Callable) -> SyntheticShapes:
    # Each split has its own scenes; any other name would silently get the training ones.
    check_keys("split", [split], _SYNTHETIC_SEED_OFFSET, what="synthetic split")
    num_samples = cfg.get("num_samples", _SYNTHETIC_SAMPLES)
    if isinstance(num_samples, Mapping):
        if split not in num_samples:
            raise ConfigError(
                f"data.num_samples has no entry for split '{split}': give one, e.g. "
                f"{{{split}: 100}}, or one number for every split"
            )
        num_samples = num_samples[split]
    return SyntheticShapes(
        _whole("num_samples", num_samples),
        size=_whole("size", cfg.get("size", 128)),
        num_classes=_whole("num_classes", cfg.get("num_classes", 8)),
        seed=_seed(cfg.get("seed", 0)) + _SYNTHETIC_SEED_OFFSET[split],
        transform=transform,
    )


def _whole(key: str, value: Any) -> int:
    """``data.<key>``'s value, a whole number (32.5 is not silently 32); the data set
    checks its range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"data.{key} must be a whole number, got {value!r}")
    return value


def _seed(value: Any) -> int:
    if _whole("seed", value) < 0:
        raise ConfigError(f"data.seed must be >= 0, got {value}")
    return value


_DATASET_BUILDERS: dict[str, Callable[..., SegmentationDataset]] = {
    "voc": _build_voc,
    "cityscapes": _build_cityscapes,
    "camvid": _build_camvid,
    "ade20k": _build_ade20k,
    "folder": _build_folder,
    "synthetic": _build_synthetic,
}


def _build_transform(cfg: Mapping[str, Any], name: str, split: str) -> Callable:
    mean = _get(cfg, "mean", IMAGENET_MEAN)
    std = _get(cfg, "std", IMAGENET_STD)
    if split != "train":
        return build_val_transform(mean, std, resize=cfg.get("resize"))
    crop_size = cfg.get("crop_size")
    if crop_size is None:
        crop_size = int(cfg.get("size", 128)) if name == "synthetic" else _DEFAULT_CROP.get(name)
    if crop_size is None:
        raise ConfigError(
            "data.crop_size is missing: the train split of a 'folder' data set needs it (an "
            "int or [height, width]), so that training crops share one size"
        )
    scale = _get(cfg, "scale", (0.5, 2.0))
    ignore_index = int(cfg.get("ignore_index", IGNORE_INDEX))
    return build_train_transform(crop_size, scale, mean, std, ignore_index=ignore_index)


def _get(cfg: Mapping[str, Any], key: str, default: Any) -> Any:
    """``cfg[key]``, or ``default`` when the key is missing or null."""
    value = cfg.get(key)
    return default if value is None else value
