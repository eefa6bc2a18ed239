"""Pictures of predictions: palette PNGs, colour overlays and input/truth/prediction panels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from seg.data import colorize, denormalize


def save_label_png(path: str | Path, labels: np.ndarray, palette: np.ndarray) -> None:
    """Write ``[H, W]`` class ids as a palette PNG: pixel values are the ids, colours the palette.

    Ids above 255 don't fit a palette PNG: those are written as a 16-bit greyscale PNG.
    """
    labels = np.asarray(labels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if labels.max(initial=0) > 255:
        Image.fromarray(labels.astype(np.uint16)).save(path)
        return
    png = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = np.zeros((256, 3), dtype=np.uint8)
    palette = np.asarray(palette, dtype=np.uint8)[:256]
    flat[: len(palette)] = palette
    png.putpalette(flat.reshape(-1).tolist())
    png.save(path)


def overlay(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5):
    """Blend ``[H, W, 3]`` uint8 RGB with the colourised ``[H, W]`` labels."""
    colours = colorize(labels, palette).astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def panel(
    image,
    truth,
    prediction,
    palette: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    ignore_index: int = 255,
) -> np.ndarray:
    """Input | ground truth | prediction side by side, ``[H, 3W + 8, 3]`` uint8 RGB.

    ``image`` is a normalised ``[3, H, W]`` tensor, ``truth``/``prediction`` ``[H, W]`` ids.
    """
    rgb = denormalize(image, mean, std)
    truth = np.asarray(truth.cpu() if hasattr(truth, "cpu") else truth)
    prediction = np.asarray(prediction.cpu() if hasattr(prediction, "cpu") else prediction)
    gap = np.full((rgb.shape[0], 4, 3), 255, dtype=np.uint8)
    return np.concatenate(
        [
            rgb,
            gap,
            colorize(truth, palette, ignore_index=ignore_index),
            gap,
            colorize(prediction, palette, ignore_index=ignore_index),
        ],
        axis=1,
    )
