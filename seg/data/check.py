"""Check a data set on disk before training: counts, missing files, sizes, label values.

`check_dataset` walks every split, reads every image and mask, and returns a `CheckReport`
listing each problem with its file name; ``tools/check_data.py`` is its command line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seg.data.ade20k import (
    ADE20K_CLASSES,
    ADE20K_MASK_HINT,
    ADE20K_SPLITS,
    ade20k_samples,
    find_ade20k_dir,
)
from seg.data.base import (
    IGNORE_INDEX,
    Sample,
    jpeg_decoder_warnings,
    read_image,
    read_index_mask,
    read_label_png,
    require_dir,
)
from seg.data.camvid import CAMVID_SPLITS, CAMVID_VOID, camvid_samples, find_camvid_dir
from seg.data.cityscapes import (
    _KNOWN_IDS,
    CITYSCAPES_MASK_HINT,
    CITYSCAPES_SPLITS,
    cityscapes_samples,
)
from seg.data.folder import (
    check_palette,
    colored_reduce_zero_label_error,
    colors_to_labels,
    duplicate_stems,
    list_images,
    pair_with_masks,
)
from seg.data.voc import VOC_MASK_HINT, find_voc_dir, voc_samples

CHECKABLE = ("voc", "cityscapes", "camvid", "folder", "ade20k")


@dataclass
class CheckReport:
    """What `check_dataset` found: images per split, problems, label values seen."""

    dataset: str
    root: str
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    labels_seen: set[int] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self, max_problems: int = 50) -> str:
        lines = [f"{self.dataset} data set at {self.root}"]
        lines += [f"  {split}: {count} image/mask pairs" for split, count in self.counts.items()]
        lines += [f"  note: {note}" for note in self.notes]
        if self.labels_seen:
            lines.append(f"  label values seen: {sorted(self.labels_seen)}")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  {problem}" for problem in self.problems[:max_problems]]
            if len(self.problems) > max_problems:
                lines.append(f"  ... and {len(self.problems) - max_problems} more")
            lines.append("FAILED")
        else:
            lines.append("OK")
        return "\n".join(lines)


def check_dataset(
    dataset: str,
    root: str | Path,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    num_classes: int | None = None,
    jobs: int = 4,
    palette: Sequence[Sequence[int]] | None = None,
    ignore_color: Sequence[int] | None = None,
    mask_suffix: str = "",
    ignore_index: int = IGNORE_INDEX,
    reduce_zero_label: bool = False,
) -> CheckReport:
    """Check the ``dataset`` (one of `CHECKABLE`) stored under ``root``.

    For "folder", ``images`` and ``masks`` are folders (relative to ``root`` unless
    absolute) and ``num_classes``, when given, bounds the labels (255 always allowed).
    With ``palette`` (one RGB colour per class) colour masks are mapped through it,
    as ``FolderDataset`` does, and colours outside it (but ``ignore_color``) are problems.
    ``mask_suffix``, ``ignore_index`` (the label value that means void) and
    ``reduce_zero_label`` (masks store class c as c + 1, 0 = ignored: labels up to
    ``num_classes`` are valid) are the folder data set's keys.
    """
    if dataset not in CHECKABLE:
        raise ValueError(f"unknown data set {dataset!r}; valid: {', '.join(CHECKABLE)}")
    report = CheckReport(dataset, str(root))
    try:
        if dataset == "voc":
            _check_voc(report, Path(root), jobs)
        elif dataset == "cityscapes":
            _check_cityscapes(report, Path(root), jobs)
        elif dataset == "camvid":
            _check_camvid(report, Path(root), jobs)
        elif dataset == "ade20k":
            _check_ade20k(report, Path(root), jobs)
        else:
            if images is None or masks is None:
                raise ValueError("checking a folder data set needs both images and masks folders")
            _check_folder(
                report,
                Path(root) / images,
                Path(root) / masks,
                num_classes,
                jobs,
                None if palette is None else check_palette(palette),
                ignore_color,
                mask_suffix,
                ignore_index,
                reduce_zero_label,
            )
    except (FileNotFoundError, ValueError) as error:  # ValueError: what was given (a palette)
        report.problems.append(" ".join(str(error).splitlines()))
    return report


def _check_voc(report: CheckReport, root: Path, jobs: int) -> None:
    voc_dir = find_voc_dir(root)
    report.root = str(voc_dir)
    splits = ["train", "val"]
    if (voc_dir / "SegmentationClassAug").is_dir() or (
        voc_dir / "ImageSets" / "Segmentation" / "trainaug.txt"
    ).is_file():
        splits.append("trainaug")
    else:
        report.notes.append(
            "no SegmentationClassAug (trainaug split); tools/convert_sbd.py makes it"
        )
    _check_splits(
        report, splits, lambda split: voc_samples(voc_dir, split), lambda p: _voc_mask(p, 21), jobs
    )


def _voc_mask(path: Path, num_classes: int) -> tuple[np.ndarray, list[int]]:
    mask = read_index_mask(path, VOC_MASK_HINT)
    values = np.unique(mask)
    bad = [int(v) for v in values if v >= num_classes and v != IGNORE_INDEX]
    return mask, bad


def _check_cityscapes(report: CheckReport, root: Path, jobs: int) -> None:
    require_dir(root, "Cityscapes root folder")
    samples_of = functools.partial(cityscapes_samples, root)
    _check_splits(report, CITYSCAPES_SPLITS, samples_of, _cityscapes_mask, jobs)


def _cityscapes_mask(path: Path) -> tuple[np.ndarray, list[int]]:
    mask = read_index_mask(path, CITYSCAPES_MASK_HINT)
    values = np.unique(mask)
    bad = [int(v) for v in values if not (0 <= v <= 255 and _KNOWN_IDS[int(v)])]
    return mask, bad


def _check_camvid(report: CheckReport, root: Path, jobs: int) -> None:
    camvid = find_camvid_dir(root)
    report.root = str(camvid)
    _check_splits(
        report, CAMVID_SPLITS, functools.partial(camvid_samples, camvid), _camvid_mask, jobs
    )


def _camvid_mask(path: Path) -> tuple[np.ndarray, list[int]]:
    mask = read_index_mask(path)
    values = np.unique(mask)
    return mask, [int(v) for v in values if v > CAMVID_VOID and v != IGNORE_INDEX]


def _check_ade20k(report: CheckReport, root: Path, jobs: int) -> None:
    ade = find_ade20k_dir(root)
    report.root = str(ade)
    _check_splits(report, ADE20K_SPLITS, functools.partial(ade20k_samples, ade), _ade20k_mask, jobs)


def _ade20k_mask(path: Path) -> tuple[np.ndarray, list[int]]:
    """Stored values 0..150 (before reduce_zero_label); 255 is ignored as it stands."""
    mask = read_index_mask(path, ADE20K_MASK_HINT)
    values = np.unique(mask)
    limit = len(ADE20K_CLASSES)
    return mask, [int(v) for v in values if v > limit and v != IGNORE_INDEX]


def _check_folder(
    report: CheckReport,
    images: Path,
    masks: Path,
    num_classes: int | None,
    jobs: int,
    palette: np.ndarray | None = None,
    ignore_color: Sequence[int] | None = None,
    mask_suffix: str = "",
    ignore_index: int = IGNORE_INDEX,
    reduce_zero_label: bool = False,
) -> None:
    if palette is not None and num_classes is None:
        num_classes = len(palette)
    if num_classes is not None and 0 <= ignore_index < num_classes:
        report.problems.append(
            f"ignore index {ignore_index} is also a class id of the {num_classes} classes"
        )
    image_paths = list_images(images)
    for group in duplicate_stems(image_paths):  # listed here; the first of each group is checked
        names = ", ".join(p.name for p in group)
        report.problems.append(f"images share the stem '{group[0].stem}' (one mask): {names}")
    first_of_stem = {}
    for path in image_paths:
        first_of_stem.setdefault(path.stem, path)
    samples, missing = pair_with_masks(list(first_of_stem.values()), masks, mask_suffix)
    report.counts["all"] = len(samples)
    for absent in missing:
        report.problems.append(f"{absent} does not exist (the mask of an image)")
    image_stems = {sample.name for sample in samples} | {
        absent.name[: -len(f"{mask_suffix}.png")] for absent in missing
    }
    orphans = sorted(
        path.name
        for path in masks.glob(f"*{mask_suffix}.png")
        if path.name[: -len(f"{mask_suffix}.png")] not in image_stems
    )
    if orphans:
        report.notes.append(f"{len(orphans)} mask(s) without an image, e.g. {orphans[:3]}")

    def read(path: Path) -> tuple[np.ndarray, list[int]]:
        mask = read_label_png(path, keep_rgb=palette is not None)
        if mask.ndim == 3:
            if palette is None:
                raise ValueError(
                    f"{path} is a colour mask; pass --palette (one r,g,b per class) to map its "
                    "colours, or use index masks (a palette PNG or single-channel PNG of class ids)"
                )
            if reduce_zero_label:
                raise colored_reduce_zero_label_error(path)
            mask = colors_to_labels(mask, palette, ignore_color, path, ignore_index)
        values = np.unique(mask)
        report.labels_seen.update(int(v) for v in values)
        if num_classes is None:
            return mask, []
        limit = num_classes + 1 if reduce_zero_label else num_classes  # stored c + 1
        return mask, [int(v) for v in values if (v >= limit or v < 0) and v != ignore_index]

    _check_samples(report, "all", samples, read, jobs)


def _check_splits(
    report: CheckReport,
    splits: Iterable[str],
    samples_of: Callable[[str], tuple[list[Sample], list[Path]]],
    read_mask: Callable[[Path], tuple[np.ndarray, list[int]]],
    jobs: int,
) -> None:
    """Each split that exists: its count, every file looked for but absent, every sample.
    A missing split is a problem in the report, not the end of the check."""
    for split in splits:
        try:
            samples, missing = samples_of(split)
        except FileNotFoundError as error:
            report.problems.append(f"{split}: " + " ".join(str(error).splitlines()))
            continue
        report.counts[split] = len(samples)
        for absent in missing:
            report.problems.append(f"{split}: {absent} does not exist")
        _check_samples(report, split, samples, read_mask, jobs)


def _check_samples(
    report: CheckReport,
    split: str,
    samples: Iterable[Sample],
    read_mask: Callable[[Path], tuple[np.ndarray, list[int]]],
    jobs: int,
) -> None:
    def check_one(sample: Sample) -> list[str]:
        problems = []
        image = mask = None
        try:
            image = read_image(sample.image_path)
        except ValueError as error:
            problems.append(f"{split}: {error}")
        if image is not None and sample.image_path.suffix.lower() in (".jpg", ".jpeg"):
            warnings = jpeg_decoder_warnings(sample.image_path)
            if warnings:
                problems.append(
                    f"{split}: {sample.image_path}: damaged JPEG ({'; '.join(warnings)})"
                )
        try:
            mask, bad_labels = read_mask(sample.mask_path)
            if bad_labels:
                problems.append(
                    f"{split}: {sample.mask_path}: unexpected label values {bad_labels[:10]}"
                )
        except ValueError as error:
            problems.append(f"{split}: {error}")
        if image is not None and mask is not None and image.shape[:2] != mask.shape[:2]:
            problems.append(
                f"{split}: {sample.mask_path}: mask size {mask.shape[1]}x{mask.shape[0]} "
                f"differs from image {sample.image_path.name} size "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        return problems

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for problems in pool.map(check_one, samples):
            report.problems.extend(problems)
