"""Sliding-window / TTA inference against whole-image truths; atomic, weights-only checkpoints."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from seg.engine import checkpoint as ckpt
from seg.engine.inference import predict, slide_logits, window_starts


@pytest.mark.parametrize("length, crop, stride", [(10, 4, 3), (7, 7, 2), (5, 8, 3), (100, 32, 21)])
def test_windows_cover_every_pixel_and_stay_inside(length, crop, stride):
    starts = window_starts(length, crop, stride)
    covered = np.zeros(length, bool)
    for start in starts:
        assert 0 <= start and start + min(crop, length) <= length
        covered[start : start + crop] = True
    assert covered.all()
    assert starts == sorted(set(starts))


def test_slide_equals_whole_for_a_pointwise_model():
    # A 1x1 conv sees one pixel at a time: any tiling gives the whole-image logits.
    torch.manual_seed(0)
    model = nn.Conv2d(3, 5, 1)
    images = torch.randn(2, 3, 23, 31)
    whole = model(images)
    for crop, stride in (((8, 8), (5, 6)), ((23, 10), (1, 7)), ((40, 40), (10, 10))):
        torch.testing.assert_close(slide_logits(model, images, crop, stride), whole)
    probs = predict(model, images, mode="slide", crop_size=(8, 8))
    torch.testing.assert_close(probs, whole.softmax(1))


def test_slide_averages_overlapping_windows():
    # A model that outputs the window's mean colour: overlap counts weigh each window.
    class WindowMean(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3), keepdim=True).expand(-1, -1, *x.shape[-2:])

    images = torch.arange(6.0).reshape(1, 1, 1, 6)
    out = slide_logits(WindowMean(), images, (1, 4), (1, 2))  # windows [0:4] and [2:6]
    expected = torch.tensor([1.5, 1.5, 2.5, 2.5, 3.5, 3.5]).reshape(1, 1, 1, 6)
    torch.testing.assert_close(out, expected)


def test_flip_tta_averages_the_mirrored_view():
    model = nn.Conv2d(3, 4, 3, padding=1)
    images = torch.randn(1, 3, 9, 12)
    expected = (model(images).softmax(1) + model(images.flip(-1)).flip(-1).softmax(1)) / 2
    torch.testing.assert_close(predict(model, images, tta="flip"), expected)


def test_multi_scale_returns_the_input_size_and_equals_whole_at_scale_one():
    model = nn.Conv2d(3, 4, 1)
    images = torch.randn(2, 3, 17, 20)
    probs = predict(model, images, tta="ms", scales=(0.5, 1.0, 1.5))
    assert probs.shape == (2, 4, 17, 20)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 17, 20))
    single = predict(model, images, tta="ms", scales=(1.0,))
    torch.testing.assert_close(single, predict(model, images, tta="flip"))


def test_predict_rejects_unknown_modes():
    model = nn.Conv2d(3, 2, 1)
    with pytest.raises(ValueError, match="mode must be"):
        predict(model, torch.randn(1, 3, 4, 4), mode="tiles")
    with pytest.raises(ValueError, match="needs crop_size"):
        predict(model, torch.randn(1, 3, 4, 4), mode="slide")


def test_checkpoint_loads_weights_only_with_rng_states(tmp_path):
    model = nn.Linear(3, 2)
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    state = {"model": model.state_dict(), "iteration": 3, "rng": ckpt.rng_state(), "config": {}}
    expected = (random.random(), np.random.rand(), torch.rand(1))
    path = ckpt.save_checkpoint(state, tmp_path / "last.pt")
    loaded = torch.load(path, weights_only=True)
    torch.testing.assert_close(loaded["model"]["weight"], model.weight.detach())
    ckpt.set_rng_state(loaded["rng"])
    assert (random.random(), np.random.rand()) == expected[:2]
    torch.testing.assert_close(torch.rand(1), expected[2])
    assert ckpt.find_latest(tmp_path) == path


def test_cuda_generator_state_is_the_current_gpus(monkeypatch):
    """What is saved and restored is the current GPU's state: a run saved on two GPUs
    resumes on one (an older checkpoint's list of every GPU's state too)."""
    states = {0: torch.tensor([1], dtype=torch.uint8), 1: torch.tensor([2], dtype=torch.uint8)}
    restored: list = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(
        torch.cuda,
        "get_rng_state",
        lambda device="cuda": states[1 if device == "cuda" else torch.device(device).index],
    )
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append(state)
    )
    state = ckpt.rng_state()
    assert torch.equal(state["cuda"], states[1])
    ckpt.set_rng_state(state)
    # Older checkpoints: every GPU's state as rank 0 saw them; rank 0 drew from the first.
    ckpt.set_rng_state({**state, "cuda": [states[0], states[1]]})
    ckpt.set_rng_state({**state, "cuda": [states[0]]})
    assert [t.item() for t in restored] == [2, 1, 1]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = ckpt.save_checkpoint({"iteration": 1}, tmp_path / "last.pt")

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint({"iteration": 2}, path)
    assert ckpt.load_checkpoint(path)["iteration"] == 1
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_text_write_is_atomic(tmp_path, monkeypatch):
    """metrics.json: a reader or a crash sees the old text or the new, never a part."""
    path = ckpt.write_text_atomic(tmp_path / "metrics.json", '{"mIoU": 0.5}')
    assert path.read_text() == '{"mIoU": 0.5}'
    seen = []
    real_replace = os.replace

    def replace(src, dst):  # what a reader sees just before the rename
        seen.append((Path(dst).read_text(), Path(src).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    ckpt.write_text_atomic(path, '{"mIoU": 0.75}')
    assert seen == [('{"mIoU": 0.5}', '{"mIoU": 0.75}')] and path.read_text() == '{"mIoU": 0.75}'
    with pytest.raises(UnicodeEncodeError):  # fails while writing: the old text stays
        ckpt.write_text_atomic(path, "\ud800")
    assert path.read_text() == '{"mIoU": 0.75}'
    assert list(tmp_path.iterdir()) == [path]


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ckpt.load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="may be truncated"):
        ckpt.load_checkpoint(tmp_path / "bad.pt")
