"""Pictures of predictions: palette PNGs, colour overlays, and the one "image | truth |
prediction" drawing that TensorBoard (`panel`), the study's prediction grid and the demo share
(`comparison_row`, laid out with `side_by_side` and `one_above_another`)."""

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


GAP = 4  # white pixels between the pictures of a row, and between rows


def side_by_side(pictures: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    """``[H, W_i, 3]`` uint8 RGB pictures in a row, ``gap`` white columns between them."""
    height = pictures[0].shape[0]
    white = np.full((height, gap, 3), 255, dtype=np.uint8)
    row = [pictures[0]]
    for picture in pictures[1:]:
        row += [white, picture]
    return np.concatenate(row, axis=1)


def one_above_another(rows: Sequence[np.ndarray], gap: int = GAP) -> np.ndarray:
    """``[H_i, W, 3]`` uint8 RGB rows of one width stacked, ``gap`` white lines between them."""
    white = np.full((gap, rows[0].shape[1], 3), 255, dtype=np.uint8)
    stack = [rows[0]]
    for row in rows[1:]:
        stack += [white, row]
    return np.concatenate(stack, axis=0)


def comparison_row(
    image: np.ndarray,
    truth,
    predictions: Sequence,
    palette: np.ndarray,
    ignore_index: int = 255,
) -> np.ndarray:
    """Image | truth | each prediction, ``[H, k W + gaps, 3]`` uint8 RGB: the one drawing
    TensorBoard, the study's prediction grid and the demo picture share.

    ``image`` is ``[H, W, 3]`` uint8 RGB; ``truth`` and each prediction ``[H, W]`` class ids
    (arrays or tensors), painted with ``palette`` (``ignore_index`` pixels white).
    """
    labels = [truth, *predictions]
    painted = [
        colorize(np.asarray(ids.cpu() if hasattr(ids, "cpu") else ids), palette, ignore_index)
        for ids in labels
    ]
    return side_by_side([image, *painted])


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
    return comparison_row(rgb, truth, [prediction], palette, ignore_index)


def save_titled(
    path: str | Path, grid: np.ndarray, titles: Sequence[str], column_inches: float = 2.86
) -> None:
    """Write a grid of equal-width columns (``GAP`` apart) as a PNG, a title over each column.

    ``grid`` is ``[H, W, 3]`` uint8 RGB. A column is drawn ``column_inches`` wide at 100 dpi
    whatever its width in pixels, so that small scenes are enlarged (without smoothing).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height, width = grid.shape[:2]
    column = (width - GAP * (len(titles) - 1)) / len(titles)
    inches_per_pixel = column_inches / column
    title_band = 0.4
    image_size = (width * inches_per_pixel, height * inches_per_pixel)
    fig = plt.figure(figsize=(image_size[0], image_size[1] + title_band))
    ax = fig.add_axes((0, 0, 1, image_size[1] / (image_size[1] + title_band)))
    ax.imshow(grid, interpolation="nearest")
    ax.xaxis.tick_top()
    ax.set_xticks([i * (column + GAP) + column / 2 for i in range(len(titles))], titles)
    ax.tick_params(length=0, labelsize=9)
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.savefig(path, dpi=100)
    plt.close(fig)
