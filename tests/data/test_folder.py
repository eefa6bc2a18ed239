"""FolderDataset: pairing by stem, index and colour masks, and its errors."""

import numpy as np
import pytest
from PIL import Image

from seg.data import FolderDataset, build_dataset

CLASSES = ["background", "road", "tree"]
PALETTE = [(0, 0, 0), (128, 64, 128), (0, 200, 0)]


def _tree(tmp_path, rng):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    truth = {}
    # Mixed image formats; masks as grayscale, palette and colour PNGs.
    for stem, ext, kind in [("a", ".jpg", "L"), ("b", ".png", "P"), ("c", ".bmp", "RGB")]:
        image = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
        Image.fromarray(image).save(images / f"{stem}{ext}")
        labels = rng.choice(np.array([0, 1, 2, 255], np.uint8), size=(12, 20))
        truth[stem] = (image, labels)
        if kind == "RGB":
            colours = np.array(PALETTE + [(255, 255, 255)] * 253, np.uint8)
            Image.fromarray(colours[labels]).save(masks / f"{stem}.png")
        elif kind == "P":
            png = Image.fromarray(labels, mode="P")
            png.putpalette([v for colour in PALETTE for v in colour] + [255] * (253 * 3))
            png.save(masks / f"{stem}.png")
        else:
            Image.fromarray(labels, mode="L").save(masks / f"{stem}.png")
    return images, masks, truth


def test_index_and_colour_masks_load_pixel_by_pixel(tmp_path):
    images, masks, truth = _tree(tmp_path, np.random.default_rng(3))
    dataset = FolderDataset(images, masks, CLASSES, palette=PALETTE, ignore_color=(255, 255, 255))
    assert [s.name for s in dataset.samples] == ["a", "b", "c"]
    assert dataset.num_classes == 3 and dataset.class_names == tuple(CLASSES)
    for index in range(3):
        image, mask, name = dataset.load_raw(index)
        expected_image, expected_labels = truth[name]
        np.testing.assert_array_equal(mask, expected_labels)
        if name != "a":  # lossless formats round-trip exactly (a is a JPEG)
            np.testing.assert_array_equal(image, expected_image)


def test_colour_not_in_palette_names_file(tmp_path):
    images, masks, truth = _tree(tmp_path, np.random.default_rng(3))
    colour = np.array(Image.open(masks / "c.png"))
    colour[2, 3] = (1, 2, 3)
    Image.fromarray(colour).save(masks / "c.png")
    dataset = FolderDataset(images, masks, CLASSES, palette=PALETTE, ignore_color=(255, 255, 255))
    with pytest.raises(ValueError, match=r"c\.png.*\(1, 2, 3\)"):
        dataset.load_raw(2)


def test_white_without_ignore_color_is_an_error(tmp_path):
    images, masks, _ = _tree(tmp_path, np.random.default_rng(3))
    dataset = FolderDataset(images, masks, CLASSES, palette=PALETTE)
    with pytest.raises(ValueError, match=r"c\.png.*\(255, 255, 255\)"):
        dataset.load_raw(2)


def test_colour_mask_without_palette_is_an_error(tmp_path):
    images, masks, _ = _tree(tmp_path, np.random.default_rng(3))
    dataset = FolderDataset(images, masks, CLASSES)
    assert dataset.palette.shape == (3, 3)  # generated, for drawing
    with pytest.raises(ValueError, match=r"c\.png.*palette"):
        dataset.load_raw(2)


def test_image_without_mask_names_the_mask_files(tmp_path):
    images, masks, _ = _tree(tmp_path, np.random.default_rng(3))
    for stem in ("x1", "x2"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(images / f"{stem}.png")
    with pytest.raises(
        FileNotFoundError, match=r"2 mask file\(s\) not found: .*masks/x1.png, .*masks/x2.png"
    ):
        FolderDataset(images, masks, CLASSES)


def test_mask_suffix_and_label_range(tmp_path):
    images, masks = tmp_path / "img", tmp_path / "ann"
    images.mkdir()
    masks.mkdir()
    Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(images / "scene.png")
    labels = np.zeros((6, 7), np.uint8)
    labels[1, 1] = 3  # only classes 0..2 exist
    Image.fromarray(labels, mode="L").save(masks / "scene_mask.png")
    dataset = FolderDataset(images, masks, CLASSES, mask_suffix="_mask")
    with pytest.raises(ValueError, match=r"scene_mask\.png.*\[3\]"):
        dataset.load_raw(0)


def test_missing_folders(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="(?s)mask folder.*data/README.md"):
        FolderDataset(tmp_path / "images", tmp_path / "nomasks", CLASSES)
    with pytest.raises(FileNotFoundError, match="image folder"):
        FolderDataset(tmp_path / "noimages", tmp_path / "images", CLASSES)


def test_a_colour_shared_by_two_classes_or_the_ignore_colour_is_refused(tmp_path):
    """A colour mask's pixels of a shared colour would silently go to one of them; index
    masks are read as they are (there the palette only draws)."""
    images, masks, truth = _tree(tmp_path, np.random.default_rng(3))
    twice = [PALETTE[0], PALETTE[1], PALETTE[1]]
    clash = {"palette": PALETTE, "ignore_color": (0, 200, 0)}
    for options, message in [
        ({"palette": twice}, r"colour \[128, 64, 128\] is given to class 1 and class 2"),
        (clash, r"ignore_color \[0, 200, 0\] is also the palette colour of class 2"),
    ]:
        dataset = FolderDataset(images, masks, CLASSES, **options)
        for index in (0, 1):  # a (grey) and b (palette PNG): index masks
            np.testing.assert_array_equal(dataset.load_raw(index)[1], truth["ab"[index]][1])
        with pytest.raises(ValueError, match=rf"c\.png is a colour mask, but .*{message}"):
            dataset.load_raw(2)


def test_reduce_zero_label_reads_index_masks_and_refuses_colour_ones(tmp_path):
    """Index masks store class c as c + 1 (0: void); a colour mask's colours already name
    the classes, so shifting them would move every pixel to the class before."""
    images, masks, truth = _tree(tmp_path, np.random.default_rng(3))
    dataset = FolderDataset(images, masks, CLASSES[:2], palette=PALETTE[:2], reduce_zero_label=True)
    for index in (0, 1):  # a (grey) and b (palette PNG): stored 1, 2 -> classes 0, 1
        _, mask, name = dataset.load_raw(index)
        stored = truth[name][1]
        expected = np.where((stored == 0) | (stored == 255), 255, stored - 1)
        np.testing.assert_array_equal(mask, expected)
    with pytest.raises(ValueError, match=r"c\.png is a colour mask: .*drop reduce_zero_label"):
        dataset.load_raw(2)


@pytest.mark.parametrize("ignore_index", [-100, 300])
@pytest.mark.parametrize("kind", ["L", "RGB"])
def test_crops_are_padded_with_an_ignore_index_outside_a_byte(tmp_path, ignore_index, kind):
    """An 8-bit mask cannot hold -100 or 300: the padding of a crop bigger than the image
    must still be the ignore value, not class 0 or a stray 255."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(
        tmp_path / "images" / "x.png"
    )
    labels = rng.integers(0, 3, (12, 20)).astype(np.uint8)
    stored = labels if kind == "L" else np.array(PALETTE, np.uint8)[labels]
    Image.fromarray(stored).save(tmp_path / "masks" / "x.png")
    cfg = {
        "name": "folder",
        "images": str(tmp_path / "images"),
        "masks": str(tmp_path / "masks"),
        "classes": CLASSES,
        "ignore_index": ignore_index,
        "crop_size": [24, 32],
        "scale": [1.0, 1.0],
    }
    if kind == "RGB":
        cfg["palette"] = PALETTE
    _, mask = build_dataset(cfg, "train")[0]
    padding = 24 * 32 - 12 * 20  # bottom and right, then maybe flipped
    assert set(mask[12:].unique().tolist()) == {ignore_index}
    assert (mask == ignore_index).sum() == padding
    for label in range(3):
        assert (mask == label).sum() == (labels == label).sum()


def test_an_image_too_small_to_scale_is_named(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((1, 40, 3), np.uint8)).save(tmp_path / "images" / "thin.png")
    Image.fromarray(np.zeros((1, 40), np.uint8)).save(tmp_path / "masks" / "thin.png")
    cfg = {
        "name": "folder",
        "images": str(tmp_path / "images"),
        "masks": str(tmp_path / "masks"),
        "classes": CLASSES,
        "crop_size": 8,
        "scale": [0.5, 0.5],
    }
    with pytest.raises(ValueError, match=r"^sample 'thin' \(40x1\): the data transform failed"):
        build_dataset(cfg, "train")[0]
