"""SyntheticShapes: procedurally drawn scenes for training without downloading anything.

Each sample is drawn on the fly from ``numpy.random.default_rng((seed, index))``, so a
(seed, index) pair always gives the same picture. Classes differ by shape, texture and
colour, and several share a colour range so colour alone cannot separate them:

=====  ==================  ==========================  ============
id     class               look                        colour group
=====  ==================  ==========================  ============
0      background          low-frequency noise + grain  varied
1      disc                flat filled circle           warm
2      ring                1-3 px circle outline        warm
3      line                1-3 px straight segments     blue
4      striped box         rotated rectangle, stripes   blue
5      checker triangle    triangle, checkerboard       green
6      dots                clusters of 1-3 px dots      green
7      speckled ellipse    ellipse, salt-and-pepper     warm
8      mesh                1 px grid in a square        violet
9      star                five-pointed star            violet
=====  ==================  ==========================  ============

Rings, lines, dots and meshes are 1-3 px wide, so a network that blurs when it upsamples
loses them, and the mIoU shows it. Edges are hard (no anti-aliasing): every pixel's label
is exact.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import cv2
import numpy as np

from seg.data.base import SegmentationDataset
from seg.data.palettes import distinct_palette

SYNTHETIC_CLASSES = (
    "background",
    "disc",
    "ring",
    "line",
    "striped box",
    "checker triangle",
    "dots",
    "speckled ellipse",
    "mesh",
    "star",
)
# Base RGB colour per colour group; each object jitters around its group's colour.
_GROUP_COLORS = {
    "warm": (215, 95, 45),
    "blue": (60, 110, 215),
    "green": (70, 180, 80),
    "violet": (165, 80, 200),
}
_CLASS_GROUP = (None, "warm", "warm", "blue", "blue", "green", "green", "warm", "violet", "violet")
# Thin classes are drawn after the large ones so they are not all buried.
_THIN_CLASSES = frozenset({2, 3, 6, 8})


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return xs, ys


@functools.lru_cache(maxsize=8)
def _int_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.int32)
    return xs, ys


class SyntheticShapes(SegmentationDataset):
    """``num_samples`` generated ``size`` x ``size`` scenes with ``num_classes`` (2..10) classes.

    Returns the same ``(image, mask)`` format as the file-backed data sets.
    """

    def __init__(
        self,
        num_samples: int,
        size: int = 128,
        num_classes: int = 8,
        seed: int = 0,
        transform: Callable | None = None,
    ) -> None:
        super().__init__(transform)
        if not 2 <= num_classes <= len(SYNTHETIC_CLASSES):
            raise ValueError(
                f"SyntheticShapes supports 2..{len(SYNTHETIC_CLASSES)} classes, got {num_classes}"
            )
        if size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {size}")
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self.num_samples = int(num_samples)
        self.size = int(size)
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        self.class_names = SYNTHETIC_CLASSES[:num_classes]
        self.palette = distinct_palette(num_classes)

    def __len__(self) -> int:
        return self.num_samples

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        rng = np.random.default_rng((self.seed, index))
        image, mask = render_scene(rng, self.size, self.num_classes)
        return image, mask, f"synthetic_{self.seed}_{index:06d}"


def render_scene(
    rng: np.random.Generator, size: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene: ``([size, size, 3] uint8 RGB, [size, size] uint8 labels)``."""
    image = _background(rng, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    num_objects = int(rng.integers(4, 10))
    classes = rng.integers(1, num_classes, size=num_objects).tolist()
    classes.sort(key=lambda label: label in _THIN_CLASSES)  # stable: large shapes first
    canvas = np.empty((size, size), dtype=np.uint8)
    for label in classes:
        canvas.fill(0)
        modulation = _DRAW[label](rng, canvas, size)
        region = canvas.view(bool)
        if not region.any():
            continue
        color = np.array(_GROUP_COLORS[_CLASS_GROUP[label]], dtype=np.float32)
        color = color + rng.uniform(-35, 35, size=3).astype(np.float32)
        if modulation is None:
            image[region] = color
        else:
            image[region] = modulation[region][:, None] * color
        mask[region] = label
    # Sensor noise over everything, so flat regions are not perfectly flat.
    image += rng.normal(0.0, 6.0, size=(size, size, 1)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    # Blotchy low-frequency texture, mostly in brightness with a little colour, plus grain.
    cells = max(size // 16, 2)
    coarse = rng.uniform(-0.5, 0.5, size=(cells, cells, 4)).astype(np.float32)
    coarse = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    base = rng.uniform(70, 170, size=3).astype(np.float32)
    blotches = 80.0 * coarse[..., :1] + 35.0 * coarse[..., 1:]
    grain = rng.uniform(-20, 20, size=(size, size, 1)).astype(np.float32)
    return base + blotches + grain


def _center(rng: np.random.Generator, size: int) -> tuple[int, int]:
    return int(rng.integers(0, size)), int(rng.integers(0, size))


def _disc(rng, canvas, size):
    radius = int(rng.uniform(0.05, 0.15) * size) + 2
    cv2.circle(canvas, _center(rng, size), radius, 1, thickness=-1)
    return None


def _ring(rng, canvas, size):
    radius = int(rng.uniform(0.06, 0.22) * size) + 3
    cv2.circle(canvas, _center(rng, size), radius, 1, thickness=int(rng.integers(1, 4)))
    return None


def _lines(rng, canvas, size):
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = _center(rng, size)
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.3, 0.9) * size
        x1 = int(x0 + length * np.cos(angle))
        y1 = int(y0 + length * np.sin(angle))
        cv2.line(canvas, (x0, y0), (x1, y1), 1, thickness=int(rng.integers(1, 4)))
    return None


def _rotated_box(rng, size, low, high):
    width, height = (rng.uniform(low, high, size=2) * size).tolist()
    corners = cv2.boxPoints((_center(rng, size), (width, height), float(rng.uniform(0, 180))))
    return np.round(corners).astype(np.int32)


def _striped_box(rng, canvas, size):
    cv2.fillPoly(canvas, [_rotated_box(rng, size, 0.15, 0.4)], 1)
    xs, ys = _grid(size)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(4, 9)
    phase = (xs * np.cos(angle) + ys * np.sin(angle)) / period
    return np.where((phase % 1.0) < 0.5, 1.0, 0.5).astype(np.float32)


def _checker_triangle(rng, canvas, size):
    cx, cy = _center(rng, size)
    radius = rng.uniform(0.1, 0.25) * size
    angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2]) + rng.uniform(-0.4, 0.4, 3)
    points = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)
    cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    xs, ys = _int_grid(size)
    cell = int(rng.integers(3, 6))
    checker = (xs // cell + ys // cell) & 1
    return np.where(checker == 1, 0.5, 1.0).astype(np.float32)


def _dots(rng, canvas, size):
    cx, cy = _center(rng, size)
    spread = 0.12 * size
    for _ in range(int(rng.integers(4, 13))):
        x = int(cx + rng.uniform(-spread, spread))
        y = int(cy + rng.uniform(-spread, spread))
        cv2.circle(canvas, (x, y), int(rng.integers(1, 4)), 1, thickness=-1)
    return None


def _speckled_ellipse(rng, canvas, size):
    axes = (int(rng.uniform(0.08, 0.25) * size) + 2, int(rng.uniform(0.04, 0.12) * size) + 2)
    cv2.ellipse(canvas, _center(rng, size), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return np.where(rng.random((size, size)) < 0.3, 0.45, 1.0).astype(np.float32)


def _mesh(rng, canvas, size):
    cv2.fillPoly(canvas, [_rotated_box(rng, size, 0.15, 0.35)], 1)
    xs, ys = _grid(size)
    angle = rng.uniform(0, np.pi / 2)
    spacing = float(rng.integers(4, 7))
    u = (xs * np.cos(angle) + ys * np.sin(angle)) % spacing
    v = (-xs * np.sin(angle) + ys * np.cos(angle)) % spacing
    canvas &= ((u < 1.0) | (v < 1.0)).view(np.uint8)
    return None


def _star(rng, canvas, size):
    cx, cy = _center(rng, size)
    outer = rng.uniform(0.08, 0.2) * size
    angles = rng.uniform(0, 2 * np.pi) + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, outer, 0.42 * outer)
    points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    return None


_DRAW = (
    None,
    _disc,
    _ring,
    _lines,
    _striped_box,
    _checker_triangle,
    _dots,
    _speckled_ellipse,
    _mesh,
    _star,
)
