"""Convert the SBD release (benchmark.tgz) into VOC's ``SegmentationClassAug`` + ``trainaug.txt``.

SBD (Hariharan et al., 2011) labels 11,355 VOC 2011 images; its ``dataset/cls/NAME.mat``
hold a struct ``GTcls`` whose field ``Segmentation`` is the ``[H, W]`` uint8 class map
(0..20, no void boundary). The standard "trainaug" set is (SBD train + val + VOC train)
minus VOC val = 10,582 images, with VOC's own masks taking precedence where both exist.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from seg.data.base import missing_path_error, read_index_mask, require_dir, require_file
from seg.data.palettes import voc_palette
from seg.data.voc import find_voc_dir


@dataclass
class SBDConversion:
    """Counts from `convert_sbd`."""

    converted: int
    copied_from_voc: int
    images_copied: int
    trainaug: int
    list_file: Path


def find_sbd_dir(root: str | Path) -> Path:
    """Resolve ``root`` (``benchmark_RELEASE`` or its ``dataset``) to the folder with ``cls/``."""
    root = Path(root).expanduser()
    for candidate in (root, root / "dataset", root / "benchmark_RELEASE" / "dataset"):
        if (candidate / "cls").is_dir():
            return candidate
    raise missing_path_error(
        "SBD folder with cls/*.mat", root / "dataset" / "cls", "Unpack benchmark.tgz first."
    )


def read_sbd_mat(path: Path) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/*.mat`` file as ``[H, W]`` uint8."""
    try:
        content = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
        segmentation = np.asarray(content["GTcls"].Segmentation)
    except (KeyError, AttributeError, ValueError, OSError) as error:
        raise ValueError(
            f"{path}: not an SBD cls file with GTcls.Segmentation ({error})"
        ) from error
    if segmentation.ndim != 2:
        raise ValueError(f"{path}: GTcls.Segmentation has shape {segmentation.shape}, expected HxW")
    if segmentation.min() < 0 or segmentation.max() > 20:
        raise ValueError(f"{path}: labels outside 0..20: {np.unique(segmentation)[:10].tolist()}")
    return segmentation.astype(np.uint8)


def _read_list(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def convert_sbd(
    sbd_root: str | Path,
    voc_root: str | Path,
    log: Callable[[str], None] = print,
    force: bool = False,
) -> SBDConversion:
    """Write ``SegmentationClassAug/*.png`` and ``ImageSets/Segmentation/trainaug.txt``.

    SBD masks become VOC-palette index PNGs; VOC's own train+val masks are copied over
    them. SBD images missing from ``JPEGImages`` are copied there from ``SBD/img``.
    Where masks or the list are there already (a downloaded SegmentationClassAug, an
    earlier conversion), FileExistsError unless ``force``: they would be replaced.
    """
    sbd_dir = find_sbd_dir(sbd_root)
    voc_dir = find_voc_dir(voc_root)
    lists_dir = voc_dir / "ImageSets" / "Segmentation"
    voc_train = _read_list(require_file(lists_dir / "train.txt", "VOC train list"))
    voc_val = _read_list(require_file(lists_dir / "val.txt", "VOC val list"))
    voc_masks = require_dir(voc_dir / "SegmentationClass", "VOC SegmentationClass folder")
    sbd_names: list[str] = []
    for list_name in ("train.txt", "val.txt"):
        sbd_names += _read_list(require_file(sbd_dir / list_name, f"SBD {list_name}"))

    out_dir = voc_dir / "SegmentationClassAug"
    list_file = lists_dir / "trainaug.txt"
    taken = [path for path in (out_dir, list_file) if path.is_file() or any(path.glob("*.png"))]
    if taken and not force:
        raise FileExistsError(
            f"{' and '.join(str(path) for path in taken)} already exist: converting would "
            "replace their masks and names. Keep them (a complete SegmentationClassAug with "
            "its trainaug.txt is what split trainaug reads), move them away, or pass --force "
            "to replace them"
        )
    out_dir.mkdir(exist_ok=True)
    palette = voc_palette(256).reshape(-1).tolist()
    converted = images_copied = 0
    for count, name in enumerate(sbd_names, 1):
        segmentation = read_sbd_mat(require_file(sbd_dir / "cls" / f"{name}.mat", "SBD mask"))
        png = Image.fromarray(segmentation, mode="P")
        png.putpalette(palette)
        png.save(out_dir / f"{name}.png")
        converted += 1
        image_path = voc_dir / "JPEGImages" / f"{name}.jpg"
        if not image_path.is_file():
            shutil.copyfile(require_file(sbd_dir / "img" / f"{name}.jpg", "SBD image"), image_path)
            images_copied += 1
        if count % 1000 == 0:
            log(f"converted {count}/{len(sbd_names)} SBD masks")

    copied = 0
    for name in sorted(set(voc_train) | set(voc_val)):
        source = require_file(voc_masks / f"{name}.png", "VOC mask")
        read_index_mask(source)  # fail here, not at training time, on a colour or broken mask
        shutil.copyfile(source, out_dir / f"{name}.png")
        copied += 1

    trainaug = sorted((set(sbd_names) | set(voc_train)) - set(voc_val))
    list_file.write_text("".join(f"{name}\n" for name in trainaug))
    log(
        f"wrote {converted} SBD masks and {copied} VOC masks to {out_dir}; "
        f"{len(trainaug)} names to {list_file}"
    )
    return SBDConversion(converted, copied, images_copied, len(trainaug), list_file)
