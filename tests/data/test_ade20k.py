"""ADE20K in the ADEChallengeData2016 layout, reduce_zero_label, check_data and the configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seg.config import ConfigError, load_config
from seg.data import (
    ADE20K,
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    build_dataset,
    median_frequency_weights,
)
from seg.data.ade20k import reduce_zero_label
from seg.data.check import check_dataset

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SPLITS = {"training": "train", "validation": "val"}


def _write_pair(ade: Path, folder: str, name: str, labels: np.ndarray, rng) -> None:
    """One image (a real JPEG) and its annotation (an 8-bit greyscale PNG), as ADE20K has."""
    height, width = labels.shape
    for kind in ("images", "annotations"):
        (ade / kind / folder).mkdir(parents=True, exist_ok=True)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(image).save(ade / "images" / folder / f"{name}.jpg", quality=95)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(
        ade / "annotations" / folder / f"{name}.png"
    )


@pytest.fixture
def ade_tree(tmp_path):
    """data/ADEChallengeData2016 with 3 training and 2 validation pairs; stored labels 0..150."""
    rng = np.random.default_rng(0)
    ade = tmp_path / "ADEChallengeData2016"
    truth = {}
    sizes = {"training": [(20, 24), (24, 20), (18, 30)], "validation": [(20, 26), (22, 22)]}
    for folder, shapes in sizes.items():
        prefix = "ADE_train" if folder == "training" else "ADE_val"
        for index, shape in enumerate(shapes, start=1):
            name = f"{prefix}_{index:08d}"
            labels = rng.choice(np.array([0, 1, 2, 37, 149, 150]), size=shape)
            _write_pair(ade, folder, name, labels, rng)
            truth[(SPLITS[folder], name)] = labels.astype(np.uint8)
    (ade / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n")
    return ade, truth


def test_samples_pair_up_and_labels_are_reduced(ade_tree):
    ade, truth = ade_tree
    for split, count in (("train", 3), ("val", 2)):
        dataset = ADE20K(ade.parent, split)  # the folder holding ADEChallengeData2016 works too
        assert len(dataset) == count
        assert [s.image_path.parent.name for s in dataset.samples] == [
            {"train": "training", "val": "validation"}[split]
        ] * count
        for index in range(count):
            image, labels, name = dataset.load_raw(index)
            stored = truth[(split, name)]
            assert image.shape == (*stored.shape, 3) and labels.shape == stored.shape
            assert dataset.samples[index].mask_path.stem == dataset.samples[index].image_path.stem
            np.testing.assert_array_equal(labels[stored == 0], 255)  # "other" is ignored
            np.testing.assert_array_equal(labels[stored == 1], 0)  # wall
            np.testing.assert_array_equal(labels[stored == 150], 149)  # flag
            np.testing.assert_array_equal(labels[stored != 0], stored[stored != 0] - 1)
    assert ADE20K.num_classes == len(ADE20K_CLASSES) == 150
    assert ADE20K_CLASSES[:3] == ("wall", "building", "sky") and ADE20K_CLASSES[-1] == "flag"
    assert ADE20K_PALETTE.shape == (150, 3) and ADE20K_PALETTE.dtype == np.uint8
    assert ADE20K_PALETTE[0].tolist() == [120, 120, 120]
    assert ADE20K_PALETTE[-1].tolist() == [92, 0, 255]


def test_build_dataset_trains_on_crops_and_validates_whole(ade_tree):
    ade, truth = ade_tree
    train = build_dataset({"name": "ade20k", "root": str(ade), "crop_size": 16}, "train")
    image, mask = train[0]
    assert image.shape == (3, 16, 16) and mask.dtype == torch.int64
    assert set(np.unique(mask.numpy())) <= set(range(150)) | {255}
    val = build_dataset({"name": "ade20k", "root": str(ade)}, "val")
    image, mask = val[1]
    assert image.shape == (3, 22, 22)
    expected = truth[("val", "ADE_val_00000002")].astype(np.int64) - 1
    expected[expected == -1] = 255
    np.testing.assert_array_equal(mask.numpy(), expected)
    weights = median_frequency_weights(train)  # reads the reduced labels
    assert weights.shape == (150,) and weights[0] > 0 and weights[5] == 0
    with pytest.raises(ConfigError, match=r"unknown ADE20K split 'test' \(its test images have"):
        build_dataset({"name": "ade20k", "root": str(ade)}, "test")
    with pytest.raises(ConfigError, match="data.root is missing: the 'ade20k' data set"):
        build_dataset({"name": "ade20k"}, "val")


def test_a_label_beyond_150_is_an_error_naming_the_file(ade_tree):
    ade, truth = ade_tree
    labels = truth[("train", "ADE_train_00000002")].copy()
    labels[0, 0] = 151
    path = ade / "annotations" / "training" / "ADE_train_00000002.png"
    Image.fromarray(labels, mode="L").save(path)
    dataset = ADE20K(ade, "train")
    with pytest.raises(ValueError, match=r"ADE_train_00000002.png: label values \[151\] are"):
        dataset.load_raw(1)
    dataset.load_raw(0)  # the others still load


def test_reduce_zero_label_by_hand():
    stored = np.array([[0, 1, 2], [150, 255, 75]], dtype=np.uint8)
    np.testing.assert_array_equal(
        reduce_zero_label(stored), np.array([[255, 0, 1], [149, 255, 74]])
    )
    with pytest.raises(ValueError, match=r"m.png: label values \[151, 200\] are outside 0..150"):
        reduce_zero_label(np.array([[151, 200, 3]]), "m.png")
    # a folder set's own numbers: 4 classes stored 1..4, void 0; 4 is a class, not ignore
    np.testing.assert_array_equal(
        reduce_zero_label(np.array([[0, 4, 255]]), num_classes=4), [[255, 3, 255]]
    )


def test_folder_data_sets_take_reduce_zero_label(tmp_path):
    rng = np.random.default_rng(1)
    stored = rng.choice(np.array([0, 1, 2, 3]), size=(12, 14)).astype(np.uint8)
    _write_pair(tmp_path, "train", "a", stored, rng)
    cfg = {
        "name": "folder",
        "images": str(tmp_path / "images" / "{split}"),
        "masks": str(tmp_path / "annotations" / "{split}"),
        "classes": ["road", "car", "person"],
        "crop_size": 8,
    }
    reduced = build_dataset({**cfg, "reduce_zero_label": True}, "train")
    _, labels, _ = reduced.load_raw(0)
    expected = stored.astype(np.int64) - 1
    expected[stored == 0] = 255
    np.testing.assert_array_equal(labels, expected)
    # Without it, label 3 is past the 3 classes: the plain reading refuses it.
    with pytest.raises(ValueError, match="labels \\[3\\] are outside the 3 classes"):
        build_dataset(cfg, "train").load_raw(0)
    with pytest.raises(ConfigError, match="data.reduce_zero_label must be true or false"):
        build_dataset({**cfg, "reduce_zero_label": "yes"}, "train")
    report = check_dataset(
        "folder", tmp_path, "images/train", "annotations/train", num_classes=3,
        reduce_zero_label=True,
    )  # fmt: skip
    assert report.ok, report.format()
    assert not check_dataset("folder", tmp_path, "images/train", "annotations/train", 3).ok


def test_check_data_passes_a_clean_tree_and_names_each_problem(ade_tree, load_tool, capsys):
    ade, truth = ade_tree
    check_data = load_tool("check_data")
    report = check_dataset("ade20k", ade.parent)
    assert report.ok, report.format()
    assert report.counts == {"train": 3, "val": 2} and report.root == str(ade)
    assert check_data.main(["--dataset", "ade20k", str(ade)]) == 0
    assert "OK" in capsys.readouterr().out

    labels = truth[("val", "ADE_val_00000001")].copy()
    labels[2, 3] = 180
    Image.fromarray(labels, mode="L").save(
        ade / "annotations" / "validation" / "ADE_val_00000001.png"
    )
    (ade / "annotations" / "training" / "ADE_train_00000003.png").unlink()
    report = check_dataset("ade20k", ade)
    text = "\n".join(report.problems)
    assert len(report.problems) == 2, text
    assert "val: " in text and "ADE_val_00000001.png: unexpected label values [180]" in text
    assert "ADE_train_00000003.png does not exist" in text
    assert check_data.main(["--dataset", "ade20k", str(ade)]) == 1
    assert "FAILED" in capsys.readouterr().out
    missing = check_dataset("ade20k", ade / "nowhere")
    assert not missing.ok and "ADEChallengeData2016" in missing.problems[0]


@pytest.mark.parametrize("model", ["segnet_vgg16-lift-lift", "deeplabv3plus_r50-bilinear"])
@pytest.mark.parametrize("iters", [80, 160])
def test_the_ade20k_configs_load_as_published(model, iters):
    cfg = load_config(CONFIGS / f"{model}_ade20k-512x512_{iters}k.yaml")
    assert cfg.model["num_classes"] == 150 and cfg.data["name"] == "ade20k"
    assert cfg.data["crop_size"] == 512 and cfg.data["root"] == "data/ADEChallengeData2016"
    assert cfg.train.iters == iters * 1000 and cfg.train.batch_size == 16
    assert (cfg.train.lr, cfg.train.poly_power, cfg.train.weight_decay) == (0.01, 0.9, 5e-4)
    assert cfg.eval.split == "val" and cfg.eval.mode == "whole"
    assert len(list(CONFIGS.glob(f"*_ade20k-512x512_{iters}k.yaml"))) == 7
