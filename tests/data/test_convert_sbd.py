"""tools/convert_sbd.py on a tiny fake SBD release written with scipy.io.savemat."""

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from seg.data import VOCSegmentation


@pytest.fixture(scope="module")
def convert_sbd(load_tool):
    return load_tool("convert_sbd")


def _fake_sbd(root: Path, train, val, shapes, rng) -> dict[str, np.ndarray]:
    dataset = root / "benchmark_RELEASE" / "dataset"
    (dataset / "cls").mkdir(parents=True)
    (dataset / "img").mkdir()
    labels = {}
    for name in list(train) + list(val):
        height, width = shapes[name]
        segmentation = rng.integers(0, 21, (height, width), dtype=np.uint8)
        boundaries = np.zeros((height, width), np.uint8)
        scipy.io.savemat(
            dataset / "cls" / f"{name}.mat",
            {"GTcls": {"Segmentation": segmentation, "Boundaries": boundaries}},
        )
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            dataset / "img" / f"{name}.jpg"
        )
        labels[name] = segmentation
    (dataset / "train.txt").write_text("".join(f"{n}\n" for n in train))
    (dataset / "val.txt").write_text("".join(f"{n}\n" for n in val))
    return labels


def test_convert_sbd_builds_trainaug(make_voc, tmp_path, convert_sbd):
    voc_train, voc_val = ["v_a", "v_b", "v_c"], ["v_d"]
    root, voc_truth = make_voc(train=voc_train, val=voc_val)
    sbd_train, sbd_val = ["v_b", "s_e", "s_f"], ["v_d", "s_g"]
    shapes = {name: voc_truth[name].shape for name in voc_truth}
    shapes.update({"s_e": (10, 14), "s_f": (12, 9), "s_g": (8, 8)})
    sbd_labels = _fake_sbd(tmp_path / "sbd", sbd_train, sbd_val, shapes, np.random.default_rng(5))

    voc_dir = root / "VOCdevkit" / "VOC2012"
    assert convert_sbd.main([str(tmp_path / "sbd" / "benchmark_RELEASE"), str(root)]) == 0

    # (SBD train + val + VOC train) - VOC val, computed by hand.
    expected = ["s_e", "s_f", "s_g", "v_a", "v_b", "v_c"]
    listed = (voc_dir / "ImageSets/Segmentation/trainaug.txt").read_text().split()
    assert sorted(listed) == expected
    aug = voc_dir / "SegmentationClassAug"
    for name in ("s_e", "s_f", "s_g"):
        png = Image.open(aug / f"{name}.png")
        assert png.mode == "P"
        np.testing.assert_array_equal(np.array(png), sbd_labels[name])
        assert (voc_dir / "JPEGImages" / f"{name}.jpg").is_file()  # copied from SBD img/
    # VOC's own masks (with their 255 boundaries) win over SBD's for the same image.
    for name in voc_train + voc_val:
        np.testing.assert_array_equal(np.array(Image.open(aug / f"{name}.png")), voc_truth[name])

    dataset = VOCSegmentation(root, "trainaug")
    assert [sample.name for sample in dataset.samples] == expected
    for index, name in enumerate(expected):
        truth = voc_truth[name] if name in voc_truth else sbd_labels[name]
        np.testing.assert_array_equal(dataset.load_raw(index)[1], truth)


def test_convert_sbd_reports_missing_release(make_voc, tmp_path, convert_sbd, capsys):
    root, _ = make_voc()
    assert convert_sbd.main([str(tmp_path / "no_sbd"), str(root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "benchmark.tgz" in err and err.count("\n") == 1


def test_bad_mat_file_is_named(make_voc, tmp_path, convert_sbd, capsys):
    root, voc_truth = make_voc()
    _fake_sbd(tmp_path / "sbd", ["s_x"], [], {"s_x": (4, 4)}, np.random.default_rng(0))
    mat = tmp_path / "sbd/benchmark_RELEASE/dataset/cls/s_x.mat"
    scipy.io.savemat(mat, {"GTcls": {"Segmentation": np.full((4, 4), 40, np.uint8)}})
    assert convert_sbd.main([str(tmp_path / "sbd"), str(root)]) == 1
    assert re.search(r"s_x\.mat.*0\.\.20", capsys.readouterr().err)


@pytest.mark.parametrize("existing", ["SegmentationClassAug/v_a.png", "trainaug.txt"])
def test_existing_masks_or_list_are_kept_unless_forced(
    make_voc, tmp_path, convert_sbd, capsys, existing
):
    """A downloaded SegmentationClassAug (or an earlier conversion) is not replaced unasked."""
    root, voc_truth = make_voc(train=["v_a"], val=["v_b"])
    _fake_sbd(tmp_path / "sbd", ["s_x"], [], {"s_x": (4, 4)}, np.random.default_rng(0))
    voc_dir = root / "VOCdevkit" / "VOC2012"
    mine = voc_dir / existing if "/" in existing else voc_dir / "ImageSets/Segmentation" / existing
    mine.parent.mkdir(exist_ok=True)
    mine.write_bytes(b"mine")
    args = [str(tmp_path / "sbd"), str(root)]
    assert convert_sbd.main(args) == 1
    err = capsys.readouterr().err
    assert f"{mine.parent if mine.suffix == '.png' else mine} already exist" in err
    assert "--force" in err and mine.read_bytes() == b"mine"
    assert not (voc_dir / "SegmentationClassAug" / "s_x.png").exists()
    assert convert_sbd.main([*args, "--force"]) == 0
    assert mine.read_bytes() != b"mine" and (voc_dir / "SegmentationClassAug/s_x.png").is_file()
