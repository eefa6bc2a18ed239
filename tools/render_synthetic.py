"""Render a grid of SyntheticShapes samples next to their colourised masks.

    python tools/render_synthetic.py [--out docs/synthetic_samples.png] [--count 6]

Each row shows image | mask for two samples, plus a legend strip of class colours.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from seg.data import SyntheticShapes, colorize


def render_grid(
    dataset: SyntheticShapes, count: int, per_row: int = 2, scale: int = 2, gap: int = 6
) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB: ``count`` samples as (image, mask) pairs, ``per_row`` a row."""
    tiles = []
    for index in range(count):
        image, mask, _ = dataset.load_raw(index)
        colored = colorize(mask, dataset.palette)
        pair = [image, np.full((image.shape[0], gap // 2, 3), 255, np.uint8), colored]
        tiles.append(np.concatenate(pair, axis=1))
    blank = np.full_like(tiles[0], 255)
    rows = []
    for start in range(0, count, per_row):
        row = tiles[start : start + per_row]
        row += [blank] * (per_row - len(row))
        spaced = []
        for tile in row:
            spaced += [tile, np.full((tile.shape[0], gap * 2, 3), 255, np.uint8)]
        rows.append(np.concatenate(spaced[:-1], axis=1))
        rows.append(np.full((gap, rows[-1].shape[1], 3), 255, np.uint8))
    grid = np.concatenate(rows[:-1], axis=0)
    grid = cv2.resize(
        grid, (grid.shape[1] * scale, grid.shape[0] * scale), interpolation=cv2.INTER_NEAREST
    )
    return np.concatenate([grid, _legend(dataset, grid.shape[1])], axis=0)


def _legend(dataset: SyntheticShapes, width: int) -> np.ndarray:
    row_height = 28
    per_row = 4
    rows = (dataset.num_classes + per_row - 1) // per_row
    legend = np.full((rows * row_height + 8, width, 3), 255, np.uint8)
    cell = width // per_row
    for label, name in enumerate(dataset.class_names):
        x = (label % per_row) * cell + 8
        y = (label // per_row) * row_height + 8
        color = tuple(int(c) for c in dataset.palette[label])
        cv2.rectangle(legend, (x, y), (x + 18, y + 18), color, thickness=-1)
        cv2.rectangle(legend, (x, y), (x + 18, y + 18), (0, 0, 0), thickness=1)
        cv2.putText(
            legend,
            f"{label} {name}",
            (x + 24, y + 14),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    return legend


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/synthetic_samples.png"))
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--num-classes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dataset = SyntheticShapes(
        args.count, size=args.size, num_classes=args.num_classes, seed=args.seed
    )
    picture = render_grid(dataset, args.count)
    # Dropping the two lowest bits is invisible but keeps the noisy PNG small for the docs.
    picture = picture & np.uint8(0xFC)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(
        str(args.out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]
    )
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
