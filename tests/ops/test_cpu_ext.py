"""The compiled CPU helper of the fused LiftPool path (seg/ops/csrc/lift_cpu.cpp) against
torch's own depthwise conv with reflect padding and its autograd: values, the gradients of
the input, taps and bias, strided inputs, short axes (replicate borders), NaN; and the
fallback when it cannot be built."""

import pytest
import torch
import torch.nn.functional as F

from seg.ops import _cpu_ext

ext = _cpu_ext.extension()  # raises under SEG_OPS_CPP=require when it cannot be built
needs_ext = pytest.mark.skipif(ext is None, reason="the C++ helper could not be built here")


def reference(z, taps, bias, dim):
    """relu(bias + depthwise 1 x k conv along dim) by F.conv2d, reflect padding (replicate
    on an axis too short to reflect, as seg.ops.lifting)."""
    channels, k = taps.shape
    pad = k // 2
    length = z.shape[dim]
    mode = "reflect" if length > pad else "replicate"
    if dim == 3:
        weight, padding = taps.view(channels, 1, 1, k), (pad, pad, 0, 0)
    else:
        weight, padding = taps.view(channels, 1, k, 1), (0, 0, pad, pad)
    if pad and mode == "replicate":
        zp = F.pad(z, padding, mode="replicate")
    elif pad:
        zp = F.pad(z, padding, mode="reflect")
    else:
        zp = z
    return F.conv2d(zp, weight, bias, groups=channels).relu()


CASES = [
    # shape, k, dim
    ((2, 3, 5, 9), 3, 3),
    ((2, 3, 7, 4), 3, 2),
    ((1, 4, 6, 8), 5, 3),
    ((1, 4, 9, 6), 5, 2),
    ((2, 2, 3, 1), 3, 3),  # one column: replicate
    ((2, 2, 1, 3), 3, 2),  # one row
    ((1, 2, 4, 2), 5, 3),  # two columns, k 5: replicate
    ((1, 2, 2, 4), 5, 2),
    ((2, 3, 4, 5), 1, 3),
]


@needs_ext
@pytest.mark.parametrize("shape, k, dim", CASES)
@pytest.mark.parametrize("strided", [False, True])
def test_forward_and_backward_equal_torch_conv(shape, k, dim, strided):
    n, c, rows, cols = shape
    if strided:  # every other row of a bigger tensor, as the vertical lifting step reads
        z = torch.randn(n, c, 2 * rows, cols, dtype=torch.float64)[:, :, 0::2]
    else:
        z = torch.randn(shape, dtype=torch.float64)
    z.requires_grad_()
    taps = torch.randn(c, k, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(c, dtype=torch.float64, requires_grad=True)
    r_ref = reference(z, taps, bias, dim)
    r = ext.dw_relu(z.detach(), taps.detach(), bias.detach(), dim)
    assert r.is_contiguous() and r.shape == z.shape
    torch.testing.assert_close(r, r_ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn(shape, dtype=torch.float64)
    g_ref = torch.autograd.grad(r_ref, (z, taps, bias), grad)
    g = ext.dw_relu_backward(grad, r, z.detach(), taps.detach(), dim)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@needs_ext
def test_float32_and_nan_propagate_like_torch():
    z = torch.randn(2, 8, 16, 20)
    taps, bias = torch.randn(8, 3), torch.randn(8)
    torch.testing.assert_close(ext.dw_relu(z, taps, bias, 3), reference(z, taps, bias, 3))
    z[0, 0, 3, 5] = float("nan")
    r = ext.dw_relu(z, taps, bias, 3)
    assert torch.isnan(r[0, 0, 3, 4:7]).all()  # NaN spreads to its window, as torch's conv
    assert not torch.isnan(r[0, 1]).any()


@needs_ext
def test_bad_arguments_are_refused():
    z = torch.randn(1, 3, 4, 4)
    with pytest.raises(RuntimeError, match="taps must be a contiguous"):
        ext.dw_relu(z, torch.randn(2, 3), torch.randn(3), 3)
    with pytest.raises(RuntimeError, match="dim must be 2 or 3"):
        ext.dw_relu(z, torch.randn(3, 3), torch.randn(3), 1)


def test_switched_off_or_unbuildable_falls_back(monkeypatch):
    monkeypatch.setenv("SEG_OPS_CPP", "0")
    assert _cpu_ext.extension() is None
    monkeypatch.setenv("SEG_OPS_CPP", "1")
    monkeypatch.setattr(_cpu_ext, "_MODULE", [])

    def fail(**kwargs):
        raise RuntimeError("no compiler")

    import torch.utils.cpp_extension as cpp_extension

    monkeypatch.setattr(cpp_extension, "load", fail)
    with pytest.warns(RuntimeWarning, match="could not be built .*no compiler"):
        assert _cpu_ext.extension() is None
    assert _cpu_ext.extension() is None  # tried once
    monkeypatch.setenv("SEG_OPS_CPP", "require")
    with pytest.raises(RuntimeError, match="SEG_OPS_CPP=require but .* could not be built"):
        _cpu_ext.extension()
    monkeypatch.setenv("SEG_OPS_CPP", "yes")
    with pytest.raises(ValueError, match="SEG_OPS_CPP='yes': choose one of 0, 1, require"):
        _cpu_ext.extension()


@needs_ext
def test_backward_passes_the_gradient_where_the_output_is_nan_like_torch():
    z = torch.randn(1, 2, 3, 5, dtype=torch.float64)
    z[0, 0, 1, 2] = float("nan")
    z.requires_grad_()
    taps = torch.randn(2, 3, dtype=torch.float64)
    bias = torch.randn(2, dtype=torch.float64)
    r_ref = reference(z, taps, bias, 3)
    grad = torch.ones_like(r_ref)
    (g_ref,) = torch.autograd.grad(r_ref, z, grad)
    gz = ext.dw_relu_backward(grad, r_ref.detach(), z.detach(), taps, 3)[0]
    torch.testing.assert_close(gz, g_ref, equal_nan=True)


@needs_ext
@pytest.mark.parametrize("dim", [2, 3])
def test_views_offset_along_batch_and_channels(dim):
    """A slice that starts inside the batch / channels and keeps part of the rows (as the
    fused path hands over pieces and the detail half of a split): the helper must follow
    the view's offset and strides, not assume they start at the storage's origin."""
    big = torch.randn(5, 6, 9, 7, dtype=torch.float64)
    z = big[2:, 1:5, :6]
    assert z.storage_offset() > 0 and not z.is_contiguous()
    taps, bias = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    z_ref = z.clone().requires_grad_()
    taps_ref, bias_ref = taps.clone().requires_grad_(), bias.clone().requires_grad_()
    r_ref = reference(z_ref, taps_ref, bias_ref, dim)
    r = ext.dw_relu(z, taps, bias, dim)
    torch.testing.assert_close(r, r_ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(r_ref)
    g_ref = torch.autograd.grad(r_ref, (z_ref, taps_ref, bias_ref), grad)
    g = ext.dw_relu_backward(grad, r, z, taps, dim)
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@needs_ext
@pytest.mark.parametrize("dim", [2, 3])
def test_float32_backward_matches_torch_within_float32_rounding(dim):
    z = torch.randn(3, 8, 17, 23, requires_grad=True)
    taps = torch.randn(8, 5, requires_grad=True)
    bias = torch.randn(8, requires_grad=True)
    r_ref = reference(z, taps, bias, dim)
    grad = torch.randn_like(r_ref)
    g_ref = torch.autograd.grad(r_ref, (z, taps, bias), grad)
    r = ext.dw_relu(z.detach(), taps.detach(), bias.detach(), dim)
    g = ext.dw_relu_backward(grad, r, z.detach(), taps.detach(), dim)
    # the tap and bias gradients sum ~3000 products each: float32 rounding, not exact
    for a, b in zip(g, g_ref, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
