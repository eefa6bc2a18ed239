"""Pictures of predictions: palette PNGs, colour overlays, and the one "image | truth |
prediction" drawing that TensorBoard (`panel`), the study's prediction grid and the demo share
(`comparison_row`, laid out with `side_by_side` and `one_above_another`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

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
    path: str | Path | BinaryIO,
    grid: np.ndarray,
    titles: Sequence[str],
    column_inches: float = 2.86,
) -> None:
    """Write a grid of equal-width columns (``GAP`` apart) as a PNG (to a path or a binary
    file), a title over each column.

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
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


# ---------------------------------------------------------------- evaluation charts


def _pyplot():
    """matplotlib's pyplot on the Agg backend: files only, no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def row_normalised(matrix) -> np.ndarray:
    """Each row of a ``[C, C]`` confusion matrix (rows truth, columns prediction) divided by
    its sum: the fraction of a class's pixels predicted as each class. A class with no
    pixels in the truth has a row of NaN (excluded, as in the metrics)."""
    counts = np.asarray(matrix, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / totals, np.nan)


def _chart_size(num_classes: int) -> float:
    """Inches along a class axis: ~0.22 per class, never too small to read."""
    return max(4.0, 0.22 * num_classes + 2.0)


def draw_confusion_matrix(
    path: str | Path, matrix, class_names: Sequence[str], title: str = "confusion matrix"
) -> np.ndarray:
    """Write the row-normalised confusion matrix as a PNG and return what it shows.

    ``matrix`` is ``[C, C]`` pixel counts (rows truth, columns prediction, as in
    ``metrics.json``); each cell is drawn as a fraction of its row (`row_normalised`), with
    the class names on both axes and the percentages written in where they fit (up to 25
    classes). Rows of classes absent from the truth are grey.
    """
    plt = _pyplot()
    shown = row_normalised(matrix)
    count = len(class_names)
    if shown.shape != (count, count):
        raise ValueError(f"a {shown.shape} confusion matrix for {count} class names")
    side = _chart_size(count)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    colours = plt.get_cmap("Blues").with_extremes(bad="lightgrey")  # absent: grey rows
    image = ax.imshow(np.ma.masked_invalid(shown), cmap=colours, vmin=0.0, vmax=1.0)
    ticks = np.arange(count)
    font = 9 if count <= 25 else 6
    ax.set_xticks(ticks, class_names, rotation=90, fontsize=font)
    ax.set_yticks(ticks, class_names, fontsize=font)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    ax.set_title(f"{title}\neach row sums to 100 %; grey: a class not in the truth", fontsize=10)
    if count <= 25:
        for (row, column), value in np.ndenumerate(shown):
            if not np.isnan(value) and value >= 0.005:
                colour = "white" if value > 0.5 else "black"
                ax.text(
                    column,
                    row,
                    f"{100 * value:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color=colour,
                )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return shown


def draw_per_class(
    path: str | Path,
    class_names: Sequence[str],
    iou: Sequence[float | None],
    boundary_iou: Sequence[float | None],
    title: str = "per-class IoU and Boundary IoU",
) -> None:
    """Write per-class IoU and Boundary-IoU bars (in %) as a PNG, one row per class.

    A value that is None or NaN (a class absent from truth and prediction) is drawn as no
    bar and marked "n/a".
    """
    plt = _pyplot()
    count = len(class_names)
    if not len(iou) == len(boundary_iou) == count:
        raise ValueError(f"{len(iou)} IoU and {len(boundary_iou)} BIoU values for {count} classes")
    values = [
        np.array([np.nan if v is None else 100.0 * v for v in series], dtype=np.float64)
        for series in (iou, boundary_iou)
    ]
    rows = np.arange(count)
    fig, ax = plt.subplots(figsize=(7.5, max(3.0, 0.3 * count + 1.2)))
    for offset, series, label in ((-0.2, values[0], "IoU"), (0.2, values[1], "Boundary IoU")):
        ax.barh(rows + offset, np.nan_to_num(series), height=0.4, label=label)
    for row in rows[np.isnan(values[0])]:
        ax.text(1, row, "n/a", va="center", fontsize=7)
    ax.set_yticks(rows, class_names, fontsize=9 if count <= 25 else 6)
    ax.invert_yaxis()  # class 0 at the top, as in the tables
    ax.set_xlim(0, 100)
    ax.set_xlabel("%")
    ax.set_title(title, pad=24)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
