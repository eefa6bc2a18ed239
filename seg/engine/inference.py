"""Prediction at the input's size: whole image or sliding window, with flip / multi-scale TTA.

`predict` returns class probabilities (softmax) ``[N, K, H, W]`` for images ``[N, 3, H, W]``.
Test-time augmentations average probabilities, not logits, so a confident view does not
drown the others by its scale alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of windows of size ``crop`` every ``stride`` covering ``length``.

    The last window is clamped to end at ``length`` (it may overlap its neighbour more);
    a ``length`` no larger than ``crop`` gives one window at 0.
    """
    if length <= crop:
        return [0]
    count = -(-(length - crop) // stride) + 1
    return [min(i * stride, length - crop) for i in range(count)]


def slide_logits(
    model: nn.Module,
    images: Tensor,
    crop_size: int | Sequence[int],
    stride: int | Sequence[int],
) -> Tensor:
    """Average the logits of overlapping ``crop_size`` windows every ``stride`` pixels.

    Images smaller than a window are predicted whole (the models pad to their stride).
    Returns ``[N, K, H, W]`` float32 logits.
    """
    crop_h, crop_w = _pair(crop_size)
    stride_h, stride_w = _pair(stride)
    if stride_h < 1 or stride_w < 1:
        raise ValueError(f"slide stride must be positive, got {(stride_h, stride_w)}")
    if stride_h > crop_h or stride_w > crop_w:
        raise ValueError(
            f"slide stride {(stride_h, stride_w)} is larger than the window "
            f"{(crop_h, crop_w)}: pixels between windows would get no prediction; use "
            "eval.stride <= eval.crop_size"
        )
    height, width = images.shape[-2:]
    total = None
    count = images.new_zeros(1, 1, height, width)
    for top in window_starts(height, crop_h, stride_h):
        for left in window_starts(width, crop_w, stride_w):
            bottom, right = min(top + crop_h, height), min(left + crop_w, width)
            logits = model(images[..., top:bottom, left:right]).float()
            if total is None:
                total = logits.new_zeros(images.shape[0], logits.shape[1], height, width)
            total[..., top:bottom, left:right] += logits
            count[..., top:bottom, left:right] += 1
    if not bool((count > 0).all()):  # never score a pixel no window predicted
        raise RuntimeError("slide inference left pixels without a prediction")
    return total / count


@torch.no_grad()
def predict(
    model: nn.Module,
    images: Tensor,
    mode: str = "whole",
    crop_size: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    tta: str = "none",
    scales: Sequence[float] = (1.0,),
    resize: int | Sequence[int] | None = None,
) -> Tensor:
    """Class probabilities ``[N, K, H, W]`` (float32) for normalised images ``[N, 3, H, W]``.

    Args:
        mode: ``"whole"`` (one forward per view) or ``"slide"`` (`slide_logits` with
            ``crop_size`` / ``stride``; stride defaults to two thirds of the crop).
        tta: ``"none"``, ``"flip"`` (average with the horizontally flipped view) or
            ``"ms"`` (every scale in ``scales``, each with its flip).
        resize: predict on the image resized to this (h, w), then resize back.
    """
    if mode not in ("whole", "slide"):
        raise ValueError(f"inference mode must be 'whole' or 'slide', got {mode!r}")
    if tta not in ("none", "flip", "ms"):
        raise ValueError(f"tta must be 'none', 'flip' or 'ms', got {tta!r}")
    if mode == "slide" and crop_size is None:
        raise ValueError("slide inference needs crop_size (eval.crop_size in the config)")
    if mode == "slide" and stride is None:
        stride = tuple(max(1, (2 * c) // 3) for c in _pair(crop_size))
    height, width = images.shape[-2:]
    view_scales = list(scales) if tta == "ms" else [1.0]
    flips = [False, True] if tta in ("flip", "ms") else [False]
    probs = None
    for scale in view_scales:
        size = _pair(resize) if resize is not None else (height, width)
        size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        scaled = images
        if size != (height, width):
            scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        for flip in flips:
            view = scaled.flip(-1) if flip else scaled
            if mode == "slide":
                logits = slide_logits(model, view, crop_size, stride)
            else:
                logits = model(view).float()
            if flip:
                logits = logits.flip(-1)
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(
                    logits, size=(height, width), mode="bilinear", align_corners=False
                )
            view_probs = logits.softmax(dim=1)
            probs = view_probs if probs is None else probs + view_probs
    return probs / (len(view_scales) * len(flips))
