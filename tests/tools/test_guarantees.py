"""The tools' promises under odd inputs: nothing an input holds is overwritten, nothing is
scored on the wrong thing, and every user error ends in one line and exit code 2 (1 for
what could not be done)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from seg.config import config_from_dict
from seg.data.base import read_image
from seg.engine import load_checkpoint, load_for_inference, train
from seg.engine.inference import slide_logits


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_raw):
    work_dir = tmp_path_factory.mktemp("run")
    raw = tiny_raw(
        train={"iters": 2, "val_interval": 0, "num_vis": 0},
        output={"work_dir": str(work_dir), "progress": False, "tensorboard": False},
    )
    train(config_from_dict(raw))
    return work_dir / "last.pt"


@pytest.fixture(scope="module")
def infer(load_tool):
    return load_tool("infer").main


@pytest.fixture(scope="module")
def evaluate(load_tool):
    return load_tool("eval").main


def _image(path, size=(20, 28), seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def test_infer_never_writes_over_its_inputs(tmp_path, checkpoint, infer, capsys):
    photos = tmp_path / "photos"
    cat = _image(photos / "cat.jpg")
    inner = _image(photos / "a" / "cat.png", seed=1)
    before = inner.read_bytes()
    assert infer([str(checkpoint), str(photos), "--out", str(photos)]) == 2
    assert "is the input folder" in capsys.readouterr().err
    # the glob's inputs share photos/: cat.jpg's label would be OUT/cat.png, which with
    # --out photos/a is the input photos/a/cat.png
    spec = str(photos / "**" / "cat.*")
    assert infer([str(checkpoint), spec, "--out", str(photos / "a")]) == 2
    assert "would overwrite an input image" in capsys.readouterr().err
    assert inner.read_bytes() == before
    assert sorted(photos.rglob("*")) == [inner.parent, inner, cat]


def test_infer_keeps_outputs_of_same_named_inputs_apart(tmp_path, checkpoint, infer, capsys):
    _image(tmp_path / "in" / "a" / "x.png", seed=1)
    _image(tmp_path / "in" / "b" / "x.png", seed=2)
    assert (
        infer(
            [str(checkpoint), str(tmp_path / "in" / "*" / "x.png"), "--out", str(tmp_path / "o1")]
        )
        == 0
    )
    assert "wrote 2 label PNG(s)" in capsys.readouterr().out
    assert sorted(
        p.relative_to(tmp_path / "o1").as_posix() for p in (tmp_path / "o1").rglob("*.png")
    ) == ["a/x.png", "b/x.png"]
    same = tmp_path / "same"
    _image(same / "x.png", seed=3)
    Image.open(same / "x.png").convert("RGB").save(same / "x.jpg")
    assert infer([str(checkpoint), str(same), "--out", str(tmp_path / "o2"), "--overlay"]) == 0
    assert "wrote 2 label PNG(s)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "o2").glob("*.png")) == ["x_jpg.png", "x_png.png"]
    assert len(list((tmp_path / "o2" / "overlays").glob("*.jpg"))) == 2


def test_infer_refuses_its_inputs_folder_and_names_that_would_share_an_output(
    tmp_path, checkpoint, infer, capsys
):
    photos = tmp_path / "photos"
    _image(photos / "cat.jpg")
    dog = _image(photos / "cat.png", seed=1)  # not among a *.jpg glob's inputs, still kept
    before = dog.read_bytes()
    assert infer([str(checkpoint), str(photos / "*.jpg"), "--out", str(photos)]) == 2
    assert infer([str(checkpoint), str(photos / "cat.jpg"), "--out", str(photos)]) == 2
    assert capsys.readouterr().err.count("is the input folder") == 2
    assert dog.read_bytes() == before
    # x.jpg and x.png become x_jpg / x_png: a third image already named x_jpg.png clashes
    same = tmp_path / "same"
    for name, seed in (("x.jpg", 2), ("x.png", 3), ("x_jpg.png", 4)):
        _image(same / name, seed=seed)
    assert infer([str(checkpoint), str(same), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "would both be written to" in err and "x_jpg.png" in err
    assert not (tmp_path / "o").exists()


def test_high_bit_depth_images_are_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 48, dtype=np.float64).reshape(6, 8)
    Image.fromarray(ramp.astype(np.uint16)).save(tmp_path / "deep.png")
    expected = np.round(ramp.astype(np.uint16) * 255.0 / 65535.0).astype(np.uint8)
    image = read_image(tmp_path / "deep.png")
    assert image.shape == (6, 8, 3) and np.array_equal(image[..., 1], expected)
    assert len(np.unique(image)) > 40  # a gradient, not black and white
    unit = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    Image.fromarray(unit).save(tmp_path / "float.tif")
    assert np.array_equal(read_image(tmp_path / "float.tif")[..., 0], np.round(unit * 255))
    Image.fromarray(unit * 7).save(tmp_path / "hdr.tif")
    with pytest.raises(ValueError, match=r"hdr.tif: a float image must hold values in \[0, 1\]"):
        read_image(tmp_path / "hdr.tif")


def test_exif_orientation_is_applied_on_read(tmp_path):
    stored = np.zeros((10, 30, 3), dtype=np.uint8)
    stored[:, :10] = 255  # white on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": what phones write for portrait shots
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    raw = np.asarray(Image.open(tmp_path / "phone.jpg").convert("RGB"))
    shown = read_image(tmp_path / "phone.jpg")
    assert shown.shape == (30, 10, 3)
    assert np.array_equal(shown, np.rot90(raw, k=-1))  # clockwise: white on top
    assert shown[:10].mean() > 200 and shown[20:].mean() < 50


def test_eval_checks_its_output_folder_before_the_work(tmp_path, checkpoint, evaluate, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert evaluate([str(checkpoint), "--out", str(blocker / "results")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "choose another --out" in err and "a_file" in err


def test_eval_refuses_a_data_set_of_another_class_count(tmp_path, checkpoint, evaluate, capsys):
    cfg = load_checkpoint(checkpoint)["config"]
    cfg["data"]["num_classes"] = cfg["model"]["num_classes"] = 6
    path = tmp_path / "six.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert evaluate([str(checkpoint), "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "predicts 4 classes" in capsys.readouterr().err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_eval_scores_with_the_checkpoints_classes_whatever_the_config_says(
    tmp_path, checkpoint, evaluate
):
    import json

    assert evaluate([str(checkpoint), "--out", str(tmp_path / "a")]) == 0
    # the model comes from the checkpoint: a class count set on the command line changes
    # neither it nor the matrix it is scored with
    args = [str(checkpoint), "--set", "model.num_classes=6", "--out", str(tmp_path / "b")]
    assert evaluate(args) == 0
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in "ab")
    assert len(b["confusion_matrix"]) == 4 and b["confusion_matrix"] == a["confusion_matrix"]
    assert b["mIoU"] == a["mIoU"]


def test_unknown_split_is_an_error(tmp_path, checkpoint, evaluate, capsys):
    assert evaluate([str(checkpoint), "--split", "tset", "--out", str(tmp_path / "o")]) == 2
    assert "did you mean 'test'" in capsys.readouterr().err


def test_what_is_not_a_liftseg_checkpoint_is_named(tmp_path, checkpoint, evaluate, infer, capsys):
    state = load_checkpoint(checkpoint)
    torch.save(state["model"], tmp_path / "bare.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"state_dict": state["model"], "epoch": 3}, tmp_path / "other.pt")
    image = _image(tmp_path / "images" / "a.png")
    assert infer([str(tmp_path / "bare.pt"), str(image), "--out", str(tmp_path / "o")]) == 1
    assert "bare state_dict" in capsys.readouterr().err
    for name, words in (("tensor.pt", "a Tensor"), ("other.pt", "'epoch', 'state_dict'")):
        assert evaluate([str(tmp_path / name), "--out", str(tmp_path / "o")]) == 1
        err = capsys.readouterr().err
        assert words in err and "not a liftseg checkpoint" in err and "Traceback" not in err
    # A bare state_dict with the config it was trained with evaluates like the checkpoint.
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(state["config"]))
    assert (
        evaluate([str(tmp_path / "bare.pt"), "--config", str(config), "--out", str(tmp_path / "b")])
        == 0
    )
    assert evaluate([str(checkpoint), "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "b" / "metrics.md").read_text() == (
        tmp_path / "c" / "metrics.md"
    ).read_text()


def test_loading_a_checkpoint_never_fetches_encoder_weights(tmp_path, checkpoint):
    state = load_checkpoint(checkpoint)
    state["config"]["model"]["encoder_weights"] = str(tmp_path / "gone" / "vgg16_bn.pth")
    torch.save(state, tmp_path / "pretrained.pt")
    model, _, _ = load_for_inference(tmp_path / "pretrained.pt")
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["model"][key]), key


def test_slide_windows_further_apart_than_their_size_are_refused():
    model = torch.nn.Conv2d(3, 2, 1)
    with pytest.raises(ValueError, match="pixels between windows would get no prediction"):
        slide_logits(model, torch.zeros(1, 3, 20, 20), crop_size=8, stride=10)


def test_eval_and_infer_do_not_load_the_trainer():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = (
        "import importlib.util, sys\n"
        "for name in ('eval', 'infer'):\n"
        "    spec = importlib.util.spec_from_file_location(name, f'tools/{name}.py')\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print('seg.engine.trainer' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
