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


def _huge_stride_view(shape, channel_stride, dtype=torch.float16):
    """[N, C, H, W] view whose channel stride is huge: offsets pass 2^31 while the tensor is
    tiny (the storage is allocated lazily: only the touched pages become memory)."""
    n, c, h, w = shape
    storage = torch.empty(channel_stride * c + h * w, dtype=dtype)
    view = storage.as_strided(shape, (0, channel_stride, w, 1))
    view.copy_(torch.randn(shape))
    return view


@pytest.mark.parametrize("predictor", ["learned", "haar"])
def test_offsets_past_2_31_are_int64(triton_backend, predictor, monkeypatch):
    if triton_backend != "cpu":
        pytest.skip("the GPU run has its own large-tensor test")
    x = _huge_stride_view((1, 3, 2, 4), 2**30).requires_grad_()
    down = LiftDownPool2d(3, predictor=predictor)
    if predictor == "learned":
        randomise_(down)
    bands = down.decompose(x)
    grads_out = [torch.randn_like(b) for b in bands[:4]]
    grad = torch.autograd.grad(sum((g * b).sum() for g, b in zip(grads_out, bands[:4])), x)[0]
    up_in = _huge_stride_view((1, 3, 1, 2), 2**30)
    out = LiftUpPool2d(down)(up_in, bands)
    monkeypatch.setenv("SEG_OPS_BACKEND", "reference")
    small = x.detach().float().contiguous().requires_grad_()
    ref = down.decompose(small)
    ref_grad = torch.autograd.grad(
        sum((g.float() * b).sum() for g, b in zip(grads_out, ref[:4])), small
    )[0]
    for band, expected in zip(bands[:4], ref[:4]):
        torch.testing.assert_close(band.float(), expected, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(grad.float(), ref_grad, atol=2e-2, rtol=2e-2)
    ref_out = LiftUpPool2d(down)(up_in.float().contiguous(), ref)
    torch.testing.assert_close(out.float(), ref_out, atol=2e-2, rtol=2e-2)


def randomise_(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


class _GridSpy:
    """Stands in for a Triton kernel: records each launch grid, then launches."""

    def __init__(self, kernel, grids):
        self.kernel, self.grids = kernel, grids

    def __getitem__(self, grid):
        self.grids.append(tuple(grid))
        return self.kernel[grid]


def test_batch_axis_of_the_grid_stays_within_the_limit(triton_backend, monkeypatch):
    import seg.ops.triton.lifting as kernels

    down = _learned(3, triton_backend)
    x = torch.randn(3, 3, 5, 6, device=triton_backend, requires_grad=True)
    bands = down.decompose(x)
    feature = torch.randn_like(bands.ll, requires_grad=True)
    expected = LiftUpPool2d(down)(feature, bands)
    expected_grads = torch.autograd.grad(expected.square().sum(), [x, feature])

    grids = []
    limit = 2  # stands for CUDA's 65535: the vertical stages see 2N = 6 images
    monkeypatch.setattr(kernels, "MAX_GRID_BATCH", limit)
    for name in ("_stage_fwd_kernel", "_stage_bwd_mix_kernel", "_stage_bwd_src_kernel"):
        monkeypatch.setattr(kernels, name, _GridSpy(getattr(kernels, name), grids))
    bands = down.decompose(x)
    out = LiftUpPool2d(down)(feature, bands)
    grads = torch.autograd.grad(out.square().sum(), [x, feature])
    assert grids and max(grid[1] for grid in grids) <= limit
    assert all(len(grid) == 2 for grid in grids)  # channel tiles ride on axis 0 (2^31 - 1)
    torch.testing.assert_close(out, expected)
    for grad, ref in zip(grads, expected_grads):
        torch.testing.assert_close(grad, ref)


@pytest.fixture
def deterministic():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


def test_deterministic_mode_raises_on_forced_kernels(triton_backend, deterministic):
    down = _learned(3, triton_backend)
    x = torch.randn(2, 3, 4, 6, device=triton_backend, requires_grad=True)
    out = down(x)  # the forward has no atomics
    with pytest.raises(RuntimeError, match="does not have a deterministic implementation"):
        out.sum().backward()
    pooled = soft_pool2d(x, 3, stride=1)  # overlapping windows: atomics in the backward
    with pytest.raises(RuntimeError, match="does not have a deterministic implementation"):
        pooled.sum().backward()
    soft_pool2d(x, 2).sum().backward()  # one writer per position: deterministic, allowed


def test_deterministic_mode_takes_the_reference_under_auto(monkeypatch, deterministic):
    from seg.ops import dispatch

    monkeypatch.setenv("SEG_OPS_BACKEND", "auto")
    monkeypatch.setattr(dispatch, "triton_kernels", lambda: pytest.fail("kernels were used"))
    x = torch.randn(1, 2, 4, 4)
    assert not dispatch.use_triton(x.cuda() if torch.cuda.is_available() else x)
