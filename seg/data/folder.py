"""A custom data set from two folders: images and masks paired by file stem.

``images/cat_01.jpg`` pairs with ``masks/cat_01.png`` (or ``cat_01{mask_suffix}.png``).
Masks are index PNGs (palette or single-channel, pixel value = class index, 255 = ignore)
or colour PNGs whose colours are mapped to classes through ``palette``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from seg.data.base import (
    IGNORE_INDEX,
    IMAGE_EXTENSIONS,
    FileDataset,
    Sample,
    check_ignore_index,
    missing_files_error,
    missing_path_error,
    read_label_png,
    reduce_zero_label,
    require_dir,
)
from seg.data.palettes import distinct_palette


def folder_samples(
    images_dir: str | Path, masks_dir: str | Path, mask_suffix: str = ""
) -> tuple[list[Sample], list[Path]]:
    """Images in ``images_dir`` (by extension) paired with ``masks_dir/{stem}{suffix}.png``.

    Returns the pairs found and the mask paths looked for but absent. Images sharing a
    stem (``a.jpg`` and ``a.png``) would share one mask: a ValueError listing them.
    """
    require_dir(Path(images_dir).expanduser(), "image folder")
    require_dir(Path(masks_dir).expanduser(), "mask folder")
    image_paths = list_images(images_dir)
    duplicates = duplicate_stems(image_paths)
    if duplicates:
        shown = "; ".join(", ".join(p.name for p in group) for group in duplicates[:5])
        raise ValueError(
            f"{images_dir}: images share a file stem, so they would share one mask: {shown}. "
            "Rename them so each stem is unique."
        )
    return pair_with_masks(image_paths, masks_dir, mask_suffix)


def list_images(images_dir: str | Path) -> list[Path]:
    """The image files of ``images_dir`` (by extension), sorted; an error if there are none."""
    images_dir = require_dir(Path(images_dir).expanduser(), "image folder")
    image_paths = sorted(
        path
        for path in images_dir.iterdir()
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    )
    if not image_paths:
        raise missing_path_error(
            f"images ({', '.join(IMAGE_EXTENSIONS)})", images_dir, "The folder has none."
        )
    return image_paths


def pair_with_masks(
    image_paths: Sequence[Path], masks_dir: str | Path, mask_suffix: str = ""
) -> tuple[list[Sample], list[Path]]:
    """``(samples, absent mask paths)``: each image with ``masks_dir/{stem}{suffix}.png``."""
    masks_dir = require_dir(Path(masks_dir).expanduser(), "mask folder")
    samples, missing = [], []
    for path in image_paths:
        mask_path = masks_dir / f"{path.stem}{mask_suffix}.png"
        if mask_path.is_file():
            samples.append(Sample(path.stem, path, mask_path))
        else:
            missing.append(mask_path)
    return samples, missing


def duplicate_stems(paths: Sequence[Path]) -> list[list[Path]]:
    """Groups of paths that share a stem (``a.jpg``, ``a.png``), in name order."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        groups.setdefault(path.stem, []).append(path)
    return [group for _, group in sorted(groups.items()) if len(group) > 1]


def check_palette(palette, num_classes: int | None = None) -> np.ndarray:
    """``palette`` as ``[N, 3]`` uint8, or a ValueError saying what is wrong with it."""
    array = np.asarray(palette)
    if array.ndim != 2 or array.shape[1] != 3 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"palette must be a list of [r, g, b] integer triples, got {palette!r}")
    if array.min(initial=0) < 0 or array.max(initial=0) > 255:
        bad = [list(map(int, row)) for row in array if row.min() < 0 or row.max() > 255]
        raise ValueError(f"palette colours must be 0..255 per channel; got {bad[:3]}")
    if num_classes is not None and len(array) != num_classes:
        raise ValueError(f"palette has {len(array)} colours for {num_classes} classes")
    return array.astype(np.uint8)


def check_class_colors(
    palette: np.ndarray, ignore_color: Sequence[int] | None, name: str | Path
) -> None:
    """Each class its own colour and the ignore colour none of theirs, or a ValueError:
    the colour mask ``name``'s pixels of a shared colour would silently go to one of them
    (index masks don't care: there the palette only draws)."""
    owner: dict[tuple[int, ...], int] = {}
    for index, color in enumerate(tuple(row) for row in np.asarray(palette).tolist()):
        if color in owner:
            raise ValueError(
                f"{name} is a colour mask, but palette colour {list(color)} is given to class "
                f"{owner[color]} and class {index}: its pixels could only be one of them; "
                "give each class its own colour"
            )
        owner[color] = index
    ignore = None if ignore_color is None else tuple(int(c) for c in ignore_color)
    if ignore in owner:
        raise ValueError(
            f"{name} is a colour mask, but ignore_color {list(ignore)} is also the palette "
            f"colour of class {owner[ignore]}: its pixels could not be both; choose an "
            "ignore colour that no class has"
        )


def colored_reduce_zero_label_error(path: str | Path) -> ValueError:
    return ValueError(
        f"{path} is a colour mask: the palette maps its colours straight to class ids, so "
        "reduce_zero_label (for index masks that store class c as c + 1 and 0 for void) "
        "does not apply to it; drop reduce_zero_label and mark void pixels with ignore_color"
    )


def colors_to_labels(
    rgb: np.ndarray,
    palette: np.ndarray,
    ignore_color: Sequence[int] | None = None,
    name: str | Path = "mask",
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Map a ``[H, W, 3]`` colour mask to ``[H, W]`` class ids via ``palette[id]``.

    ``ignore_color`` maps to ``ignore_index``; any other colour not in the palette raises
    ValueError. The ids are uint8 when every id and the ignore value fit, else int64.
    """
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    palette_codes = (palette[:, 0].astype(np.int32) << 16) | (palette[:, 1].astype(np.int32) << 8)
    palette_codes |= palette[:, 2]
    lookup = {int(code): index for index, code in reversed(list(enumerate(palette_codes)))}
    if ignore_color is not None:
        ignore_code = (
            (int(ignore_color[0]) << 16) | (int(ignore_color[1]) << 8) | int(ignore_color[2])
        )
    else:
        ignore_code = None
    if len(lookup) < len(palette) or ignore_code in lookup:  # a colour given twice
        check_class_colors(palette, ignore_color, name)  # names them
    if ignore_code is not None:
        lookup[ignore_code] = ignore_index
    unique_codes, inverse = np.unique(codes, return_inverse=True)
    unknown = [int(code) for code in unique_codes if int(code) not in lookup]
    if unknown:
        colors = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in unknown[:5]]
        raise ValueError(
            f"{name}: colours {colors}{' ...' if len(unknown) > 5 else ''} are not in the "
            "palette (and not the ignore colour)"
        )
    narrow = len(palette) <= 256 and 0 <= ignore_index <= 255
    labels = np.array(
        [lookup[int(code)] for code in unique_codes], dtype=np.uint8 if narrow else np.int64
    )
    return labels[inverse.reshape(codes.shape)]


class FolderDataset(FileDataset):
    """Images and masks from two folders, paired by stem.

    ``classes``: class names, index = class id. ``palette``: ``[N, 3]`` RGB colours, one per
    class, used to read colour masks and to draw predictions (default: a generated one;
    colour masks then raise). ``ignore_color``: an RGB colour in colour masks that means
    "ignore" (255). ``mask_suffix``: text between the stem and ``.png`` in mask names.
    ``reduce_zero_label``: masks store 0 for "no class" (ignored) and class c as c + 1, as
    ADE20K's do (see `reduce_zero_label`).
    """

    def __init__(
        self,
        images_dir: str | Path,
        masks_dir: str | Path,
        classes: Sequence[str],
        palette: Sequence[Sequence[int]] | np.ndarray | None = None,
        transform: Callable | None = None,
        ignore_color: Sequence[int] | None = None,
        mask_suffix: str = "",
        ignore_index: int = IGNORE_INDEX,
        reduce_zero_label: bool = False,
    ) -> None:
        super().__init__(transform)
        self.reduce_zero_label = reduce_zero_label
        if isinstance(classes, str | bytes) or not isinstance(classes, Sequence) or not classes:
            raise ValueError(
                f"classes must be a list of class names (index = class id), got {classes!r}; "
                "e.g. classes=['background', 'road', 'car']"
            )
        self.class_names = tuple(str(name) for name in classes)
        self.num_classes = len(self.class_names)
        self.ignore_index = int(ignore_index)
        check_ignore_index(self.num_classes, self.ignore_index)
        self.has_palette = palette is not None
        if palette is None:
            self.palette = distinct_palette(self.num_classes)
        else:
            self.palette = check_palette(palette, self.num_classes)
        if ignore_color is not None:
            check_palette([ignore_color])
        self.ignore_color = tuple(ignore_color) if ignore_color is not None else None
        self.images_dir = Path(images_dir)
        self.masks_dir = Path(masks_dir)
        self.samples, missing = folder_samples(images_dir, masks_dir, mask_suffix)
        if missing:
            raise missing_files_error(missing)

    def read_mask(self, sample: Sample) -> np.ndarray:
        mask = read_label_png(sample.mask_path, keep_rgb=self.has_palette)
        if mask.ndim == 2:
            if self.reduce_zero_label:
                return reduce_zero_label(
                    mask, sample.mask_path, self.num_classes, self.ignore_index
                )
            return mask
        if self.reduce_zero_label:
            raise colored_reduce_zero_label_error(sample.mask_path)
        if not self.has_palette:
            raise ValueError(
                f"{sample.mask_path} is a colour mask; pass palette=[[r, g, b], ...] (one "
                "colour per class) to map its colours to classes"
            )
        return colors_to_labels(
            mask, self.palette, self.ignore_color, sample.mask_path, self.ignore_index
        )
