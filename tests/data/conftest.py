"""Builders for tiny data-set trees in the real on-disk formats, written with PIL.

Each builder returns the label arrays it wrote, so tests compare what the data sets load
against pixel values the test itself chose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# The VOC palette written from its definition (index i: bits of i spread over R, G, B),
# independently of seg.data.palettes.
_VOC_PALETTE = []
for _index in range(256):
    _r = _g = _b = 0
    _c = _index
    for _j in range(8):
        _r |= ((_c >> 0) & 1) << (7 - _j)
        _g |= ((_c >> 1) & 1) << (7 - _j)
        _b |= ((_c >> 2) & 1) << (7 - _j)
        _c >>= 3
    _VOC_PALETTE += [_r, _g, _b]


def write_palette_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    png = Image.fromarray(labels.astype(np.uint8), mode="P")
    png.putpalette(_VOC_PALETTE)
    png.save(path)


def write_gray_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(path)


def write_image(path: Path, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A blocky RGB picture (left half red, right half blue) plus noise; returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (220, 30, 30)
    image[:, width // 2 :] = (30, 30, 220)
    image = np.clip(image + rng.integers(-10, 10, image.shape), 0, 255).astype(np.uint8)
    options = {"quality": 95} if path.suffix in (".jpg", ".jpeg") else {}
    Image.fromarray(image).save(path, **options)
    return image


def random_labels(
    rng: np.random.Generator, height: int, width: int, values: list[int]
) -> np.ndarray:
    return rng.choice(np.array(values, dtype=np.uint8), size=(height, width))


@pytest.fixture
def make_voc(tmp_path):
    """``make_voc(train=[...], val=[...])`` -> (root holding VOCdevkit, {name: labels})."""

    def build(train=("2007_000001", "2007_000002"), val=("2007_000003",), sizes=None):
        rng = np.random.default_rng(1)
        voc = tmp_path / "VOCdevkit" / "VOC2012"
        lists = voc / "ImageSets" / "Segmentation"
        lists.mkdir(parents=True)
        (voc / "SegmentationClass").mkdir()
        truth = {}
        for index, name in enumerate(list(train) + list(val)):
            height, width = (sizes or {}).get(name, (24 + index, 32 + 2 * index))
            write_image(voc / "JPEGImages" / f"{name}.jpg", height, width, rng)
            labels = random_labels(rng, height, width, [0, 1, 5, 15, 20, 255])
            write_palette_png(voc / "SegmentationClass" / f"{name}.png", labels)
            truth[name] = labels
        (lists / "train.txt").write_text("".join(f"{n}\n" for n in train))
        (lists / "val.txt").write_text("".join(f"{n}\n" for n in val))
        return tmp_path, truth

    return build


# A few label ids and their train ids, copied by hand from the Cityscapes label table.
CITYSCAPES_SOME_IDS = {0: 255, 1: 255, 4: 255, 7: 0, 8: 1, 11: 2, 17: 5, 23: 10, 24: 11,
                       26: 13, 29: 255, 33: 18}  # fmt: skip


@pytest.fixture
def make_cityscapes(tmp_path):
    """``make_cityscapes()`` -> (root, {(split, name): train-id labels expected})."""

    def build(splits=("train", "val", "test"), per_city=2, cities=("aachen", "bonn")):
        rng = np.random.default_rng(2)
        root = tmp_path / "cityscapes"
        expected = {}
        for split in splits:
            for city in cities:
                for frame in range(per_city):
                    name = f"{city}_{frame:06d}_{19 + frame:06d}"
                    write_image(
                        root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", 16, 32, rng
                    )
                    ids = random_labels(rng, 16, 32, list(CITYSCAPES_SOME_IDS))
                    write_gray_png(
                        root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png", ids
                    )
                    expected[(split, name)] = np.vectorize(CITYSCAPES_SOME_IDS.get)(ids)
        return root, expected

    return build


@pytest.fixture(name="write_palette_png")
def _write_palette_png_fixture():
    """`write_palette_png(path, labels)`: a VOC-palette PNG (a P image without a palette
    would let PIL renumber its indices on save)."""
    return write_palette_png
