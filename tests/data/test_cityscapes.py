"""Cityscapes: labelIds -> 19 train ids, its label table, and its errors."""

import numpy as np
import pytest

from seg.data import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, ID_TO_TRAIN_ID, Cityscapes


def test_loads_train_ids_pixel_by_pixel(make_cityscapes):
    root, expected = make_cityscapes()
    for split in ("train", "val", "test"):
        dataset = Cityscapes(root, split)
        assert len(dataset) == 4
        for index in range(len(dataset)):
            image, mask, name = dataset.load_raw(index)
            np.testing.assert_array_equal(mask, expected[(split, name)])
            assert image.shape == (16, 32, 3)
            assert image[:, :4, 0].mean() > 180 and image[:, :4, 2].mean() < 80  # RGB order


def test_table_matches_cityscapesscripts():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    assert ID_TO_TRAIN_ID.shape == (256,) and ID_TO_TRAIN_ID.dtype == np.uint8
    expected = np.full(256, 255)
    for label in labels.labels:
        if label.id >= 0:
            expected[label.id] = label.trainId if 0 <= label.trainId < 19 else 255
    np.testing.assert_array_equal(ID_TO_TRAIN_ID, expected)
    by_train_id = {label.trainId: label for label in labels.labels if 0 <= label.trainId < 19}
    assert [by_train_id[i].name for i in range(19)] == list(CITYSCAPES_CLASSES)
    assert [tuple(by_train_id[i].color) for i in range(19)] == [
        tuple(int(c) for c in color) for color in CITYSCAPES_PALETTE
    ]


def test_missing_folders_name_the_zip(tmp_path, make_cityscapes):
    with pytest.raises(FileNotFoundError, match="data/README.md"):
        Cityscapes(tmp_path / "absent", "train")
    root, _ = make_cityscapes(splits=("train",))
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit.*val|val.*leftImg8bit"):
        Cityscapes(root, "val")


def test_missing_label_file_lists_it(make_cityscapes):
    root, _ = make_cityscapes(splits=("val",))
    (root / "gtFine/val/bonn/bonn_000001_000020_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match="bonn_000001_000020"):
        Cityscapes(root, "val")


def test_unknown_label_id_raises_with_file_name(make_cityscapes):
    from PIL import Image

    root, _ = make_cityscapes(splits=("val",))
    path = root / "gtFine/val/aachen/aachen_000000_000019_gtFine_labelIds.png"
    ids = np.array(Image.open(path))
    ids[0, 0] = 40
    Image.fromarray(ids, mode="L").save(path)
    dataset = Cityscapes(root, "val")
    with pytest.raises(ValueError, match=r"aachen_000000_000019_gtFine_labelIds\.png.*\[40\]"):
        dataset.load_raw(0)
