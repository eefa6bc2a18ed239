"""The fused eager SoftPool/LIP path (seg.ops.window_fused) against the reference (one
softmax per window through unfold): values and gradients, odd sizes and overlapping or
padded windows, precisions, the fallback for logits too spread for one shift per plane,
gradcheck, dispatch."""

import pytest
import torch

import seg.ops as ops
from seg.ops import window_fused
from seg.ops.lip import lip2d_reference
from seg.ops.softpool import soft_pool2d_reference

WINDOWS = [
    # size, kernel, stride, padding
    ((7, 9), 2, 2, 0),  # SoftPool's default, odd sizes (the last row/column dropped)
    ((7, 5), 3, 2, 1),  # LIP's default: overlapping, padded
    ((5, 6), (3, 2), (1, 2), (1, 0)),
    ((4, 4), 2, 1, 0),
    ((1, 1), 3, 1, 1),
    ((1, 7), 3, 2, 1),
    ((7, 8), 2, 3, 0),  # gaps between windows
    ((5, 9), (1, 3), (2, 2), (0, 1)),
]


@pytest.fixture
def calls(monkeypatch):
    """Counts calls of the fused Function."""
    count = []
    real = window_fused.WindowSoftmaxPool2d.apply
    monkeypatch.setattr(
        window_fused.WindowSoftmaxPool2d, "apply", lambda *a: count.append(1) or real(*a)
    )
    return count


def _grads(y, inputs, seed=0):
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.autograd.grad(y, inputs, g.to(y.dtype))


@pytest.mark.parametrize("size, kernel, stride, padding", WINDOWS)
def test_soft_pool_fused_equals_reference(size, kernel, stride, padding, calls):
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    y = ops.soft_pool2d(x, kernel, stride, padding)
    assert calls  # CPU tensors take the fused path by default
    y_ref = soft_pool2d_reference(x, kernel, stride, padding)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_grads(y, x)[0], _grads(y_ref, x)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size, kernel, stride, padding", WINDOWS)
def test_lip_fused_equals_reference_for_features_and_logits(size, kernel, stride, padding, calls):
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    logit = (5 * torch.randn(2, 3, *size, dtype=torch.float64)).requires_grad_()
    y = ops.lip2d(x, logit, kernel, stride, padding)
    assert calls
    y_ref = lip2d_reference(x, logit, kernel, stride, padding)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    g_ref = _grads(y_ref, (x, logit))
    for a, b in zip(_grads(y, (x, logit)), g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # only one input needing a gradient
    (gx,) = _grads(ops.lip2d(x, logit.detach(), kernel, stride, padding), x)
    torch.testing.assert_close(gx, g_ref[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_matches_the_reference_in_its_tolerance(dtype, calls):
    x = torch.randn(2, 4, 12, 10, dtype=torch.float64)
    logit = 12 * torch.sigmoid(torch.randn_like(x))  # LIP's logits: in (0, 12)
    ref_x = x.clone().requires_grad_()
    ref_l = logit.clone().requires_grad_()
    y_ref = lip2d_reference(ref_x, ref_l)
    g_ref = _grads(y_ref, (ref_x, ref_l))
    xs = x.to(dtype).requires_grad_()
    ls = logit.to(dtype).requires_grad_()
    y = ops.lip2d(xs, ls)
    assert calls and y.dtype == dtype
    tol = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 3e-3}[dtype]
    torch.testing.assert_close(y.double(), y_ref, rtol=tol, atol=tol)
    for a, b in zip(_grads(y, (xs, ls)), g_ref, strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=5 * tol)


def test_gradcheck_fused_soft_pool_and_lip(calls):
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    logit = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ops.soft_pool2d(t, 2), (x,))
    assert torch.autograd.gradcheck(lambda a, b: ops.lip2d(a, b, 3, 2, 1), (x, logit))
    assert calls


@pytest.mark.parametrize("dtype, spread", [(torch.float32, 200.0), (torch.float64, 1e4)])
def test_logits_too_spread_for_one_shift_take_the_reference(dtype, spread, calls):
    """One shift per plane would underflow exp to 0 in windows far below the plane's
    maximum (0/0); those calls go to the reference, which shifts per window."""
    x = torch.randn(1, 2, 6, 6, dtype=dtype)
    x[0, 1, 0, 0] = spread  # one plane spans more than SAFE_RANGE
    x.requires_grad_()
    y = ops.soft_pool2d(x, 2)
    assert not calls
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, soft_pool2d_reference(x, 2))
    # a shift per plane, not per tensor: planes may sit far apart as long as each is narrow
    z = torch.randn(1, 2, 6, 6, dtype=dtype)
    z[0, 1] += spread
    torch.testing.assert_close(ops.soft_pool2d(z, 2), soft_pool2d_reference(z, 2))
    assert calls


def test_output_modified_in_place_empty_batch_and_second_backward(calls):
    x = torch.randn(2, 3, 6, 8, requires_grad=True)
    y = ops.soft_pool2d(x, 2)
    y.relu_()  # the Function keeps no reference to its output
    (gx,) = torch.autograd.grad(y.sum(), x)
    (g_ref,) = torch.autograd.grad(soft_pool2d_reference(x, 2).relu().sum(), x)
    torch.testing.assert_close(gx, g_ref)
    empty = torch.randn(0, 3, 6, 8, requires_grad=True)
    assert ops.soft_pool2d(empty, 2).shape == (0, 3, 3, 4)
    (g,) = torch.autograd.grad(ops.soft_pool2d(x, 2).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice .*once_differentiable"):
        g.sum().backward()  # first order only: refused, not silently wrong


def test_reference_on_request_and_under_transforms(monkeypatch, calls):
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    monkeypatch.setenv("SEG_OPS_BACKEND", "reference")
    ops.soft_pool2d(x, 2)
    ops.LIP2d(2).double()(x)
    assert not calls
    monkeypatch.setenv("SEG_OPS_BACKEND", "auto")
    ops.LIP2d(2).double()(x)
    assert calls
    calls.clear()
    # torch.func transforms need the reference's plain autograd graph
    jac = torch.func.jacrev(lambda t: ops.soft_pool2d(t, 2).sum())(x)
    assert not calls
    (g_ref,) = torch.autograd.grad(soft_pool2d_reference(x.requires_grad_(), 2).sum(), x)
    torch.testing.assert_close(jac, g_ref)


def test_spread_near_the_old_limit_and_loss_scaled_gradients_stay_finite():
    """A plane spread of ~79 with a loss-scaled gradient overflowed g / sum(e) when one shift
    per plane was allowed up to 80: such calls now take the reference."""
    x = torch.full((1, 1, 4, 4), -39.0)
    x[0, 0, 0, 0], x[0, 0, 3, 3] = 40.0, -38.5
    x.requires_grad_()
    grad = torch.full((1, 1, 2, 2), 1e4)
    (g,) = torch.autograd.grad(ops.soft_pool2d(x, 2), x, grad)
    (g_ref,) = torch.autograd.grad(soft_pool2d_reference(x, 2), x, grad)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g, g_ref)
