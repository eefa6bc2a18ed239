"""Label files are read as the class indices they hold, whatever their PNG mode; images fail
loudly when broken; void values other than 255 and more than 255 classes work."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from seg.data import build_dataset
from seg.data.base import read_image, read_label_png
from seg.data.folder import FolderDataset


def _labels(height=6, width=7, high=4, seed=0):
    return np.random.default_rng(seed).integers(0, high, (height, width))


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "I;16", "RGB-equal", "RGBA-equal"])
def test_every_index_mode_reads_as_class_indices(tmp_path, mode):
    labels = _labels(high=2 if mode == "1" else 4)
    path = tmp_path / "mask.png"
    if mode == "1":
        Image.fromarray(labels.astype(bool)).save(path)  # a 1-bit PNG: 0 and 1
    elif mode == "L":
        Image.fromarray(labels.astype(np.uint8)).save(path)
    elif mode == "P":
        png = Image.fromarray(labels.astype(np.uint8)).convert("P")
        png.putdata(labels.astype(np.uint8).reshape(-1).tolist())
        png.putpalette([255 - 40 * i for i in range(4) for _ in range(3)])
        png.save(path)
    elif mode == "LA":
        la = np.stack([labels, np.full_like(labels, 255)], -1).astype(np.uint8)
        Image.fromarray(la, mode="LA").save(path)
    elif mode == "I;16":
        Image.fromarray(labels.astype(np.uint16)).save(path)
    else:
        channels = 4 if mode.startswith("RGBA") else 3
        stacked = np.repeat(labels[..., None], channels, -1).astype(np.uint8)
        if channels == 4:
            stacked[..., 3] = 255
        Image.fromarray(stacked).save(path)
    with Image.open(path) as check:  # the file really is in that mode
        assert check.mode == {"RGB-equal": "RGB", "RGBA-equal": "RGBA", "I": "I;16"}.get(mode, mode)
    read = read_label_png(path)
    assert read.shape == labels.shape
    np.testing.assert_array_equal(read, labels)


def test_a_real_colour_mask_stays_colour_and_keep_rgb_keeps_grey_colours(tmp_path):
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[:2] = (128, 0, 0)
    Image.fromarray(colour).save(tmp_path / "c.png")
    assert read_label_png(tmp_path / "c.png").shape == (4, 4, 3)
    grey = np.full((4, 4, 3), 128, np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert read_label_png(tmp_path / "g.png").shape == (4, 4)
    assert read_label_png(tmp_path / "g.png", keep_rgb=True).shape == (4, 4, 3)


def _folder(tmp_path, labels_list, save_mask, **kwargs):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(exist_ok=True)
    masks.mkdir(exist_ok=True)
    for index, labels in enumerate(labels_list):
        image = np.zeros((*labels.shape, 3), np.uint8)
        Image.fromarray(image).save(images / f"s{index}.png")
        save_mask(masks / f"s{index}.png", labels)
    return images, masks


def test_one_bit_masks_keep_their_foreground(tmp_path):
    labels = _labels(high=2)
    images, masks = _folder(
        tmp_path, [labels], lambda p, m: Image.fromarray(m.astype(bool)).save(p)
    )
    dataset = FolderDataset(images, masks, classes=["background", "object"])
    np.testing.assert_array_equal(dataset.load_raw(0)[1], labels)


def test_more_than_255_classes_are_never_narrowed(tmp_path):
    labels = _labels(high=300, seed=3)
    labels[0, 0] = 299
    images, masks = _folder(
        tmp_path, [labels], lambda p, m: Image.fromarray(m.astype(np.uint16)).save(p)
    )
    classes = [f"c{i}" for i in range(300)]
    with pytest.raises(ValueError, match="ignore_index 255 is also class id 255"):
        FolderDataset(images, masks, classes=classes)
    dataset = FolderDataset(images, masks, classes=classes, ignore_index=65535)
    _, mask, _ = dataset.load_raw(0)
    assert mask[0, 0] == 299 and mask.dtype == np.int64
    np.testing.assert_array_equal(mask, labels)
    _, tensor = dataset[0]
    assert int(tensor[0, 0]) == 299


def test_a_void_value_other_than_255(tmp_path):
    labels = _labels(high=4)
    labels[0, :3] = 11  # SegNet's CamVid marks void with 11
    images, masks = _folder(
        tmp_path, [labels], lambda p, m: Image.fromarray(m.astype(np.uint8), mode="L").save(p)
    )
    classes = ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="if 11 marks void pixels, set ignore_index=11"):
        FolderDataset(images, masks, classes=classes).load_raw(0)
    dataset = FolderDataset(images, masks, classes=classes, ignore_index=11)
    assert dataset.ignore_index == 11
    np.testing.assert_array_equal(dataset.load_raw(0)[1], labels)
    cfg = {
        "name": "folder",
        "root": str(tmp_path),
        "images": "images",
        "masks": "masks",
        "classes": classes,
        "ignore_index": 11,
        "crop_size": 16,
    }
    train = build_dataset(cfg, "train")
    _, mask = train[0]
    assert set(np.unique(mask.numpy())) <= {0, 1, 2, 3, 11}
    assert (mask == 11).sum() >= 3  # the padding is void too (16x16 crop of a 6x7 image)


def test_ignore_index_inside_the_classes_is_refused(tmp_path):
    images, masks = _folder(
        tmp_path, [_labels()], lambda p, m: Image.fromarray(m.astype(np.uint8)).save(p)
    )
    with pytest.raises(ValueError, match="ignore_index 2 is also class id 2"):
        FolderDataset(images, masks, classes=["a", "b", "c"], ignore_index=2)


def test_truncated_jpeg_fails_loudly_naming_the_file(tmp_path):
    buffer = io.BytesIO()
    picture = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    Image.fromarray(picture).save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.jpg"):
        read_image(path)
    (tmp_path / "whole.jpg").write_bytes(data)
    assert read_image(tmp_path / "whole.jpg").shape == (64, 64, 3)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"classes": 4}, ValueError, "classes must be a list of class names"),
        ({"classes": ["a", "b"], "palette": [[0, 0, 0], [300, 0, 0]]}, ValueError, "0..255"),
        ({"classes": ["a", "b"], "palette": [[0, 0, 0]]}, ValueError, "1 colours for 2"),
    ],
)
def test_folder_argument_errors(tmp_path, kwargs, error, pattern):
    images, masks = _folder(
        tmp_path, [_labels(high=2)], lambda p, m: Image.fromarray(m.astype(np.uint8)).save(p)
    )
    with pytest.raises(error, match=pattern):
        FolderDataset(images, masks, **kwargs)


def test_missing_mask_error_names_the_file_it_looked_for(tmp_path):
    images, masks = _folder(
        tmp_path, [_labels()], lambda p, m: Image.fromarray(m.astype(np.uint8)).save(p)
    )
    (masks / "s0.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"masks/s0_gt\.png"):
        FolderDataset(images, masks, classes=["a", "b", "c", "d"], mask_suffix="_gt")
