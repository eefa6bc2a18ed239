"""ADE20K (MIT Scene Parsing, 150 classes) in its official ``ADEChallengeData2016`` layout.

Layout (``root`` is the ``ADEChallengeData2016`` folder, or the folder holding it)::

    ADEChallengeData2016/
      images/training/ADE_train_00000001.jpg ...        20,210 images
      images/validation/ADE_val_00000001.jpg ...         2,000 images
      annotations/training/ADE_train_00000001.png ...   8-bit PNGs: 0 = other, 1..150
      annotations/validation/ADE_val_00000001.png ...

Splits: ``train`` reads ``training``, ``val`` reads ``validation`` (the test images come
without annotations). Labels follow the standard protocol, mmsegmentation's
``reduce_zero_label``: 0 ("other", none of the 150 classes) becomes the ignore label 255
and 1..150 become class ids 0..149 (`reduce_zero_label`, which a ``folder`` data set can
use too: ``data.reduce_zero_label: true``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seg.data.base import (
    LayoutDataset,
    Sample,
    missing_path_error,
    read_index_mask,
    reduce_zero_label,
)
from seg.data.folder import list_images, pair_with_masks
from seg.data.palettes import ADE20K_CLASSES, ADE20K_PALETTE

ADE20K_SPLITS = {"train": "training", "val": "validation"}
ADE20K_DIR = "ADEChallengeData2016"
ADE20K_HINT = (
    "Download ADEChallengeData2016.zip (the Scene Parsing benchmark, "
    "http://sceneparsing.csail.mit.edu), unzip it and point root at ADEChallengeData2016/ "
    "or the folder holding it."
)
ADE20K_MASK_HINT = (
    "ADE20K annotations are 8-bit PNGs of label values 0..150 (annotations/*/*.png); a "
    "colour rendering has lost them."
)


def find_ade20k_dir(root: str | Path) -> Path:
    """``root`` itself or ``root/ADEChallengeData2016``: the folder holding images/ and
    annotations/."""
    root = Path(root).expanduser()
    for candidate in (root, root / ADE20K_DIR):
        if (candidate / "images").is_dir() and (candidate / "annotations").is_dir():
            return candidate
    if not root.is_dir():
        raise missing_path_error("ADE20K root folder", root, ADE20K_HINT)
    raise missing_path_error(
        f"{ADE20K_DIR} folder (with images/ and annotations/)",
        root / ADE20K_DIR,
        f"Looked in {root} and {root / ADE20K_DIR}. {ADE20K_HINT}",
    )


def ade20k_samples(root: str | Path, split: str) -> tuple[list[Sample], list[Path]]:
    """The samples of ``split`` (train or val) and the annotation paths looked for but absent."""
    if split not in ADE20K_SPLITS:
        test = " (its test images have no annotations: score on val)" if split == "test" else ""
        raise ValueError(f"unknown ADE20K split {split!r}{test}; valid: {', '.join(ADE20K_SPLITS)}")
    ade = find_ade20k_dir(root)
    folder = ADE20K_SPLITS[split]
    return pair_with_masks(list_images(ade / "images" / folder), ade / "annotations" / folder)


class ADE20K(LayoutDataset):
    """ADE20K / SceneParsing: 150 classes, label 0 ignored; ``split`` train or val."""

    num_classes = len(ADE20K_CLASSES)
    class_names = ADE20K_CLASSES
    palette = ADE20K_PALETTE

    locate = staticmethod(find_ade20k_dir)
    list_samples = staticmethod(ade20k_samples)

    def read_mask(self, sample: Sample) -> np.ndarray:
        mask = read_index_mask(sample.mask_path, ADE20K_MASK_HINT)
        return reduce_zero_label(mask, sample.mask_path)
