"""Cityscapes fine annotations, mapped from label ids to the 19 train ids (255 = ignore).

Layout::

    ROOT/leftImg8bit/{train,val,test}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png
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
    require_dir,
)
from seg.data.palettes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

CITYSCAPES_SPLITS = ("train", "val", "test")

# (name, id, trainId) from cityscapesscripts/helpers/labels.py; 255 = not trained on.
# ("license plate", id -1) cannot occur in a uint8 labelIds PNG and is left out.
CITYSCAPES_LABELS = (
    ("unlabeled", 0, 255),
    ("ego vehicle", 1, 255),
    ("rectification border", 2, 255),
    ("out of roi", 3, 255),
    ("static", 4, 255),
    ("dynamic", 5, 255),
    ("ground", 6, 255),
    ("road", 7, 0),
    ("sidewalk", 8, 1),
    ("parking", 9, 255),
    ("rail track", 10, 255),
    ("building", 11, 2),
    ("wall", 12, 3),
    ("fence", 13, 4),
    ("guard rail", 14, 255),
    ("bridge", 15, 255),
    ("tunnel", 16, 255),
    ("pole", 17, 5),
    ("polegroup", 18, 255),
    ("traffic light", 19, 6),
    ("traffic sign", 20, 7),
    ("vegetation", 21, 8),
    ("terrain", 22, 9),
    ("sky", 23, 10),
    ("person", 24, 11),
    ("rider", 25, 12),
    ("car", 26, 13),
    ("truck", 27, 14),
    ("bus", 28, 15),
    ("caravan", 29, 255),
    ("trailer", 30, 255),
    ("train", 31, 16),
    ("motorcycle", 32, 17),
    ("bicycle", 33, 18),
)


def _id_to_train_id() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for _, label_id, train_id in CITYSCAPES_LABELS:
        lut[label_id] = train_id
    return lut


ID_TO_TRAIN_ID = _id_to_train_id()
"""256-entry uint8 lookup: ``ID_TO_TRAIN_ID[label_id] -> train id`` (255 = ignore)."""

_KNOWN_IDS = np.zeros(256, dtype=bool)
_KNOWN_IDS[[label_id for _, label_id, _ in CITYSCAPES_LABELS]] = True
_KNOWN_IDS[IGNORE_INDEX] = True


def cityscapes_samples(root: str | Path, split: str) -> tuple[list[Sample], list[str]]:
    """The samples of ``split`` and the ``_gtFine_labelIds.png`` paths looked for but absent."""
    if split not in CITYSCAPES_SPLITS:
        raise ValueError(
            f"unknown Cityscapes split {split!r}; valid: {', '.join(CITYSCAPES_SPLITS)}"
        )
    root = require_dir(Path(root).expanduser(), "Cityscapes root folder")
    image_dir = require_dir(
        root / "leftImg8bit" / split,
        f"Cityscapes images for '{split}'",
        "Unpack leftImg8bit_trainvaltest.zip into the root folder.",
    )
    mask_dir = require_dir(
        root / "gtFine" / split,
        f"Cityscapes fine labels for '{split}'",
        "Unpack gtFine_trainvaltest.zip into the root folder.",
    )
    samples, missing = [], []
    for image_path in sorted(image_dir.glob("*/*_leftImg8bit.png")):
        name = image_path.name[: -len("_leftImg8bit.png")]
        mask_path = mask_dir / image_path.parent.name / f"{name}_gtFine_labelIds.png"
        if mask_path.is_file():
            samples.append(Sample(name, image_path, mask_path))
        else:
            missing.append(mask_path)
    if not samples and not missing:
        raise missing_path_error(
            f"Cityscapes images (*/*_leftImg8bit.png) for '{split}'", image_dir
        )
    return samples, missing


def label_ids_to_train_ids(label_ids: np.ndarray, name: str | Path = "mask") -> np.ndarray:
    """Map a ``[H, W]`` labelIds array to train ids; ids outside the official table raise."""
    if label_ids.ndim != 2:
        raise ValueError(f"{name}: expected a single-channel labelIds PNG, got a colour image")
    if label_ids.dtype != np.uint8:
        if label_ids.min() < 0 or label_ids.max() > 255:
            raise ValueError(f"{name}: label ids outside 0..255; is this a labelIds PNG?")
        label_ids = label_ids.astype(np.uint8)
    unknown = ~_KNOWN_IDS[label_ids]
    if unknown.any():
        values = np.unique(label_ids[unknown])[:10].tolist()
        raise ValueError(
            f"{name}: label ids {values} are not in the Cityscapes label table (0..33); "
            "is this a *_gtFine_labelIds.png file?"
        )
    return ID_TO_TRAIN_ID[label_ids]


CITYSCAPES_MASK_HINT = "Use the *_gtFine_labelIds.png files, not *_gtFine_color.png."


class Cityscapes(LayoutDataset):
    """Cityscapes (fine): 19 classes, 2,975 train / 500 val / 1,525 test images.

    The public test labels are all "unlabeled", so the test split scores nothing; it is
    there for inference.
    """

    num_classes = 19
    class_names = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE

    missing_kind = "mask"
    list_samples = staticmethod(cityscapes_samples)

    def read_mask(self, sample: Sample) -> np.ndarray:
        return label_ids_to_train_ids(
            read_index_mask(sample.mask_path, CITYSCAPES_MASK_HINT), sample.mask_path
        )
