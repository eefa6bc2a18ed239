"""PASCAL VOC 2012 segmentation, with the SBD-augmented training set ("trainaug").

Layout (``root`` may be the folder holding ``VOCdevkit``, ``VOCdevkit`` itself, or
``VOCdevkit/VOC2012``)::

    VOCdevkit/VOC2012/
      JPEGImages/*.jpg
      SegmentationClass/*.png          palette PNGs: pixel value = class index, 255 = void
      SegmentationClassAug/*.png       optional, made by tools/convert_sbd.py
      ImageSets/Segmentation/{train,val,trainaug}.txt
"""

from __future__ import annotations

from pathlib import Path

from seg.data.base import (
    LayoutDataset,
    Sample,
    missing_path_error,
    read_index_mask,
    require_dir,
    require_file,
)
from seg.data.palettes import VOC_CLASSES, voc_palette

VOC_SPLITS = ("train", "val", "trainaug")
VOC_MASK_HINT = (
    "VOC masks are the palette PNGs of SegmentationClass/ (or SegmentationClassAug/ from "
    "tools/convert_sbd.py); a copy saved as RGB has lost the class indices."
)
TRAINAUG_HINT = (
    "The 'trainaug' split (10,582 images) needs the SBD masks converted into "
    "SegmentationClassAug: run `python tools/convert_sbd.py SBD_ROOT VOC_ROOT`."
)


def find_voc_dir(root: str | Path) -> Path:
    """Resolve ``root`` to the ``VOC2012`` folder (accepts its parent or grandparent)."""
    root = Path(root).expanduser()
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    if not root.is_dir():
        raise missing_path_error("VOC root folder", root)
    raise missing_path_error(
        "VOC 2012 folder (with JPEGImages/)",
        root / "VOCdevkit" / "VOC2012",
        f"Looked in {root}, {root / 'VOC2012'} and {root / 'VOCdevkit' / 'VOC2012'}.",
    )


def voc_samples(root: str | Path, split: str) -> tuple[list[Sample], list[str]]:
    """The samples of ``split`` and, for listed names, the image or mask paths that are absent."""
    if split not in VOC_SPLITS:
        raise ValueError(f"unknown VOC split {split!r}; valid: {', '.join(VOC_SPLITS)}")
    voc_dir = find_voc_dir(root)
    hint = TRAINAUG_HINT if split == "trainaug" else ""
    mask_dir = voc_dir / ("SegmentationClassAug" if split == "trainaug" else "SegmentationClass")
    require_dir(mask_dir, "VOC mask folder", hint)
    list_file = voc_dir / "ImageSets" / "Segmentation" / f"{split}.txt"
    require_file(list_file, f"VOC '{split}' list file", hint)
    names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    samples, missing = [], []
    for name in names:
        sample = Sample(name, voc_dir / "JPEGImages" / f"{name}.jpg", mask_dir / f"{name}.png")
        if not sample.image_path.is_file():
            missing.append(sample.image_path)
        elif not sample.mask_path.is_file():
            missing.append(sample.mask_path)
        else:
            samples.append(sample)
    return samples, missing


class VOCSegmentation(LayoutDataset):
    """PASCAL VOC 2012: 21 classes (background + 20), 255 = void boundary (ignored).

    ``split``: "train" (1,464), "val" (1,449) or "trainaug" (10,582, needs
    SegmentationClassAug from tools/convert_sbd.py).
    """

    num_classes = 21
    class_names = VOC_CLASSES
    palette = voc_palette(21)

    missing_kind = "image or mask"
    locate = staticmethod(find_voc_dir)
    list_samples = staticmethod(voc_samples)

    def read_mask(self, sample: Sample):
        return read_index_mask(sample.mask_path, VOC_MASK_HINT)
