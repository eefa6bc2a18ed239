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
    missing_masks_error,
    missing_path_error,
    read_label_png,
    require_dir,
)
from seg.data.palettes import distinct_palette


def folder_samples(
    images_dir: str | Path, masks_dir: str | Path, mask_suffix: str = ""
) -> tuple[list[Sample], list[str]]:
    """Images in ``images_dir`` (by extension) paired with ``masks_dir/{stem}{suffix}.png``.

    Returns the pairs found and the stems whose mask is missing.
    """
    images_dir = require_dir(Path(images_dir).expanduser(), "image folder")
    masks_dir = require_dir(Path(masks_dir).expanduser(), "mask folder")
    image_paths = sorted(
        path
        for path in images_dir.iterdir()
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    )
    if not image_paths:
        raise missing_path_error(
            f"images ({', '.join(IMAGE_EXTENSIONS)})", images_dir, "The folder has none."
        )
    stems = [path.stem for path in image_paths]
    duplicates = sorted({stem for stem in stems if stems.count(stem) > 1})
    if duplicates:
        raise ValueError(
            f"{images_dir}: several images share the stem(s) {duplicates[:5]}, so they "
            "would share one mask; rename them"
        )
    samples, missing = [], []
    for path in image_paths:
        mask_path = masks_dir / f"{path.stem}{mask_suffix}.png"
        if mask_path.is_file():
            samples.append(Sample(path.stem, path, mask_path))
        else:
            missing.append(path.stem)
    return samples, missing


def colors_to_labels(
    rgb: np.ndarray,
    palette: np.ndarray,
    ignore_color: Sequence[int] | None = None,
    name: str | Path = "mask",
) -> np.ndarray:
    """Map a ``[H, W, 3]`` colour mask to ``[H, W]`` uint8 class ids via ``palette[id]``.

    ``ignore_color`` maps to 255; any other colour not in the palette raises ValueError.
    """
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    palette_codes = (palette[:, 0].astype(np.int32) << 16) | (palette[:, 1].astype(np.int32) << 8)
    palette_codes |= palette[:, 2]
    lookup = {int(code): index for index, code in reversed(list(enumerate(palette_codes)))}
    if ignore_color is not None:
        ignore_code = (
            (int(ignore_color[0]) << 16) | (int(ignore_color[1]) << 8) | int(ignore_color[2])
        )
        lookup.setdefault(ignore_code, IGNORE_INDEX)
    unique_codes, inverse = np.unique(codes, return_inverse=True)
    unknown = [int(code) for code in unique_codes if int(code) not in lookup]
    if unknown:
        colors = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in unknown[:5]]
        raise ValueError(
            f"{name}: colours {colors}{' ...' if len(unknown) > 5 else ''} are not in the "
            "palette (and not the ignore colour)"
        )
    labels = np.array([lookup[int(code)] for code in unique_codes], dtype=np.uint8)
    return labels[inverse.reshape(codes.shape)]


class FolderDataset(FileDataset):
    """Images and masks from two folders, paired by stem.

    ``classes``: class names, index = class id. ``palette``: ``[N, 3]`` RGB colours, one per
    class, used to read colour masks and to draw predictions (default: a generated one;
    colour masks then raise). ``ignore_color``: an RGB colour in colour masks that means
    "ignore" (255). ``mask_suffix``: text between the stem and ``.png`` in mask names.
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
    ) -> None:
        super().__init__(transform)
        if isinstance(classes, str) or len(classes) < 1:
            raise ValueError(f"classes must be a list of class names, got {classes!r}")
        self.class_names = tuple(str(name) for name in classes)
        self.num_classes = len(self.class_names)
        self.has_palette = palette is not None
        if palette is None:
            self.palette = distinct_palette(self.num_classes)
        else:
            self.palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
            if len(self.palette) != self.num_classes:
                raise ValueError(
                    f"palette has {len(self.palette)} colours for {self.num_classes} classes"
                )
        self.ignore_color = tuple(ignore_color) if ignore_color is not None else None
        self.images_dir = Path(images_dir)
        self.masks_dir = Path(masks_dir)
        self.samples, missing = folder_samples(images_dir, masks_dir, mask_suffix)
        if missing:
            raise missing_masks_error(missing, self.masks_dir)

    def read_mask(self, sample: Sample) -> np.ndarray:
        mask = read_label_png(sample.mask_path)
        if mask.ndim == 2:
            return mask
        if not self.has_palette:
            raise ValueError(
                f"{sample.mask_path} is a colour mask; pass palette=[[r, g, b], ...] (one "
                "colour per class) to map its colours to classes"
            )
        return colors_to_labels(mask, self.palette, self.ignore_color, sample.mask_path)
