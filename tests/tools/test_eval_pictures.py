"""tools/eval.py draws confusion_matrix.png and per_class.png beside metrics.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from seg.engine.visualize import draw_confusion_matrix, draw_per_class, row_normalised

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_config, load_tool):
    work_dir = tmp_path_factory.mktemp("run")
    assert load_tool("train").main([str(tiny_config), "--work-dir", str(work_dir)]) == 0
    return work_dir / "last.pt"


def _check_png(path, min_side: int) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    assert path.stat().st_size > 5_000, path  # drawn, not an empty canvas
    with Image.open(path) as picture:
        picture.load()
        assert picture.format == "PNG"
        assert min(picture.size) >= min_side and max(picture.size) < 5_000, picture.size
        assert len(set(np.asarray(picture.convert("L")).reshape(-1).tolist())) > 10
        return picture.size


def test_eval_writes_both_pictures_of_what_metrics_json_holds(
    tmp_path, checkpoint, load_tool, monkeypatch, capsys
):
    eval_tool = load_tool("eval")
    drawn = {}

    def recording(path, matrix, class_names, title="confusion matrix"):
        drawn["matrix"] = draw_confusion_matrix(path, matrix, class_names, title)
        drawn["classes"] = list(class_names)
        return drawn["matrix"]

    monkeypatch.setattr(eval_tool, "draw_confusion_matrix", recording)
    assert eval_tool.main([str(checkpoint), "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert "confusion_matrix.png" in capsys.readouterr().out
    for name in ("metrics.json", "metrics.md", "confusion_matrix.png", "per_class.png"):
        assert (tmp_path / name).is_file(), name
    _check_png(tmp_path / "confusion_matrix.png", min_side=300)
    _check_png(tmp_path / "per_class.png", min_side=250)

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    counts = np.array(metrics["confusion_matrix"], dtype=np.float64)
    expected = counts / counts.sum(axis=1, keepdims=True)  # every class is in the truth here
    assert counts.sum(axis=1).min() > 0
    np.testing.assert_allclose(drawn["matrix"], expected, rtol=1e-12)
    np.testing.assert_allclose(drawn["matrix"].sum(axis=1), 1.0)
    assert drawn["classes"] == metrics["classes"] == ["background", "disc", "ring", "line"]


def test_default_folder_names_the_checkpoint_and_an_earlier_result_is_kept(
    checkpoint, load_tool, capsys
):
    """best.pt and last.pt scored on one split land in two folders; an evaluation of
    something else already there is replaced only with --force; metrics.json says how the
    predictions were made."""
    eval_tool = load_tool("eval")
    out = checkpoint.parent / f"eval_val_{checkpoint.stem}"
    assert eval_tool.main([str(checkpoint), "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"] == {"mode": "whole", "tta": "none", "resize": None}
    assert eval_tool.main([str(checkpoint), "--device", "cpu"]) == 0  # the same one again
    before = (out / "metrics.json").read_bytes()
    flip = [str(checkpoint), "--device", "cpu", "--tta", "flip"]
    assert eval_tool.main(flip) == 2
    err = capsys.readouterr().err
    assert f"{out / 'metrics.json'} holds an earlier evaluation (settings " in err
    assert "'tta': 'none'" in err and "'tta': 'flip'" in err and "pass --force" in err
    assert (out / "metrics.json").read_bytes() == before
    window = ["--mode", "slide", "--set", "eval.crop_size=[24,24]", "eval.stride=[16,16]"]
    assert eval_tool.main([*flip, "--force", *window]) == 0
    settings = json.loads((out / "metrics.json").read_text())["settings"]
    assert settings == {
        "mode": "slide", "crop_size": [24, 24], "stride": [16, 16], "tta": "flip", "resize": None
    }  # fmt: skip
    # metrics of an older eval.py (no settings) of this checkpoint and split, named another
    # way: the same evaluation as far as can be told
    metrics = json.loads((out / "metrics.json").read_text())
    del metrics["settings"]
    (out / "metrics.json").write_text(json.dumps(metrics))
    another_way = checkpoint.parent / ".." / checkpoint.parent.name / checkpoint.name
    assert eval_tool.main([str(another_way), "--device", "cpu"]) == 0


def test_absent_classes_and_many_classes(tmp_path):
    counts = np.zeros((150, 150), dtype=np.int64)
    rng = np.random.default_rng(0)
    counts[:149] = rng.integers(0, 50, (149, 150))
    counts[5, 5] += 1000
    names = [f"class {i}" for i in range(150)]
    shown = draw_confusion_matrix(tmp_path / "cm.png", counts, names)
    assert np.isnan(shown[149]).all()  # absent from the truth: a blank row, not zeros
    np.testing.assert_allclose(shown[:149].sum(axis=1), 1.0)
    np.testing.assert_array_equal(np.isnan(row_normalised(counts)), np.isnan(shown))
    width, height = _check_png(tmp_path / "cm.png", min_side=1_000)
    assert width > height  # the colour bar sits to the right
    iou = [None if i == 149 else float(v) for i, v in enumerate(rng.random(150))]
    draw_per_class(tmp_path / "per_class.png", names, iou, [math_nan_if(v) for v in iou])
    _check_png(tmp_path / "per_class.png", min_side=700)
    with pytest.raises(ValueError, match=r"a \(150, 150\) confusion matrix for 3 class names"):
        draw_confusion_matrix(tmp_path / "bad.png", counts, names[:3])


def math_nan_if(value):
    """A Boundary IoU as the evaluator returns it: NaN where the IoU is absent (None)."""
    return float("nan") if value is None else value / 2
