"""The fused eager LiftPool path (seg.ops.lifting_fused) against the reference: forward,
every gradient, the regulariser, odd sizes, pieces, precisions, and the exact inverse."""

import pytest
import torch
from torch import nn

import seg.ops as ops
from seg.ops import lifting_fused


def randomise(module: nn.Module, std: float = 0.5) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def run(backend, monkeypatch, down, up, x, grads, reg_weights=(0.3, 0.7)):
    """Bands, inverse and every gradient (input, bands, P/U weights) on one backend."""
    monkeypatch.setenv("SEG_OPS_BACKEND", backend)
    down.zero_grad()
    x = x.detach().clone().requires_grad_()
    with ops.record_lift_regularization() as record:
        bands = down.decompose(x)
    feature = bands.ll.detach().clone().requires_grad_()  # the decoder's stand-in for LL
    y = up(feature, bands)
    loss = sum((b * g).sum() for b, g in zip(bands[:4], grads[:4], strict=True))
    loss = loss + (y * grads[4]).sum()
    loss.backward()
    weights = [p.grad.clone() for p in down.parameters()]
    return bands, y, (record.c_u, record.c_p), x.grad, feature.grad, weights


SIZES = [(8, 8), (7, 9), (6, 11), (1, 1), (2, 5), (13, 6), (1, 7), (5, 1)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("chunk_bytes", [1, 1 << 22])  # one sample per piece / one piece
@pytest.mark.parametrize("cpp", ["1", "0"])  # the compiled depthwise helper, or plain torch
def test_fused_equals_reference_forward_and_every_gradient(
    monkeypatch, size, kernel_size, chunk_bytes, cpp
):
    monkeypatch.setattr(lifting_fused, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setenv("SEG_OPS_CPP", cpp)
    down = randomise(ops.LiftDownPool2d(3, kernel_size=kernel_size)).double()
    ops.set_lift_regularization(down, 0.05, 0.2)
    up = ops.LiftUpPool2d(down)
    x = torch.randn(3, 3, *size, dtype=torch.float64)
    band_shape = (3, 3, (size[0] + 1) // 2, (size[1] + 1) // 2)
    grads = [torch.randn(band_shape, dtype=torch.float64) for _ in range(4)]
    grads.append(torch.randn(3, 3, *size, dtype=torch.float64))
    ref = run("reference", monkeypatch, down, up, x, grads)
    fused = run("fused", monkeypatch, down, up, x, grads)
    for a, b in zip(ref[0][:4], fused[0][:4], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert fused[0].size == ref[0].size
    torch.testing.assert_close(fused[1], ref[1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fused[1], x, rtol=0, atol=1e-9)  # the inverse is exact
    for a, b in zip(ref[2], fused[2], strict=True):  # regulariser values
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    for a, b in zip(ref[3:5], fused[3:5], strict=True):  # input and feature gradients
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
    for a, b in zip(ref[5], fused[5], strict=True):  # P/U weight gradients
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_fused_runs_on_cpu_by_default_and_the_reference_on_request(monkeypatch):
    calls = []
    real = lifting_fused.LiftDown2d.apply
    monkeypatch.setattr(
        lifting_fused.LiftDown2d, "apply", lambda *a: calls.append(1) or real(*a)
    )  # fmt: skip
    down = ops.LiftDownPool2d(2)
    x = torch.randn(1, 2, 6, 6)
    monkeypatch.setenv("SEG_OPS_BACKEND", "auto")
    assert down.fused_ready(x)
    down(x)
    assert calls == [1]
    monkeypatch.setenv("SEG_OPS_BACKEND", "reference")
    assert not down.fused_ready(x)
    down(x)
    assert calls == [1]
    assert not ops.LiftDownPool2d(predictor="haar").fused_ready(x)  # fixed wavelets: reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_and_fp32_match_the_reference_in_its_tolerance(monkeypatch, dtype):
    down = randomise(ops.LiftDownPool2d(4), 0.3)
    up = ops.LiftUpPool2d(down)
    x = torch.randn(2, 4, 9, 14)
    grads = [torch.randn(2, 4, 5, 7) for _ in range(4)] + [torch.randn(2, 4, 9, 14)]
    ref = run("reference", monkeypatch, down.double(), up, x.double(), [g.double() for g in grads])
    down.to(dtype)
    fused = run("fused", monkeypatch, down, up, x.to(dtype), [g.to(dtype) for g in grads])
    tol = {"float32": 1e-5, "bfloat16": 3e-2, "float16": 5e-3}[str(dtype).split(".")[1]]
    for a, b in zip(ref[0][:4], fused[0][:4], strict=True):
        assert b.dtype == dtype
        torch.testing.assert_close(b.double(), a, rtol=tol, atol=tol)
    if dtype == torch.float32:
        torch.testing.assert_close(fused[1], x, rtol=0, atol=2e-6)  # inverse to ~1e-6
        for a, b in zip(ref[3:5], fused[3:5], strict=True):
            torch.testing.assert_close(b.double(), a, rtol=1e-4, atol=1e-5)
        for a, b in zip(ref[5], fused[5], strict=True):
            torch.testing.assert_close(b.double(), a, rtol=1e-4, atol=1e-4)


def test_gradcheck_fused_down_and_up():
    torch.manual_seed(1)
    down = randomise(ops.LiftDownPool2d(2)).double()
    params = [p.detach().clone().requires_grad_() for p in down.kernel_parameters()]
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)

    def down_fn(x, *params):
        bands, (c_u, c_p) = lifting_fused.lift_down2d(x, list(params), True)
        return (*bands, c_u, c_p)

    assert torch.autograd.gradcheck(down_fn, (x, *params))
    bands = [b.detach().requires_grad_() for b in down_fn(x, *params)[:4]]

    def up_fn(*tensors):
        return lifting_fused.lift_up2d(*tensors[:4], (5, 6), list(tensors[4:]))

    assert torch.autograd.gradcheck(up_fn, (*bands, *params))


def test_nothing_but_inputs_and_predictor_outputs_is_kept_for_backward():
    """The reference's graph stores ~6 tensors per predictor call; the fused step keeps its
    input, the weights and one output per predictor (no intermediates of the conv/ReLU/mix)."""
    down = randomise(ops.LiftDownPool2d(4))
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    params = down.kernel_parameters()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        bands, _ = lifting_fused.lift_down2d(x, params, False)
    numel = sum(t.numel() for t in saved if t.numel() > 64)  # leave the small weights out
    # x, P/U outputs of the W step (x's size each, halved), of the H step (likewise)
    assert numel == x.numel() * 3


def test_empty_batch_no_grad_and_second_backward(monkeypatch):
    monkeypatch.setenv("SEG_OPS_BACKEND", "fused")
    down = randomise(ops.LiftDownPool2d(3))
    up = ops.LiftUpPool2d(down)
    empty = down.decompose(torch.randn(0, 3, 7, 6))
    assert empty.ll.shape == (0, 3, 4, 3) and up(empty.ll, empty).shape == (0, 3, 7, 6)
    params = down.kernel_parameters()
    x = torch.randn(2, 3, 7, 6)
    saved = []
    with (
        torch.no_grad(),
        torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t),
    ):
        lifting_fused.lift_down2d(x, params, False)
    assert saved == []  # nothing kept without a backward to come
    x.requires_grad_()
    ll = down.decompose(x).ll
    (grad,) = torch.autograd.grad(ll.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice .*once_differentiable"):
        grad.sum().backward()  # first order only: refused, not silently wrong


def test_traced_transformed_or_hooked_calls_take_the_reference(monkeypatch):
    monkeypatch.setenv("SEG_OPS_BACKEND", "auto")
    down = randomise(ops.LiftDownPool2d(2))
    x = torch.randn(1, 2, 6, 6)
    assert down.fused_ready(x)
    # torch.func: vmap and forward-mode AD go through the reference, which supports them
    jvp_out = torch.func.jvp(lambda t: down(t), (x,), (torch.ones_like(x),))[1]
    monkeypatch.setenv("SEG_OPS_BACKEND", "reference")
    expected = torch.func.jvp(lambda t: down(t), (x,), (torch.ones_like(x),))[1]
    torch.testing.assert_close(jvp_out, expected)
    monkeypatch.setenv("SEG_OPS_BACKEND", "auto")
    traced = torch.jit.trace(down, x)  # traced through the reference: saveable
    torch.testing.assert_close(traced(x), down(x))
    calls = []
    handle = down.predict_w.register_forward_hook(lambda *a: calls.append(1))
    assert not down.fused_ready(x)
    down(x)
    assert calls == [1]
    handle.remove()
    assert down.fused_ready(x)
