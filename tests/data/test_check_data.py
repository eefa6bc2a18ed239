"""check_dataset / tools/check_data.py find each planted problem and pass clean trees."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seg.data.base import read_image
from seg.data.check import check_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def check_data(load_tool):
    return load_tool("check_data")


def test_clean_voc_passes(make_voc, check_data):
    root, _ = make_voc()
    report = check_dataset("voc", root)
    assert report.ok, report.format()
    assert report.counts == {"train": 2, "val": 1}
    assert check_data.main(["--dataset", "voc", str(root)]) == 0


def test_voc_problems_are_each_named(make_voc, write_palette_png, capsys, check_data):
    root, truth = make_voc(train=["m1", "m2", "m3", "m4", "m5"], val=["v1"])
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "SegmentationClass" / "m1.png").unlink()  # missing mask
    write_palette_png(voc / "SegmentationClass" / "m2.png", np.zeros((3, 3), np.uint8))  # size
    bad = truth["m3"].copy()
    bad[0, 0] = 50
    write_palette_png(voc / "SegmentationClass" / "m3.png", bad)  # unexpected label
    (voc / "JPEGImages" / "m4.jpg").write_bytes(b"not a jpeg")  # unreadable image
    report = check_dataset("voc", root)
    text = "\n".join(report.problems)
    assert not report.ok and len(report.problems) == 4, text
    assert "m1.png does not exist" in text
    assert "m2.png: mask size 3x3 differs" in text
    assert "m3.png: unexpected label values [50]" in text
    assert "m4.jpg" in text and "cannot read" in text
    assert report.counts["train"] == 4  # m1 has no mask
    assert check_data.main(["--dataset", "voc", str(root)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_missing_root_is_a_problem(tmp_path):
    report = check_dataset("voc", tmp_path / "absent")
    assert not report.ok and "absent" in report.problems[0]


def test_cityscapes_clean_and_planted(make_cityscapes):
    root, _ = make_cityscapes()
    report = check_dataset("cityscapes", root)
    assert report.ok, report.format()
    assert report.counts == {"train": 4, "val": 4, "test": 4}
    label = root / "gtFine/val/bonn/bonn_000000_000019_gtFine_labelIds.png"
    ids = np.array(Image.open(label))
    ids[1, 1] = 99
    Image.fromarray(ids, mode="L").save(label)
    (root / "gtFine/train/aachen/aachen_000001_000020_gtFine_labelIds.png").unlink()
    text = "\n".join(check_dataset("cityscapes", root).problems)
    assert "bonn_000000_000019_gtFine_labelIds.png: unexpected label values [99]" in text
    assert "aachen_000001_000020_gtFine_labelIds.png does not exist" in text


def test_folder_clean_and_planted(tmp_path, check_data):
    (tmp_path / "img").mkdir()
    (tmp_path / "lbl").mkdir()
    for stem in ("p", "q", "r"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / f"{stem}.png")
        Image.fromarray(np.full((8, 8), 2, np.uint8), mode="L").save(
            tmp_path / "lbl" / f"{stem}.png"
        )
    args = ["--dataset", "folder", str(tmp_path), "--images", "img", "--masks", "lbl"]
    assert check_data.main([*args, "--num-classes", "3"]) == 0
    Image.fromarray(np.full((8, 8), 7, np.uint8), mode="L").save(tmp_path / "lbl" / "q.png")
    (tmp_path / "lbl" / "r.png").unlink()
    report = check_dataset("folder", tmp_path, "img", "lbl", num_classes=3)
    text = "\n".join(report.problems)
    assert "q.png: unexpected label values [7]" in text
    assert f"{tmp_path / 'lbl' / 'r.png'} does not exist" in text
    assert check_data.main([*args, "--num-classes", "3"]) == 1
    # Without --num-classes the labels are only reported, not judged.
    report = check_dataset("folder", tmp_path, "img", "lbl")
    assert report.labels_seen == {2, 7}


def test_folder_colour_masks_with_a_palette(tmp_path, capsys, check_data):
    palette = [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    (tmp_path / "img").mkdir()
    (tmp_path / "rgb").mkdir()
    for stem in ("a", "b"):
        Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "img" / f"{stem}.png")
        colours = np.zeros((6, 6, 3), np.uint8)
        colours[:3] = palette[1]
        colours[5, 5] = (255, 255, 255)  # the ignore colour
        Image.fromarray(colours).save(tmp_path / "rgb" / f"{stem}.png")
    args = ["--dataset", "folder", str(tmp_path), "--images", "img", "--masks", "rgb"]
    colour_args = ["--palette", "0,0,0", "128,0,0", "0,128,0", "--ignore-color", "255,255,255"]
    # without a palette a colour mask is a problem that names the flag
    assert check_data.main(args) == 1
    assert "--palette" in capsys.readouterr().out
    assert check_data.main([*args, *colour_args]) == 0
    report = check_dataset(
        "folder", tmp_path, "img", "rgb", palette=palette, ignore_color=(255,) * 3
    )
    assert report.labels_seen == {0, 1, 255}
    stray = np.zeros((6, 6, 3), np.uint8)
    stray[2, 2] = (1, 2, 3)  # in no palette entry
    Image.fromarray(stray).save(tmp_path / "rgb" / "b.png")
    assert check_data.main([*args, *colour_args]) == 1
    assert "b.png" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        check_data.main([*args, "--palette", "1,2"])
    # a colour given twice (or the ignore colour a class's) is a problem, not a traceback
    assert check_data.main([*args, "--palette", "0,0,0", "128,0,0", "128,0,0"]) == 1
    assert "colour [128, 0, 0] is given to class 1 and class 2" in capsys.readouterr().out
    assert check_data.main([*args, *colour_args[:4], "--ignore-color", "128,0,0"]) == 1
    assert "is also the palette colour of class 1" in capsys.readouterr().out
    # reduce_zero_label does not apply to colour masks
    Image.fromarray(colours).save(tmp_path / "rgb" / "b.png")
    assert check_data.main([*args, *colour_args, "--reduce-zero-label"]) == 1
    assert "b.png is a colour mask" in capsys.readouterr().out


def test_script_runs_from_the_command_line(make_voc, check_data):
    # One subprocess only (interpreter start-up dominates); main() covers the exit-0 path.
    root, _ = make_voc()
    (root / "VOCdevkit/VOC2012/SegmentationClass/2007_000001.png").unlink()
    script = REPO / "tools" / "check_data.py"
    result = subprocess.run(
        [sys.executable, str(script), "--dataset", "voc", str(root)], capture_output=True, text=True
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "train: 1 image/mask pairs" in result.stdout
    assert "2007_000001.png" in result.stdout


@pytest.mark.parametrize("dataset", ["coco"])
def test_unknown_dataset(dataset, tmp_path):
    with pytest.raises(ValueError, match="voc, cityscapes, camvid, folder"):
        check_dataset(dataset, tmp_path)


def test_voc_missing_jpeg_is_named_as_the_image(make_voc):
    root, _ = make_voc(train=["m1", "m2"], val=["v1"])
    (root / "VOCdevkit/VOC2012/JPEGImages/m1.jpg").unlink()
    text = "\n".join(check_dataset("voc", root).problems)
    assert "JPEGImages/m1.jpg does not exist" in text
    assert "SegmentationClass/m1.png" not in text


def test_cityscapes_checks_the_splits_that_exist(make_cityscapes):
    root, _ = make_cityscapes(splits=("train", "val"))
    report = check_dataset("cityscapes", root)
    assert report.counts == {"train": 4, "val": 4}
    assert len(report.problems) == 1 and report.problems[0].startswith("test: ")
    assert "leftImg8bit/test" in report.problems[0]


def _folder_tree(tmp_path, stems, mask_suffix=""):
    (tmp_path / "img").mkdir()
    (tmp_path / "lbl").mkdir()
    for stem in stems:
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / stem)
        mask = tmp_path / "lbl" / f"{Path(stem).stem}{mask_suffix}.png"
        Image.fromarray(np.full((8, 8), 1, np.uint8)).save(mask)


def test_folder_duplicate_stems_are_listed_not_a_crash(tmp_path):
    _folder_tree(tmp_path, ["a.png", "a.jpg", "b.png"])
    report = check_dataset("folder", tmp_path, "img", "lbl", num_classes=2)
    assert report.problems == ["images share the stem 'a' (one mask): a.jpg, a.png"]
    assert report.counts == {"all": 2}


def test_folder_mask_suffix_and_ignore_index(tmp_path, check_data):
    _folder_tree(tmp_path, ["a.png", "b.png"], mask_suffix="_L")
    args = ["--dataset", "folder", str(tmp_path), "--images", "img", "--masks", "lbl"]
    assert check_data.main([*args, "--num-classes", "2", "--mask-suffix", "_L"]) == 0
    assert check_data.main([*args, "--num-classes", "2"]) == 1  # a.png, b.png not found
    void = np.full((8, 8), 1, np.uint8)
    void[0] = 11
    Image.fromarray(void).save(tmp_path / "lbl" / "a_L.png")
    assert check_data.main([*args, "--num-classes", "2", "--mask-suffix", "_L"]) == 1
    assert (
        check_data.main(
            [*args, "--num-classes", "2", "--mask-suffix", "_L", "--ignore-index", "11"]
        )
        == 0
    )


def test_equal_channel_rgb_and_la_masks_are_index_masks(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "lbl").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "b.png")
    Image.fromarray(np.full((8, 8, 3), 2, np.uint8)).save(tmp_path / "lbl" / "a.png")
    la = np.stack([np.full((8, 8), 1, np.uint8), np.full((8, 8), 255, np.uint8)], -1)
    Image.fromarray(la, mode="LA").save(tmp_path / "lbl" / "b.png")
    report = check_dataset("folder", tmp_path, "img", "lbl", num_classes=3)
    assert report.ok, report.format()
    assert report.labels_seen == {1, 2}


def test_a_damaged_but_decodable_jpeg_is_named(make_voc):
    root, _ = make_voc()
    jpeg = root / "VOCdevkit" / "VOC2012" / "JPEGImages" / "2007_000002.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (*read_image(jpeg).shape[:2], 3))
    Image.fromarray(noise.astype(np.uint8)).save(jpeg, quality=95)  # a long entropy-coded scan
    assert check_dataset("voc", root).ok
    data = bytearray(jpeg.read_bytes())
    for index in range(len(data) // 2, len(data) // 2 + 40, 3):  # flipped bytes mid-scan
        data[index] ^= 0xFF
    jpeg.write_bytes(bytes(data))
    read_image(jpeg)  # still decodes: only the decoder's warnings tell
    report = check_dataset("voc", root)
    assert [p for p in report.problems if "damaged JPEG" in p] == [
        p for p in report.problems if "2007_000002.jpg" in p
    ]
    assert len(report.problems) == 1 and "Corrupt JPEG data" in report.problems[0]
