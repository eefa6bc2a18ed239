"""tools/train.py, eval.py and infer.py through their real command lines, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seg.engine import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "segnet_vgg16x0.25-lift-lift_synthetic-128x128_2k.yaml"
SMALL = [
    "model.width=0.0625",
    "model.depth=3",
    "data.size=32",
    "data.crop_size=32",
    "data.num_samples={train: 16, val: 5, test: 3}",
    "train.batch_size=2",
    "train.workers=0",
    "train.iters=4",
    "train.val_interval=2",
    "train.ckpt_interval=2",
    "train.log_interval=1",
    "train.warmup_iters=0",
    "eval.workers=0",
    "eval.batch_size=2",
    "output.progress=false",
]


def run_tool(*args, env=None, check=True, **kwargs):
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    result = subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("run")
    run_tool("tools/train.py", CONFIG, "--work-dir", work_dir, "--set", *SMALL)
    return work_dir


@pytest.mark.slow
def test_train_writes_checkpoints_logs_and_tensorboard(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for name in ("last.pt", "best.pt", "config.yaml", "train.log", "metrics.json", "metrics.md"):
        assert (trained / name).is_file(), name
    assert load_checkpoint(trained / "last.pt")["iteration"] == 4
    events = EventAccumulator(str(trained / "tb"), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "train/loss", "train/loss_ce", "train/loss_reg_u", "train/loss_reg_p", "train/lr",
        "train/images_per_s", "val/mIoU", "val/mBIoU", "val/mAcc", "val/aAcc",
        "val_IoU/background",
    } <= scalars  # fmt: skip
    assert [e.step for e in events.Scalars("val/mIoU")] == [2, 4]
    assert len(events.Scalars("train/lr")) == 4
    assert {"val/sample_0", "val/sample_1"} <= set(events.Tags()["images"])
    picture = events.Images("val/sample_0")[-1]
    assert picture.width == 3 * 32 + 8 and picture.height == 32
    metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("mIoU", "mAcc", "aAcc", "mBIoU"):
        assert 0.0 <= metrics[key] <= 1.0
    assert len(metrics["classes"]) == len(metrics["IoU"]) == len(metrics["BIoU"]) == 8


@pytest.mark.slow
def test_eval_reproduces_training_validation_and_writes_json(trained, tmp_path):
    result = run_tool("tools/eval.py", trained / "last.pt", "--out", tmp_path)
    assert "| mIoU |" in result.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    final = json.loads((trained / "metrics.json").read_text())
    assert metrics["confusion_matrix"] == final["confusion_matrix"]
    assert metrics["mIoU"] == pytest.approx(final["mIoU"])
    assert (tmp_path / "metrics.md").read_text().startswith("| mIoU |")
    for option in (["--tta", "flip"], ["--mode", "slide", "--set", "eval.crop_size=[24,24]"]):
        out = tmp_path / option[1]
        run_tool("tools/eval.py", trained / "best.pt", "--split", "test", "--out", out, *option)
        assert json.loads((out / "metrics.json").read_text())["num_images"] == 3


@pytest.mark.slow
def test_infer_writes_palette_pngs_at_the_input_size(trained, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), np.uint8)).save(images / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(images / "b.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    result = run_tool(
        "tools/infer.py", trained / "best.pt", images, "--out", out, "--overlay", check=False
    )
    assert result.returncode == 1
    assert "broken.jpg" in result.stderr
    label = Image.open(out / "a.png")
    assert label.mode == "P" and label.size == (53, 37)
    assert np.asarray(label).max() < 8
    assert Image.open(out / "b.png").size == (32, 32)
    assert Image.open(out / "overlays" / "a.jpg").size == (53, 37)
    # The label PNG holds what the model predicts for that image.
    from seg.data import build_val_transform
    from seg.data.base import read_image
    from seg.engine import load_for_inference, predict

    model, _, meta = load_for_inference(trained / "best.pt")
    image = build_val_transform(meta["mean"], meta["std"])(image=read_image(images / "a.jpg"))
    expected = predict(model, image["image"][None]).argmax(1)[0].numpy()
    np.testing.assert_array_equal(np.asarray(label), expected)
    glob_result = run_tool(
        "tools/infer.py", trained / "best.pt", str(images / "*.png"), "--out", tmp_path / "g"
    )
    assert "wrote 1 label PNG" in glob_result.stdout


@pytest.mark.slow
def test_sigterm_saves_and_says_how_to_resume(tmp_path):
    work_dir = tmp_path / "run"
    args = [*SMALL, "train.iters=2000", "train.val_interval=0", "train.ckpt_interval=0"]
    process = subprocess.Popen(
        [
            sys.executable,
            "tools/train.py",
            str(CONFIG),
            "--work-dir",
            str(work_dir),
            "--set",
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = work_dir / "train.log"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and "iter 3/" in log.read_text()):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    assert "Resume with: python tools/train.py" in stderr and "--resume" in stderr
    state = load_checkpoint(work_dir / "last.pt")
    assert 3 <= state["iteration"] < 2000


@pytest.mark.slow
def test_config_errors_exit_2_and_missing_data_1_with_the_message(tmp_path):
    result = run_tool("tools/train.py", CONFIG, "--set", "train.lrr=0.1", check=False)
    assert result.returncode == 2
    assert "train: unknown key 'lrr'; did you mean 'lr'?" in result.stderr
    assert "Traceback" not in result.stderr
    voc = ROOT / "configs" / "segnet_vgg16-lift-lift_voc12aug-512x512_20k.yaml"
    missing = run_tool(
        "tools/train.py",
        voc,
        "--set",
        f"data.root={tmp_path}/voc",
        "--work-dir",
        tmp_path / "w",
        check=False,
    )
    assert missing.returncode == 1
    assert "not found" in missing.stderr and "data/README.md" in missing.stderr


def _torchrun(*args, **kwargs):
    return run_tool(
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args, **kwargs
    )


@pytest.mark.slow
def test_torchrun_eval_counts_every_image_once(trained, tmp_path):
    # 5 validation images on 2 processes: 3 + 2, and the same confusion matrix as 1 process.
    _torchrun("tools/eval.py", trained / "last.pt", "--out", tmp_path / "two", "--device", "cpu")
    run_tool("tools/eval.py", trained / "last.pt", "--out", tmp_path / "one", "--device", "cpu")
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert two["num_images"] == one["num_images"] == 5
    assert two["confusion_matrix"] == one["confusion_matrix"]
    assert sum(map(sum, one["confusion_matrix"])) == 5 * 32 * 32


@pytest.mark.slow
def test_torchrun_eval_refusal_stops_every_process_cleanly(trained, tmp_path):
    # The main process refuses to replace another evaluation; the other process learns it
    # from the main one and stops too, instead of dying on a closed connection mid-eval.
    out = tmp_path / "earlier"
    run_tool("tools/eval.py", trained / "last.pt", "--out", out, "--split", "test")
    earlier = (out / "metrics.json").read_text()
    refused = _torchrun(
        "tools/eval.py", trained / "last.pt", "--out", out, "--device", "cpu", check=False
    )
    assert refused.returncode != 0
    assert refused.stderr.count("holds an earlier evaluation") == 1
    assert "Connection closed" not in refused.stderr
    assert "exitcode  : 2" in refused.stderr and "exitcode  : 1" not in refused.stderr
    assert (out / "metrics.json").read_text() == earlier


@pytest.mark.slow
def test_torchrun_training_runs_and_writes_one_checkpoint(tmp_path):
    work_dir = tmp_path / "ddp"
    _torchrun(
        "tools/train.py",
        CONFIG,
        "--work-dir",
        work_dir,
        "--device",
        "cpu",
        "--set",
        *SMALL,
        "train.iters=3",
        "train.ckpt_interval=0",
        "train.val_interval=0",
    )
    checkpoints = sorted(p.name for p in work_dir.glob("*.pt"))
    assert checkpoints == ["best.pt", "last.pt"]
    assert load_checkpoint(work_dir / "last.pt")["iteration"] == 3
    assert not list(work_dir.glob(".*.tmp"))
    assert "on 2 process(es)" in (work_dir / "train.log").read_text()
    assert torch.load(work_dir / "last.pt", weights_only=True)["config"]["train"]["iters"] == 3


@pytest.mark.slow
def test_torchrun_training_stops_every_process_when_the_main_one_cannot_write(tmp_path):
    # Only the main process writes the work dir; when it cannot, every process stops with
    # it, and what is said is the main process's reason, not a closed connection.
    (tmp_path / "file").write_text("a file, not a folder")
    stopped = _torchrun(
        "tools/train.py", CONFIG, "--work-dir", tmp_path / "file" / "run", "--device", "cpu",
        "--set", *SMALL, "train.iters=2", check=False,
    )  # fmt: skip
    assert stopped.returncode != 0
    assert stopped.stderr.count("cannot write the run into --work-dir") == 1
    assert "the main process stopped" in stopped.stderr
    assert "Connection" not in stopped.stderr


@pytest.mark.slow
def test_demo_compares_evaluates_and_predicts(tmp_path):
    small = [s for s in SMALL if not s.startswith(("train.iters", "train.val", "train.ckpt"))]
    result = run_tool(
        "tools/demo.py", "--out", tmp_path, "--iters", "2", "--images", "2", "--set", *small
    )
    assert "$ python tools/compare.py --study studies/synthetic.yaml" in result.stdout
    for variant in ("lift/lift", "max/maxunpool", "max/bilinear"):
        assert f"| {variant} | 1/1 |" in result.stdout
    assert "| mIoU |" in result.stdout and "$ python tools/eval.py" in result.stdout
    assert (tmp_path / "compare" / "runs" / "lift-lift" / "seed0" / "last.pt").is_file()
    assert (
        load_checkpoint(tmp_path / "compare" / "runs" / "max-bilinear" / "seed0" / "last.pt")[
            "config"
        ]["model"]["up"]
        == "bilinear"
    )
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["num_images"] == 3
    assert len(list((tmp_path / "predictions").glob("*.png"))) == 2
    assert len(list((tmp_path / "predictions" / "overlays").glob("*.jpg"))) == 2
    picture = Image.open(tmp_path / "demo_predictions.png")
    assert picture.size == (4 * 32 + 12, 2 * 32 + 4)
