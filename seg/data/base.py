"""What every data set shares: reading files, validating masks, and the (image, mask) contract.

A data set yields ``(image, mask)``. `load_raw` gives the numpy pair as stored on disk
(``[H, W, 3]`` uint8 RGB and ``[H, W]`` uint8 class ids, 255 = ignore) plus a name;
``__getitem__`` passes it through ``transform(image=..., mask=...)`` (albumentations
convention) or, without one, through the default validation transform, giving a float32
``[3, H, W]`` tensor normalised with the ImageNet mean/std and an int64 ``[H, W]`` tensor.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps

IGNORE_INDEX = 255
DATA_README = "data/README.md"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Sample:
    """One image/mask pair on disk; ``name`` is the stem used in messages and outputs."""

    name: str
    image_path: Path
    mask_path: Path


def missing_path_error(what: str, path: Path, hint: str = "") -> FileNotFoundError:
    """A FileNotFoundError that names the missing path and points at data/README.md."""
    message = f"{what} not found: {path}"
    if hint:
        message += f"\n{hint}"
    message += f"\nSee {DATA_README} for where to download it and the expected folder layout."
    return FileNotFoundError(message)


def require_dir(path: Path, what: str, hint: str = "") -> Path:
    if not path.is_dir():
        raise missing_path_error(what, path, hint)
    return path


def require_file(path: Path, what: str, hint: str = "") -> Path:
    if not path.is_file():
        raise missing_path_error(what, path, hint)
    return path


def missing_files_error(missing: Sequence[Path], what: str = "mask") -> FileNotFoundError:
    """The error for samples whose files are absent; names the files that were looked for."""
    shown = ", ".join(str(path) for path in missing[:5]) + (", ..." if len(missing) > 5 else "")
    return FileNotFoundError(
        f"{len(missing)} {what} file(s) not found: {shown}\n"
        f"Run tools/check_data.py for the full list; see {DATA_README} for the layout."
    )


def read_image(path: Path) -> np.ndarray:
    """Read an image file as ``[H, W, 3]`` uint8 RGB, as a viewer shows it.

    The EXIF orientation is applied (a phone's portrait JPEG comes out upright, as its mask
    was drawn); grayscale is expanded and alpha dropped; 16-bit and 32-bit integer images
    are scaled from their full range (0-65535) and float images from [0, 1] to 0-255, never
    clipped. A truncated or corrupt file, or a float image outside [0, 1], is a ValueError
    naming it, never a partly grey or white picture.
    """
    try:
        with Image.open(path) as pil:
            pil.load()  # decodes everything now: truncated data raises instead of padding grey
            pil = ImageOps.exif_transpose(pil)
            mode = pil.mode
            if mode in _WIDE_MODES:
                values = np.asarray(pil, dtype=np.float64)
            else:
                rgb = np.asarray(pil if mode == "RGB" else pil.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"cannot read image {path} (missing, truncated or not an image: {error})"
        ) from error
    if mode in _WIDE_MODES:
        return _scaled_to_uint8(values, mode, path)
    return rgb.copy()


# Single-channel modes wider than 8 bits: PIL's convert("RGB") would clip them to 0/255.
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def _scaled_to_uint8(values: np.ndarray, mode: str, path: Path) -> np.ndarray:
    if mode == "F":
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise ValueError(
                f"cannot read image {path}: a float image must hold values in [0, 1], this one "
                f"spans [{np.nanmin(values):.4g}, {np.nanmax(values):.4g}]; rescale it to 0-1 "
                "(or save it as an 8- or 16-bit image)"
            )
        scaled = values * 255.0
    else:
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(
                f"cannot read image {path}: integer values beyond 16 bits "
                f"([{values.min():.0f}, {values.max():.0f}]); save it as an 8- or 16-bit image"
            )
        scaled = values * (255.0 / 65535.0)
    grey = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


_STDERR_LOCK = threading.Lock()


def jpeg_decoder_warnings(path: Path) -> list[str]:
    """What libjpeg says while decoding ``path`` in full ("Corrupt JPEG data: ...").

    A JPEG with damaged entropy data still decodes (into a picture with garbage blocks):
    its decoder's warnings are the only sign. libjpeg writes them to the process's stderr,
    so this captures file descriptor 2 around one OpenCV decode (serialised by a lock).
    """
    import cv2

    data = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
    with _STDERR_LOCK, tempfile.TemporaryFile(mode="w+b") as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(captured.fileno(), 2)
            decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if "JPEG" in line or "jpeg" in line]
    if decoded is None:
        lines.append("the decoder could not read it")
    return lines


# PNG modes whose pixel values are class indices (LA: the L channel; alpha is ignored).
_INDEX_MODES = ("1", "L", "P", "LA", "PA", "I", "I;16", "I;16B", "I;16L", "I;16N")


def read_label_png(path: Path, keep_rgb: bool = False) -> np.ndarray:
    """Read a label image as stored: ``[H, W]`` class indices, or ``[H, W, 3]`` colours.

    Index masks: palette ("P"), 8-bit ("L"), 1-bit ("1": 0/1), "LA" (the L channel),
    16/32-bit ("I;16", "I"), and RGB(A) whose three channels are equal (a grey picture of
    indices); 8-bit modes give uint8, wider ones int64, so no label is ever narrowed.
    Other RGB(A) masks, and every RGB(A) mask when ``keep_rgb`` (a data set that maps
    colours through a palette), give ``[H, W, 3]`` uint8 RGB.
    """
    try:
        with Image.open(path) as pil:
            mode = pil.mode
            if mode in ("RGB", "RGBA"):
                rgb = np.asarray(pil.convert("RGB"), dtype=np.uint8)
                if keep_rgb or not (
                    np.array_equal(rgb[..., 0], rgb[..., 1])
                    and np.array_equal(rgb[..., 0], rgb[..., 2])
                ):
                    return rgb
                return rgb[..., 0].copy()
            if mode not in _INDEX_MODES:
                raise ValueError(f"mask {path} has unsupported image mode {mode!r}")
            array = np.asarray(pil)
    except OSError as error:
        raise ValueError(f"cannot read mask {path}: {error}") from error
    if array.ndim == 3:  # LA / PA: the index channel
        array = array[..., 0]
    if array.dtype == np.bool_ or array.dtype == np.uint8:
        return array.astype(np.uint8)
    return array.astype(np.int64)


def read_index_mask(path: Path, hint: str = "") -> np.ndarray:
    """Read an index mask as ``[H, W]`` labels; a colour mask is a ValueError with ``hint``."""
    mask = read_label_png(path)
    if mask.ndim != 2:
        raise ValueError(
            f"mask {path} is a colour image; expected class indices (a palette, greyscale or "
            f"16-bit PNG). {hint or 'Convert it to an index PNG.'}"
        )
    return mask


def validate_pair(
    image: np.ndarray,
    mask: np.ndarray,
    num_classes: int,
    name: str | Path,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Check that ``mask`` fits ``image`` and holds only ``0..num_classes-1`` or ``ignore_index``.

    Returns the mask as uint8 when every value and the ignore value fit, else as int64
    (never narrowed).
    Raises ValueError naming ``name`` otherwise; labels just past the classes suggest
    ``ignore_index`` (a data set whose void label is, say, 11).
    """
    if mask.shape != image.shape[:2]:
        raise ValueError(
            f"{name}: mask size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from image size "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    invalid = ((mask >= num_classes) | (mask < 0)) & (mask != ignore_index)
    if invalid.any():
        values = np.unique(mask[invalid])
        shown = values[:10].tolist()
        hint = ""
        if len(values) == 1 and values[0] >= num_classes:
            hint = f"; if {values[0]} marks void pixels, set ignore_index={values[0]}"
        raise ValueError(
            f"{name}: labels {shown}{' ...' if len(values) > 10 else ''} are outside the "
            f"{num_classes} classes (0..{num_classes - 1}, {ignore_index} = ignore){hint}"
        )
    if mask.dtype != np.uint8 and num_classes <= 256 and 0 <= ignore_index <= 255:
        return mask.astype(np.uint8)
    limits = np.iinfo(mask.dtype)
    if not limits.min <= ignore_index <= limits.max:
        # Crops are padded with the ignore value: an 8-bit mask would clip -100 to class 0.
        return mask.astype(np.int64)
    return mask


def check_ignore_index(num_classes: int, ignore_index: int) -> None:
    """A class id equal to the ignore value would vanish from training: refuse it."""
    if 0 <= ignore_index < num_classes:
        raise ValueError(
            f"ignore_index {ignore_index} is also class id {ignore_index} of the {num_classes} "
            f"classes; choose an ignore value outside 0..{num_classes - 1}"
        )


_default_transform = None


def default_transform() -> Callable:
    """The shared validation transform: ImageNet normalisation, then tensors."""
    global _default_transform
    if _default_transform is None:
        from seg.data.transforms import build_val_transform

        _default_transform = build_val_transform()
    return _default_transform


class SegmentationDataset(torch.utils.data.Dataset):
    """Base class: subclasses implement ``__len__`` and ``load_raw``.

    Attributes: ``num_classes``, ``class_names``, ``palette`` (``[num_classes, 3]`` uint8),
    ``ignore_index`` (255), ``transform``.
    """

    num_classes: int
    class_names: tuple[str, ...]
    palette: np.ndarray
    ignore_index: int = IGNORE_INDEX

    def __init__(self, transform: Callable | None = None) -> None:
        self.transform = transform
        self._seeded_pid: int | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """``([H, W, 3] uint8 RGB, [H, W] uint8 labels, name)``, untransformed."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sample(index)

    def sample(self, index: int, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``index``; with ``seed``, the random transform draws from exactly that seed.

        Seeding per sample makes an augmented stream independent of the number of workers
        and lets a resumed training run see the very crops the interrupted one would have.
        """
        if not 0 <= index < len(self):
            if -len(self) <= index < 0:
                index += len(self)
            else:
                raise IndexError(f"index {index} out of range for {len(self)} samples")
        image, mask, name = self.load_raw(index)
        transform = self.transform if self.transform is not None else default_transform()
        if self.transform is not None:
            self._reseed_in_worker()
            if seed is not None and hasattr(transform, "set_random_seed"):
                transform.set_random_seed(seed)
        try:
            out = transform(image=image, mask=mask)
        except cv2.error as error:  # OpenCV's message names neither the image nor a fix
            reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
            raise ValueError(
                f"sample {name!r} ({image.shape[1]}x{image.shape[0]}): the data transform "
                f"failed on it ({reason}); e.g. an image too small to scale by data.scale's "
                "lower bound fails so: remove it, or raise the bound"
            ) from error
        image, mask = out["image"], out["mask"]
        if isinstance(mask, torch.Tensor) and mask.dtype != torch.int64:
            mask = mask.long()
        return image, mask

    def _reseed_in_worker(self) -> None:
        # albumentations 2.x Compose keeps its own RNG, which forked DataLoader workers
        # inherit unchanged: without this every worker would draw the same augmentations.
        # torch.initial_seed() differs per worker and per epoch and follows torch's seed.
        pid = os.getpid()
        if self._seeded_pid == pid:
            return
        self._seeded_pid = pid
        if torch.utils.data.get_worker_info() is not None and hasattr(
            self.transform, "set_random_seed"
        ):
            self.transform.set_random_seed(torch.initial_seed() % 2**32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} samples, {self.num_classes} classes)"


class FileDataset(SegmentationDataset):
    """A data set backed by a list of `Sample` files; subclasses fill ``self.samples``."""

    samples: list[Sample]

    def __len__(self) -> int:
        return len(self.samples)

    def read_mask(self, sample: Sample) -> np.ndarray:
        """Raw class ids of ``sample``'s mask, ``[H, W]``; subclasses map ids here."""
        return read_index_mask(sample.mask_path)

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        sample = self.samples[index]
        image = read_image(sample.image_path)
        mask = self.read_mask(sample)
        mask = validate_pair(image, mask, self.num_classes, sample.mask_path, self.ignore_index)
        return image, mask, sample.name


def reduce_zero_label(
    mask: np.ndarray,
    path: Path | str = "mask",
    num_classes: int = 150,  # ADE20K's, where the protocol comes from
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Stored labels 0..num_classes -> class ids: 0 -> ``ignore_index``, v -> v - 1.

    A stored ``ignore_index`` beyond the classes stays ignored (mmsegmentation's
    ``reduce_zero_label`` keeps 255 as 255). Any other value is a ValueError naming ``path``.
    """
    labels = np.asarray(mask).astype(np.int64)
    ignored = labels == ignore_index if ignore_index > num_classes else np.zeros_like(labels, bool)
    bad = np.unique(labels[((labels < 0) | (labels > num_classes)) & ~ignored])
    if bad.size:
        raise ValueError(
            f"{path}: label values {bad[:10].tolist()} are outside 0..{num_classes} (0 = "
            f"not a class, ignored; 1..{num_classes} = the {num_classes} classes, stored "
            "before reduce_zero_label); fix or remove this annotation"
        )
    reduced = labels - 1
    reduced[(labels == 0) | ignored] = ignore_index
    return reduced


class LayoutDataset(FileDataset):
    """A data set in its published folder layout, read as ``Cls(root, split, transform)``.

    Subclasses give ``locate(root)`` (the layout's top folder, found from what the user
    names) and ``list_samples(top, split)`` (image/mask pairs and the files found missing);
    ``missing_kind`` names what a missing file is in the error.
    """

    missing_kind = "annotation"

    def __init__(
        self, root: str | Path, split: str = "train", transform: Callable | None = None
    ) -> None:
        super().__init__(transform)
        self.root = self.locate(root)
        self.split = split
        self.samples, missing = self.list_samples(self.root, split)
        if missing:
            raise missing_files_error(missing, self.missing_kind)

    @staticmethod
    def locate(root: str | Path) -> Path:
        return Path(root).expanduser()

    @staticmethod
    def list_samples(root: Path, split: str) -> tuple[list[Sample], list[Path]]:
        raise NotImplementedError


def median_frequency_weights(dataset: SegmentationDataset) -> np.ndarray:
    """Class weights ``median(freq) / freq(c)`` (SegNet's, after Eigen & Fergus), where
    ``freq(c)`` = pixels of class c / pixels of the images in which c appears, over the
    data set's stored labels (ignored pixels left out). Absent classes get weight 0."""
    num_classes = dataset.num_classes
    pixels = np.zeros(num_classes, dtype=np.float64)
    image_pixels = np.zeros(num_classes, dtype=np.float64)
    for index in range(len(dataset)):
        if isinstance(dataset, FileDataset):  # the masks alone, not the images
            labels = dataset.read_mask(dataset.samples[index])
        else:
            labels = dataset.load_raw(index)[1]
        labels = np.asarray(labels).reshape(-1)
        counts = np.bincount(labels[labels != dataset.ignore_index], minlength=num_classes)
        pixels += counts[:num_classes]
        image_pixels[counts[:num_classes] > 0] += labels.size
    frequency = np.divide(pixels, image_pixels, out=np.zeros_like(pixels), where=image_pixels > 0)
    weights = np.zeros_like(frequency)
    present = frequency > 0
    weights[present] = np.median(frequency[present]) / frequency[present]
    return weights
