"""Paired image/mask transforms built with albumentations 2.x.

All transforms take ``image`` ``[H, W, 3]`` uint8 RGB and ``mask`` ``[H, W]`` uint8 class ids
and return ``image`` as a float32 ``[3, h, w]`` tensor (normalised) and ``mask`` as an int64
``[h, w]`` tensor. Geometric steps move image and mask together; the mask is always
resampled with nearest neighbour and padded with the ignore index (255).

`check_size`, `check_scale`, `check_mean` and `check_std` check the settings, naming the
key in their `ConfigError`: the builders here call them with the argument's name, and
`seg.data.check_data_config` with the config key (``data.crop_size``).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence

# albumentations asks PyPI for a newer version at import time (a 2 s timeout on machines
# without internet, in every spawned worker); data loading should never touch the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

from seg.registry import ConfigError  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_size(size: int | Sequence[int], key: str = "size") -> tuple[int, int]:
    """``512`` or ``[512, 1024]`` -> ``(height, width)``, both ints >= 1.

    Raises:
        ConfigError: (a ValueError) naming ``key``, for anything else.
    """
    pair = (size, size) if _is_int(size) else size
    if not (_is_sequence(pair) and len(pair) == 2 and all(_is_int(v) and v >= 1 for v in pair)):
        raise ConfigError(
            f"{key} must be an int >= 1 or [height, width] of ints >= 1, got {size!r}"
        )
    return int(pair[0]), int(pair[1])


def check_scale(scale: Sequence[float], key: str = "scale") -> tuple[float, float]:
    """``[low, high]``, the range of the random resize factor: finite, ``0 < low <= high``.

    Raises:
        ConfigError: (a ValueError) naming ``key``, for anything else.
    """
    numbers = _finite_numbers(scale, 2)
    if numbers is None or not 0 < numbers[0] <= numbers[1]:
        raise ConfigError(
            f"{key} must be [low, high] with 0 < low <= high (random resize factors, e.g. "
            f"[0.5, 2.0]), got {scale!r}"
        )
    return numbers[0], numbers[1]


def check_mean(mean: Sequence[float], key: str = "mean") -> tuple[float, ...]:
    """Three per-channel (RGB) means of pixel values scaled to [0, 1], each in [0, 1].

    Raises:
        ConfigError: (a ValueError) naming ``key``: also for 0..255 values such as mmseg's
            ``[123.675, 116.28, 103.53]``, which would silently normalise wrongly here.
    """
    return _check_rgb(mean, key, lambda m: 0 <= m <= 1, "in [0, 1]", IMAGENET_MEAN)


def check_std(std: Sequence[float], key: str = "std") -> tuple[float, ...]:
    """Three per-channel (RGB) standard deviations of pixel values scaled to [0, 1], in (0, 1].

    Raises:
        ConfigError: (a ValueError) naming ``key``, for anything else (0 divides by zero).
    """
    return _check_rgb(std, key, lambda s: 0 < s <= 1, "in (0, 1]", IMAGENET_STD)


def _check_rgb(
    values: object, key: str, valid: Callable[[float], bool], bounds: str, example: Sequence
) -> tuple[float, ...]:
    numbers = _finite_numbers(values, 3)
    if numbers is None or not all(valid(v) for v in numbers):
        raise ConfigError(
            f"{key} must be 3 numbers {bounds}, one per RGB channel of pixels scaled to [0, 1] "
            f"(ImageNet's: {list(example)}), got {values!r}"
        )
    return numbers


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _finite_numbers(values: object, length: int) -> tuple[float, ...] | None:
    """``values`` as ``length`` finite floats, or None if it isn't that."""
    if not _is_sequence(values) or len(values) != length:
        return None
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        return None
    floats = tuple(float(v) for v in values)
    return floats if all(math.isfinite(v) for v in floats) else None


def _mask_to_int64(mask: np.ndarray, **params) -> np.ndarray:
    # A named function rather than a lambda so the transform pickles for spawned workers.
    return mask.astype(np.int64)


def _to_tensors(mean: Sequence[float], std: Sequence[float]) -> list:
    return [
        A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
        A.Lambda(name="mask_to_int64", mask=_mask_to_int64),
        ToTensorV2(),
    ]


def build_train_transform(
    crop_size: int | Sequence[int],
    scale: Sequence[float] = (0.5, 2.0),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = 255,
    hflip: float = 0.5,
    photometric: bool = True,
    interpolation: int = cv2.INTER_LINEAR,
    seed: int | None = None,
) -> A.Compose:
    """Random scale -> pad -> random crop -> horizontal flip -> colour jitter -> tensors.

    ``crop_size`` is an int or ``(height, width)``; ``scale`` the range of the random resize
    factor. Images smaller than the crop after scaling are padded at the bottom/right with
    the mean colour (0 after normalisation) and their masks with ``ignore_index``.
    ``interpolation`` applies to the image only (masks always use nearest).
    """
    crop_height, crop_width = check_size(crop_size, "crop_size")
    low, high = check_scale(scale, "scale")
    mean, std = check_mean(mean), check_std(std)
    pad_color = tuple(255.0 * m for m in mean)
    steps: list = [
        # RandomScale's limits are offsets from 1: factor = 1 + uniform(low - 1, high - 1).
        A.RandomScale(
            scale_limit=(low - 1.0, high - 1.0),
            interpolation=interpolation,
            mask_interpolation=cv2.INTER_NEAREST,
            p=1.0,
        ),
        A.PadIfNeeded(
            min_height=crop_height,
            min_width=crop_width,
            position="top_left",
            border_mode=cv2.BORDER_CONSTANT,
            fill=pad_color,
            fill_mask=ignore_index,
        ),
        A.RandomCrop(height=crop_height, width=crop_width),
        A.HorizontalFlip(p=hflip),
    ]
    if photometric:
        steps.append(
            A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.03, p=0.8)
        )
    return A.Compose(steps + _to_tensors(mean, std), seed=seed)


def build_val_transform(
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    resize: int | Sequence[int] | None = None,
) -> A.Compose:
    """Normalise and convert to tensors; with ``resize`` (int or ``(h, w)``) resize first.

    The resize is bilinear for the image and nearest for the mask. For scoring against the
    original labels, leave ``resize`` unset and resize the predictions instead.
    """
    mean, std = check_mean(mean), check_std(std)
    steps: list = []
    if resize is not None:
        height, width = check_size(resize, "resize")
        steps.append(
            A.Resize(
                height,
                width,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
            )
        )
    return A.Compose(steps + _to_tensors(mean, std))


def denormalize(
    image, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """Undo normalisation: float ``[3, H, W]`` tensor/array -> ``[H, W, 3]`` uint8 RGB."""
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    array = array.transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean)
    return np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)
