"""What the kernel entry points refuse or pass on, identically to the reference: wrong
channel counts, inconsistent band sizes, NaN, integers, empty batches, foreign predictors."""

from __future__ import annotations

import math

import pytest
import torch

from seg.ops import (
    LiftDownPool1d,
    LiftDownPool2d,
    LiftUpPool2d,
    build_pool_pair,
    lip2d,
    soft_pool1d,
    soft_pool2d,
    soft_pool3d,
)
from seg.ops.lifting import LearnedPredictor

BACKENDS = ["reference", "triton"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    if request.param == "triton":
        return request.getfixturevalue("triton_backend")
    monkeypatch.setenv("SEG_OPS_BACKEND", "reference")
    return "cuda" if torch.cuda.is_available() else "cpu"


def _learned(channels, device, kernel_size=3):
    down = LiftDownPool2d(channels, kernel_size=kernel_size).to(device)
    with torch.no_grad():
        for p in down.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return down


def test_wrong_channel_count_is_a_clear_error(backend):
    down = _learned(3, backend)
    with pytest.raises(ValueError, match="built for 3 channels got 4"):
        down.decompose(torch.randn(1, 4, 6, 6, device=backend))
    bands = down.decompose(torch.randn(1, 3, 6, 6, device=backend))
    wider = bands._replace(
        ll=bands.ll.repeat(1, 2, 1, 1), lh=bands.lh.repeat(1, 2, 1, 1),
        hl=bands.hl.repeat(1, 2, 1, 1), hh=bands.hh.repeat(1, 2, 1, 1),
    )  # fmt: skip
    with pytest.raises(ValueError, match="built for 3 channels got 6"):
        LiftUpPool2d(down)(wider.ll, wider)


def test_band_size_must_match_the_stored_size(backend):
    down = _learned(2, backend)
    bands = down.decompose(torch.randn(1, 2, 6, 6, device=backend))  # 3x3 bands
    for size in ((7, 7), (4, 6), (6, 3)):
        with pytest.raises(ValueError, match=rf"cannot come from size \({size[0]}, {size[1]}\)"):
            LiftUpPool2d(down)(bands.ll, bands._replace(size=size))
    assert LiftUpPool2d(down)(bands.ll, bands._replace(size=(5, 6))).shape[-2:] == (5, 6)


def test_nan_comes_out_nan_on_every_op(backend):
    x = torch.randn(1, 3, 6, 6, device=backend)
    x[0, :, 2, 2] = math.nan
    down = _learned(3, backend)
    bands = down.decompose(x)
    for name, band in zip(("ll", "lh", "hl", "hh"), bands[:4]):
        assert band.isnan().any(), name
    assert LiftUpPool2d(down)(bands.ll, bands).isnan().any()
    assert soft_pool2d(x, 2).isnan().any()
    assert lip2d(x, torch.zeros_like(x)).isnan().any()


def test_integer_inputs_are_refused_on_every_op(backend):
    ints = torch.ones(1, 2, 4, 4, dtype=torch.int64, device=backend)
    down = _learned(2, backend)
    calls = {
        "lift_down2d": lambda: down(ints),
        "lift_down1d": lambda: LiftDownPool1d(2).to(backend)(ints[:, :, 0]),
        "soft_pool1d": lambda: soft_pool1d(ints[:, :, 0]),
        "soft_pool2d": lambda: soft_pool2d(ints),
        "soft_pool3d": lambda: soft_pool3d(ints[:, :, None]),
        "lip2d": lambda: lip2d(ints, ints.float()),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=f"{name} expects a floating-point tensor"):
            call()
    bands = down.decompose(ints.float())
    with pytest.raises(TypeError, match="LiftUpPool expects a floating-point tensor"):
        LiftUpPool2d(down)(bands.ll.long(), bands)


def test_empty_batches_agree_with_the_reference(backend, monkeypatch):
    empty = torch.zeros(0, 3, 6, 5, device=backend)
    down = _learned(3, backend)
    results = {
        "lift": down(empty).shape,
        "soft": soft_pool2d(empty, 2).shape,
        "lip": lip2d(empty, empty).shape,
    }
    monkeypatch.setenv("SEG_OPS_BACKEND", "reference")
    assert results == {
        "lift": down(empty).shape,
        "soft": soft_pool2d(empty, 2).shape,
        "lip": lip2d(empty, empty).shape,
    }
    assert results["lift"] == (0, 3, 3, 3)


def test_predictor_the_kernel_does_not_implement_goes_to_the_reference(backend, monkeypatch):
    down = _learned(3, backend)
    wide = LearnedPredictor(3, kernel_size=5).to(backend)
    with torch.no_grad():
        for p in wide.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    down.predict_h = wide  # swapped in: the layer still says kernel_size=3
    x = torch.randn(2, 3, 7, 9, device=backend)
    got = down.decompose(x)
    monkeypatch.setenv("SEG_OPS_BACKEND", "reference")
    expected = down.decompose(x)
    for a, b in zip(got[:4], expected[:4]):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("output", ["LL", "sum"])
def test_lift_pair_is_exact_for_either_output(backend, output):
    pair = build_pool_pair("lift", "lift", channels=3, output=output).to(backend).double()
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, device=backend)
    y, skip = pair.down(x)
    torch.testing.assert_close(pair.up(y, skip), x, atol=1e-9, rtol=0)
    down = LiftDownPool1d(3, output=output).double().to(backend)
    from seg.ops import LiftUpPool1d

    line = torch.randn(2, 3, 9, dtype=torch.float64, device=backend)
    torch.testing.assert_close(LiftUpPool1d(down)(down(line), down.decompose(line)), line)
