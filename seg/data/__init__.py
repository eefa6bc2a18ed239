"""Data sets, transforms and palettes; `build_dataset` builds one from a config dict.

Every data set yields ``(image, mask)``: a float32 ``[3, H, W]`` tensor and an int64
``[H, W]`` tensor of class ids (255 = ignore), and exposes ``num_classes``,
``class_names``, ``palette``, ``ignore_index`` and ``load_raw(i)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from seg.data.base import IGNORE_INDEX, SegmentationDataset, median_frequency_weights
from seg.data.camvid import CamVid
from seg.data.cityscapes import ID_TO_TRAIN_ID, Cityscapes
from seg.data.folder import FolderDataset
from seg.data.palettes import (
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
    denormalize,
)
from seg.data.voc import VOCSegmentation

__all__ = [
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
    "folder": {
        "root",
        "images",
        "masks",
        "classes",
        "palette",
        "ignore_color",
        "mask_suffix",
        "ignore_index",
    },
    "synthetic": {"num_samples", "size", "num_classes", "seed"},
}
DATASETS = tuple(_DATASET_KEYS)
_DEFAULT_CROP = {"voc": 512, "cityscapes": (512, 1024), "camvid": (360, 480)}
_SYNTHETIC_SAMPLES = {"train": 1000, "val": 200, "test": 200}
# Synthetic splits draw from disjoint seeds so val never repeats a training scene.
_SYNTHETIC_SEED_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def dataset_options(name: str) -> list[str]:
    """The config keys data set ``name`` accepts (``name`` and the transform keys included)."""
    return sorted(_COMMON_KEYS | _DATASET_KEYS[name])


def build_dataset(
    cfg: Mapping[str, Any], split: str, transform: Callable | None = None
) -> SegmentationDataset:
    """Build the data set that ``cfg`` describes, for ``split`` ("train", "val" or "test").

    ``cfg["name"]`` is one of `DATASETS`. Without ``transform``, the train split gets
    `build_train_transform` (``crop_size``, ``scale``, ``mean``, ``std`` from ``cfg``) and
    other splits `build_val_transform` (``mean``, ``std``, ``resize``). Folder paths
    (``images``, ``masks``) may contain ``{split}`` and are relative to ``root`` if given.
    Example: ``{"name": "voc", "root": "data", "train_split": "trainaug", "crop_size": 512}``.
    """
    cfg = dict(cfg)
    name = cfg.get("name")
    if name not in _DATASET_KEYS:
        raise ValueError(f"unknown data set name {name!r}; valid names: {', '.join(DATASETS)}")
    allowed = dataset_options(name)
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in the '{name}' data config; valid keys: "
            f"{', '.join(allowed)}"
        )
    if transform is None:
        transform = _build_transform(cfg, name, split)
    if name == "voc":
        voc_split = cfg.get("train_split", "train") if split == "train" else split
        return VOCSegmentation(_required(cfg, "root", name), voc_split, transform)
    if name == "cityscapes":
        return Cityscapes(_required(cfg, "root", name), split, transform)
    if name == "camvid":
        return CamVid(_required(cfg, "root", name), split, transform)
    if name == "folder":
        root = Path(cfg.get("root", "."))
        images = root / str(_required(cfg, "images", name)).format(split=split)
        masks = root / str(_required(cfg, "masks", name)).format(split=split)
        return FolderDataset(
            images,
            masks,
            classes=_required(cfg, "classes", name),
            palette=cfg.get("palette"),
            transform=transform,
            ignore_color=cfg.get("ignore_color"),
            mask_suffix=cfg.get("mask_suffix", ""),
            ignore_index=int(cfg.get("ignore_index", IGNORE_INDEX)),
        )
    num_samples = cfg.get("num_samples", _SYNTHETIC_SAMPLES)
    if isinstance(num_samples, Mapping):
        if split not in num_samples:
            raise ValueError(f"synthetic num_samples has no entry for split '{split}'")
        num_samples = num_samples[split]
    return SyntheticShapes(
        int(num_samples),
        size=int(cfg.get("size", 128)),
        num_classes=int(cfg.get("num_classes", 8)),
        seed=int(cfg.get("seed", 0)) + _SYNTHETIC_SEED_OFFSET.get(split, 0),
        transform=transform,
    )


def _required(cfg: Mapping[str, Any], key: str, name: str) -> Any:
    if key not in cfg:
        raise ValueError(f"the '{name}' data config needs the key '{key}'")
    return cfg[key]


def _build_transform(cfg: Mapping[str, Any], name: str, split: str) -> Callable:
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    if split != "train":
        return build_val_transform(mean, std, resize=cfg.get("resize"))
    crop_size = cfg.get("crop_size")
    if crop_size is None:
        crop_size = int(cfg.get("size", 128)) if name == "synthetic" else _DEFAULT_CROP.get(name)
    if crop_size is None:
        raise ValueError(
            "the train split of a 'folder' data set needs 'crop_size' (int or [height, width]) "
            "in its data config, so that training crops share one size"
        )
    scale = tuple(cfg.get("scale", (0.5, 2.0)))
    ignore_index = int(cfg.get("ignore_index", IGNORE_INDEX))
    return build_train_transform(crop_size, scale, mean, std, ignore_index=ignore_index)
