"""VOCSegmentation reads palette PNGs as class indices and fails clearly on bad trees."""

import numpy as np
import pytest
import torch
from PIL import Image

from seg.data import VOCSegmentation


def test_loads_palette_indices_pixel_by_pixel(make_voc):
    root, truth = make_voc()
    for split, names in (("train", ["2007_000001", "2007_000002"]), ("val", ["2007_000003"])):
        dataset = VOCSegmentation(root, split)
        assert len(dataset) == len(names)
        for index, name in enumerate(names):
            image, mask, loaded_name = dataset.load_raw(index)
            assert loaded_name == name
            assert mask.dtype == np.uint8
            np.testing.assert_array_equal(mask, truth[name])
            assert image.shape == (*truth[name].shape, 3) and image.dtype == np.uint8
            # RGB order: the left half was written red, the right half blue.
            reference = np.array(Image.open(dataset.samples[index].image_path).convert("RGB"))
            assert np.abs(image.astype(int) - reference).mean() < 2
            assert image[:, :4, 0].mean() > 180 and image[:, :4, 2].mean() < 80


def test_getitem_returns_normalised_tensor_and_int64_mask(make_voc):
    root, truth = make_voc()
    dataset = VOCSegmentation(root, "val")
    image, mask = dataset[0]
    raw, _, _ = dataset.load_raw(0)
    assert image.dtype == torch.float32 and image.shape == (3, *raw.shape[:2])
    assert mask.dtype == torch.int64
    np.testing.assert_array_equal(mask.numpy(), truth["2007_000003"])
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (raw[5, 7] / 255.0 - mean) / std
    np.testing.assert_allclose(image[:, 5, 7].numpy(), expected, atol=1e-5)


def test_attributes(make_voc):
    root, _ = make_voc()
    dataset = VOCSegmentation(root, "train")
    assert dataset.num_classes == 21 and len(dataset.class_names) == 21
    assert dataset.ignore_index == 255 and dataset.palette.shape == (21, 3)
    assert dataset.class_names[15] == "person"


@pytest.mark.parametrize("subpath", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_accepts_parent_devkit_or_voc2012_as_root(make_voc, subpath):
    root, _ = make_voc()
    assert len(VOCSegmentation(root / subpath if subpath else root, "train")) == 2


def test_missing_root_names_folder_and_readme(tmp_path):
    with pytest.raises(FileNotFoundError, match="data/README.md") as error:
        VOCSegmentation(tmp_path / "nowhere", "train")
    assert "nowhere" in str(error.value)


def test_missing_segmentation_folder(make_voc):
    root, _ = make_voc()
    (root / "VOCdevkit/VOC2012/SegmentationClass").rename(root / "elsewhere")
    with pytest.raises(FileNotFoundError, match="SegmentationClass"):
        VOCSegmentation(root, "train")


def test_trainaug_without_sbd_points_at_converter(make_voc):
    root, _ = make_voc()
    with pytest.raises(FileNotFoundError) as error:
        VOCSegmentation(root, "trainaug")
    message = str(error.value)
    assert "SegmentationClassAug" in message
    assert "tools/convert_sbd.py" in message and "data/README.md" in message


def test_unknown_split(make_voc):
    root, _ = make_voc()
    with pytest.raises(ValueError, match="trainaug"):
        VOCSegmentation(root, "trainval_typo")


def test_missing_mask_lists_names(make_voc):
    root, _ = make_voc()
    (root / "VOCdevkit/VOC2012/SegmentationClass/2007_000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="2007_000002"):
        VOCSegmentation(root, "train")


def test_size_mismatch_raises_with_file_name(make_voc):
    root, _ = make_voc()
    mask_path = root / "VOCdevkit/VOC2012/SegmentationClass/2007_000001.png"
    Image.fromarray(np.zeros((5, 5), np.uint8), mode="P").save(mask_path)
    dataset = VOCSegmentation(root, "train")
    with pytest.raises(ValueError, match="2007_000001.png.*differs"):
        dataset.load_raw(0)
    with pytest.raises(ValueError, match="2007_000001"):
        dataset[0]


def test_label_out_of_range_raises_with_file_name(make_voc, write_palette_png):
    root, truth = make_voc()
    labels = truth["2007_000002"].copy()
    labels[3, 4] = 21
    write_palette_png(root / "VOCdevkit/VOC2012/SegmentationClass/2007_000002.png", labels)
    dataset = VOCSegmentation(root, "train")
    dataset.load_raw(0)  # the untouched one still loads
    with pytest.raises(ValueError, match=r"2007_000002\.png.*\[21\]"):
        dataset.load_raw(1)


def test_missing_jpeg_is_named_as_the_image(make_voc):
    root, _ = make_voc(train=["a", "b"])
    (root / "VOCdevkit/VOC2012/JPEGImages/b.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"JPEGImages/b\.jpg"):
        VOCSegmentation(root, "train")


def test_rgb_mask_points_at_the_voc_palette_pngs(make_voc):
    root, truth = make_voc(train=["a"])
    mask = root / "VOCdevkit/VOC2012/SegmentationClass/a.png"
    colours = np.zeros((*truth["a"].shape, 3), np.uint8)
    colours[..., 0] = 128  # a colour rendering: the indices are gone
    colours[0, 0] = (0, 128, 0)
    Image.fromarray(colours).save(mask)
    with pytest.raises(ValueError, match="palette PNGs of SegmentationClass") as error:
        VOCSegmentation(root, "train").load_raw(0)
    assert "FolderDataset" not in str(error.value)
