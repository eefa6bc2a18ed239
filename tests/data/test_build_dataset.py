"""build_dataset from config dicts, and the palettes."""

import numpy as np
import pytest
import torch
from PIL import Image

from seg.config import ConfigError
from seg.data import (
    Cityscapes,
    FolderDataset,
    SyntheticShapes,
    VOCSegmentation,
    build_dataset,
    build_train_transform,
    build_val_transform,
    colorize,
    voc_palette,
)


def test_unknown_name_lists_valid_names():
    with pytest.raises(
        ConfigError,
        match=r"^data.name: unknown data set 'coco'.* Choose one of: ade20k, camvid, cityscapes, folder, "
        r"synthetic, voc$",
    ):
        build_dataset({"name": "coco"}, "train")


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"^data: unknown key 'rooot'; did you mean 'root'\?"):
        build_dataset({"name": "voc", "rooot": "x"}, "train")


def test_missing_required_key():
    with pytest.raises(ConfigError, match=r"^data.root is missing: the 'cityscapes' data set"):
        build_dataset({"name": "cityscapes"}, "val")
    with pytest.raises(ConfigError, match=r"^data.classes is missing: the 'folder' data set"):
        build_dataset({"name": "folder", "images": "i", "masks": "m"}, "val")


@pytest.mark.parametrize(
    "key, value, split",
    [
        ("crop_size", -4, "train"),
        ("crop_size", 0, "train"),
        ("crop_size", [32], "train"),
        ("crop_size", 4.5, "train"),
        ("crop_size", "ab", "train"),
        ("crop_size", True, "train"),
        ("resize", -3, "val"),
        ("scale", [2.0, 1.0], "train"),
        ("scale", [0.5, float("inf")], "train"),
        ("mean", [0.5], "val"),
        ("mean", [123.675, 116.28, 103.53], "val"),
        ("std", [0.0, 0.0, 0.0], "val"),
        ("std", [58.395, 57.12, 57.375], "train"),
    ],
)
def test_transform_settings_are_checked_and_named(key, value, split):
    # Before: albumentations' pydantic errors ("2 validation errors for InitSchema...
    # min_height"), a TypeError, or nothing at all (a mean of one number broadcast).
    cfg = {"name": "synthetic", "num_samples": 2, key: value}
    with pytest.raises(ConfigError, match=rf"^data\.{key} must be ") as error:
        build_dataset(cfg, split)
    assert "\n" not in str(error.value)


def test_transforms_name_their_own_arguments():
    with pytest.raises(ConfigError, match=r"^crop_size must be an int >= 1"):
        build_train_transform(-4)
    with pytest.raises(ConfigError, match=r"^resize must be an int >= 1"):
        build_val_transform(resize=(0, 8))
    with pytest.raises(ConfigError, match=r"^std must be 3 numbers in \(0, 1\]"):
        build_val_transform(std=(0.2, 0.2))


def test_what_a_data_set_rejects_is_a_one_line_config_error():
    with pytest.raises(
        ConfigError, match=r"^data: the 'synthetic' data set \(val split\) can't be built .*2..10"
    ):
        build_dataset({"name": "synthetic", "num_classes": 0}, "val")
    with pytest.raises(ConfigError, match=r"^data.num_samples has no entry for split 'test'"):
        build_dataset({"name": "synthetic", "num_samples": {"train": 2}}, "test")


def test_synthetic_train_and_val_differ_and_train_is_augmented():
    cfg = {"name": "synthetic", "num_samples": {"train": 3, "val": 2}, "size": 64, "crop_size": 48}
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert isinstance(train, SyntheticShapes) and (len(train), len(val)) == (3, 2)
    assert not np.array_equal(train.load_raw(0)[0], val.load_raw(0)[0])
    image, mask = train[0]
    assert image.shape == (3, 48, 48) and mask.dtype == torch.int64
    image, mask = val[0]
    assert image.shape == (3, 64, 64)


def test_voc_and_cityscapes(make_voc, make_cityscapes):
    root, _ = make_voc()
    voc = build_dataset({"name": "voc", "root": str(root), "crop_size": 16}, "train")
    assert isinstance(voc, VOCSegmentation) and voc.split == "train" and len(voc) == 2
    assert voc[0][0].shape == (3, 16, 16)
    with pytest.raises(FileNotFoundError, match="convert_sbd"):
        build_dataset({"name": "voc", "root": str(root), "train_split": "trainaug"}, "train")
    city_root, _ = make_cityscapes(splits=("val",))
    city = build_dataset({"name": "cityscapes", "root": str(city_root)}, "val")
    assert isinstance(city, Cityscapes) and len(city) == 4


def test_folder_with_split_placeholder(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "img").mkdir(parents=True)
        (tmp_path / split / "ann").mkdir(parents=True)
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / split / "img" / "x.png")
        Image.fromarray(np.ones((10, 10), np.uint8), mode="L").save(
            tmp_path / split / "ann" / "x.png"
        )
    cfg = {
        "name": "folder",
        "root": str(tmp_path),
        "images": "{split}/img",
        "masks": "{split}/ann",
        "classes": ["bg", "thing"],
    }
    val = build_dataset(cfg, "val")
    assert isinstance(val, FolderDataset) and val.images_dir == tmp_path / "val" / "img"
    assert (val[0][1] == 1).all()
    with pytest.raises(ConfigError, match=r"^data.crop_size is missing: the train split"):
        build_dataset(cfg, "train")
    assert build_dataset({**cfg, "crop_size": 8}, "train")[0][0].shape == (3, 8, 8)


def test_voc_palette_known_colours():
    palette = voc_palette()
    # Colours as published with the VOC devkit.
    assert tuple(palette[0]) == (0, 0, 0)
    assert tuple(palette[1]) == (128, 0, 0)
    assert tuple(palette[2]) == (0, 128, 0)
    assert tuple(palette[3]) == (128, 128, 0)
    assert tuple(palette[15]) == (192, 128, 128)
    assert tuple(palette[255]) == (224, 224, 192)


def test_colorize_paints_ignore_white():
    mask = np.array([[0, 1], [255, 2]], np.uint8)
    rgb = colorize(mask, voc_palette(21))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[1, 0]) == (255, 255, 255)
    assert tuple(rgb[0, 1]) == (128, 0, 0)
    with pytest.raises(ValueError, match=r"\[30\]"):
        colorize(np.array([[30]]), voc_palette(21))


@pytest.mark.parametrize("ignore_index", [-100, 300])
def test_colorize_paints_an_ignore_index_outside_a_byte(ignore_index):
    """Folder data sets may ignore -100 or 300: no palette row, still painted white."""
    palette = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]], np.uint8)
    mask = np.array([[0, ignore_index], [2, 1]], np.int64)
    rgb = colorize(mask, palette, ignore_index=ignore_index)
    expected = [[[10, 20, 30], [255, 255, 255]], [[70, 80, 90], [40, 50, 60]]]
    np.testing.assert_array_equal(rgb, np.array(expected, np.uint8))
    with pytest.raises(ValueError, match=r"labels \[-1, 3\] have no colour in a palette of 3"):
        colorize(np.array([[-1, 3]]), palette, ignore_index=ignore_index)
