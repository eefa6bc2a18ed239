"""SoftPool against a naive per-window loop and its gradient formula; LIP against its formula."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import seg.ops as ops

SOFT = {1: ops.soft_pool1d, 2: ops.soft_pool2d, 3: ops.soft_pool3d}


def naive_soft_pool(x: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """Loop over windows; softmax over the valid (unpadded) positions of each."""
    dims = x.dim() - 2
    spatial = x.shape[2:]
    out_shape = [(spatial[i] + 2 * padding[i] - kernel[i]) // stride[i] + 1 for i in range(dims)]
    out = torch.zeros(*x.shape[:2], *out_shape, dtype=x.dtype)
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for pos in itertools.product(*(range(o) for o in out_shape)):
            values = []
            for offset in itertools.product(*(range(k) for k in kernel)):
                idx = [pos[i] * stride[i] - padding[i] + offset[i] for i in range(dims)]
                if all(0 <= idx[i] < spatial[i] for i in range(dims)):
                    values.append(x[(n, c, *idx)])
            v = torch.stack(values)
            w = torch.exp(v - v.max())
            out[(n, c, *pos)] = (w * v).sum() / w.sum()
    return out


CASES = [
    # dims, size, kernel, stride, padding
    (1, (9,), (2,), (2,), (0,)),
    (1, (10,), (3,), (2,), (1,)),
    (2, (6, 7), (2, 2), (2, 2), (0, 0)),
    (2, (7, 5), (3, 3), (2, 2), (1, 1)),
    (2, (5, 6), (3, 2), (1, 2), (1, 0)),
    (3, (4, 5, 3), (2, 2, 2), (2, 2, 1), (0, 1, 0)),
]


@pytest.mark.parametrize("dims, size, kernel, stride, padding", CASES)
def test_soft_pool_matches_naive_loop_values_and_gradients(dims, size, kernel, stride, padding):
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    y = SOFT[dims](x, kernel, stride, padding)
    x_naive = x.detach().clone().requires_grad_()
    y_naive = naive_soft_pool(x_naive, kernel, stride, padding)
    torch.testing.assert_close(y, y_naive)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    (gx_naive,) = torch.autograd.grad(y_naive, x_naive, g)
    torch.testing.assert_close(gx, gx_naive)


def test_soft_pool_gradient_is_w_times_one_plus_x_minus_y():
    """For one window: dy/dx_i = w_i (1 + x_i - y) -- not the w_i of the original CUDA code."""
    x = torch.randn(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    y = ops.soft_pool2d(x, 2)
    (gx,) = torch.autograd.grad(y.sum(), x)
    w = torch.softmax(x.detach().flatten(), 0).view_as(x)
    expected = w * (1 + x.detach() - y.detach())
    torch.testing.assert_close(gx, expected)


def test_soft_pool_gradcheck_2d_and_3d():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: ops.soft_pool2d(x, 3, 2, 1), (x,))
    x3 = torch.randn(1, 1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: ops.soft_pool3d(x, 2), (x3,))


@pytest.mark.parametrize("dtype, value", [(torch.float32, 1000.0), (torch.float16, 60.0)])
def test_soft_pool_is_stable_for_large_inputs(dtype, value):
    x = torch.full((1, 2, 4, 4), value, dtype=dtype)
    x[0, 0, 0, 0] = value - 1
    x.requires_grad_()
    y = ops.soft_pool2d(x, 2)
    assert y.dtype == dtype
    assert torch.isfinite(y).all()
    # window {v-1, v, v, v}: weights e^-1 : 1 : 1 : 1
    w = torch.tensor([math.exp(-1), 1, 1, 1], dtype=torch.float64)
    expected = (
        w * torch.tensor([value - 1, value, value, value], dtype=torch.float64)
    ).sum() / w.sum()
    assert (
        abs(y[0, 0, 0, 0].double().item() - expected.item())
        <= 0.05 * (dtype == torch.float16) + 1e-3
    )
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_soft_pool_modules_and_bad_windows():
    x = torch.randn(1, 2, 8)
    torch.testing.assert_close(ops.SoftPool1d(2)(x), ops.soft_pool1d(x, 2))
    with pytest.raises(ValueError, match="padding"):
        ops.soft_pool2d(torch.randn(1, 1, 4, 4), 2, 2, 2)
    with pytest.raises(ValueError, match="smaller than the pooling window"):
        ops.soft_pool2d(torch.randn(1, 1, 1, 4), 3, 2, 0)


def lip_formula(x, logit, kernel, stride, padding):
    weight = torch.exp(logit)
    return F.avg_pool2d(x * weight, kernel, stride, padding) / F.avg_pool2d(
        weight, kernel, stride, padding
    )


@pytest.mark.parametrize(
    "size, kernel, stride, padding", [((7, 9), 3, 2, 1), ((6, 6), 2, 2, 0), ((5, 8), 3, 1, 1)]
)
def test_lip_matches_the_formula(size, kernel, stride, padding):
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    logit = (3 * torch.randn(2, 3, *size, dtype=torch.float64)).requires_grad_()
    y = ops.lip2d(x, logit, kernel, stride, padding)
    x2, l2 = x.detach().clone().requires_grad_(), logit.detach().clone().requires_grad_()
    y_ref = lip_formula(x2, l2, kernel, stride, padding)
    torch.testing.assert_close(y, y_ref)
    g = torch.randn_like(y)
    torch.testing.assert_close(
        torch.autograd.grad(y, (x, logit), g), torch.autograd.grad(y_ref, (x2, l2), g)
    )


def test_lip_gradcheck_through_the_module():
    layer = ops.LIP2d(2, logit="projection").double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *ps: layer(x), (x, *layer.parameters()))


@pytest.mark.parametrize("logit", ["projection", "bottleneck"])
def test_fresh_lip_is_average_pooling_over_valid_positions(logit):
    layer = ops.LIP2d(4, logit=logit)
    x = torch.randn(2, 4, 9, 7)
    y = layer(x)
    assert y.shape == (2, 4, 5, 4)
    torch.testing.assert_close(y, F.avg_pool2d(x, 3, 2, 1, count_include_pad=False))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lip_is_stable_in_half_precision(dtype):
    """exp(12) overflows float16; the windowed softmax does not."""
    x = torch.randn(1, 2, 8, 8)
    logit = 12 * torch.sigmoid(4 * torch.randn(1, 2, 8, 8))
    y = ops.lip2d(x.to(dtype), logit.to(dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()
    y_ref = lip_formula(x.double(), logit.to(dtype).double(), 3, 2, 1)
    torch.testing.assert_close(y.double(), y_ref, atol=2e-2, rtol=2e-2)
