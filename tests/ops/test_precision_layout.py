"""Half precision (direct and autocast), channels_last and non-contiguous inputs give the
float32 result of every operator within tolerance."""

import pytest
import torch

import seg.ops as ops

LOW = [torch.float16, torch.bfloat16]
TOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-5}


def _randomised(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module


def lift_roundtrip(module, x):
    bands = module.decompose(x)
    return torch.cat([bands.ll, bands.lh, bands.hl, bands.hh], 1), ops.LiftUpPool2d(module)(
        bands.ll * 0.5, bands
    )


OPERATORS = {
    "lift_down": lambda: (_randomised(ops.LiftDownPool2d(4)), lambda m, x: m(x)),
    "lift_roundtrip": lambda: (_randomised(ops.LiftDownPool2d(4)), lift_roundtrip),
    "soft_pool2d": lambda: (torch.nn.Identity(), lambda m, x: ops.soft_pool2d(x, 3, 2, 1)),
    "lip2d": lambda: (_randomised(ops.LIP2d(4)), lambda m, x: m(x)),
    "lift_pair": lambda: (
        _randomised(ops.build_pool_pair("lift", "lift", 4)),
        lambda m, x: m.up(*m.down(x)),
    ),
    "soft_bilinear": lambda: (
        ops.build_pool_pair("soft", "bilinear", 4),
        lambda m, x: m.up(*m.down(x)),
    ),
    "max_maxunpool": lambda: (
        ops.build_pool_pair("max", "maxunpool", 4),
        lambda m, x: m.up(*m.down(x)),
    ),
}


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _assert_close(outs, refs, tol):
    for out, ref in zip(_as_tuple(outs), _as_tuple(refs)):
        assert out.shape == ref.shape
        assert torch.isfinite(out).all()
        scale = ref.abs().max().clamp_min(1.0)
        assert (out.float() - ref).abs().max() <= tol * scale


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("dtype", LOW)
def test_low_precision_direct(name, dtype):
    module, fn = OPERATORS[name]()
    x = torch.randn(2, 4, 9, 11)
    ref = fn(module, x)
    out = fn(module.to(dtype), x.to(dtype))
    for o in _as_tuple(out):
        assert o.dtype == dtype
    _assert_close(out, ref, 4 * TOL[dtype])


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("dtype", LOW)
def test_autocast(name, dtype):
    module, fn = OPERATORS[name]()
    x = torch.randn(2, 4, 9, 11)
    ref = fn(module, x)
    with torch.autocast("cpu", dtype=dtype):
        out = fn(module, x)
    _assert_close(out, ref, 4 * TOL[dtype])


@pytest.mark.parametrize("name", OPERATORS)
def test_channels_last_and_non_contiguous(name):
    module, fn = OPERATORS[name]()
    x = torch.randn(2, 4, 9, 11)
    ref = fn(module, x)
    _assert_close(
        fn(module, x.contiguous(memory_format=torch.channels_last)), ref, TOL[torch.float32]
    )
    wide = torch.randn(2, 4, 9, 22)
    wide[..., ::2] = x
    strided = wide[..., ::2]
    assert not strided.is_contiguous()
    _assert_close(fn(module, strided), ref, TOL[torch.float32])
    transposed = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    _assert_close(fn(module, transposed), ref, TOL[torch.float32])
