"""Fake (meta) implementations agree with the kernels on every layout, forward and
backward, so torch.compile (inductor included) can trace channels_last models."""

from __future__ import annotations

import pytest
import torch

import seg.ops as ops
from seg.models import SegNet

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# channels_last is where fakes and kernels disagreed; the others are slower insurance.
LAYOUTS = [
    pytest.param("contiguous", marks=pytest.mark.slow),
    "channels_last",
    pytest.param("transposed", marks=pytest.mark.slow),
]


def _tensor(shape, layout):
    n, c, h, w = shape
    if layout == "transposed":
        return torch.randn(n, c, w, h, device=DEVICE).transpose(-1, -2)
    x = torch.randn(shape, device=DEVICE)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def _learned_params(channels):
    down = ops.LiftDownPool2d(channels).to(DEVICE)
    with torch.no_grad():
        for p in down.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return down, [p.detach().requires_grad_() for p in down.kernel_parameters()]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_opcheck_every_op_and_backward(triton_backend, layout):
    shape = (2, 3, 5, 7)
    x = _tensor(shape, layout).requires_grad_()
    logit = _tensor(shape, layout).requires_grad_()
    window = ([3, 3], [2, 2], [1, 1])
    torch.library.opcheck(torch.ops.seg.soft_pool2d.default, (x, *window))
    torch.library.opcheck(torch.ops.seg.lip2d.default, (x, logit, *window))
    down, params = _learned_params(3)
    torch.library.opcheck(torch.ops.seg.lift_down2d.default, (x, params, "learned", 3))
    bands = [_tensor((2, 3, 3, 4), layout).requires_grad_() for _ in range(4)]
    up_args = (*bands, params, "learned", 3, 5, 7)
    torch.library.opcheck(torch.ops.seg.lift_up2d.default, up_args)
    # the backward ops on their own (no double backward), with gradients in the same layout
    fixed = [p.detach() for p in params]
    lo, hi, sd = torch.ops.seg.lift_down2d(x.detach(), fixed, "learned", 3)
    grads = [_tensor(t.shape, layout) for t in (lo, hi, sd)]
    checks = ("test_schema", "test_faketensor")
    backward_cases = [
        (torch.ops.seg.lift_down2d_backward, (*grads, x.detach(), fixed, "learned", 3)),
        (
            torch.ops.seg.lift_up2d_backward,
            (_tensor(shape, layout), *(b.detach() for b in bands), fixed, "learned", 3),
        ),
        (torch.ops.seg.soft_pool2d_backward, (_tensor((2, 3, 3, 4), layout), x.detach(), *window)),
        (
            torch.ops.seg.lip2d_backward,
            (_tensor((2, 3, 3, 4), layout), x.detach(), logit.detach(), *window),
        ),
    ]
    for op, args in backward_cases:
        torch.library.opcheck(op.default, args, test_utils=checks)


@pytest.mark.slow
def test_inductor_trains_a_channels_last_segnet_lift_step(triton_backend):
    torch.manual_seed(0)
    model = SegNet(3, width=0.0625, depth=2).to(DEVICE).to(memory_format=torch.channels_last)
    ops.set_lift_regularization(model)
    x = torch.randn(2, 3, 16, 16, device=DEVICE).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (2, 16, 16), device=DEVICE)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    compiled = torch.compile(model, backend="inductor", dynamic=False)
    torch.nn.functional.cross_entropy(compiled(x), y).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], atol=1e-4, rtol=1e-4, msg=name)
