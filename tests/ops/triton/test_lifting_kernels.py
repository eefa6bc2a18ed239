"""LiftPool Triton kernels (down, up, regularisers, every gradient) against the reference.

On CPU the kernels run in Triton's interpreter, so shapes are tiny; the GPU
tests add half precision and torch.compile.
"""

import pytest
import torch
from torch import nn

import seg.ops.lifting as lifting
from seg.ops import (
    LiftDownPool2d,
    LiftUpPool2d,
    record_lift_regularization,
    set_lift_regularization,
)
from seg.ops.lifting import LiftBands, _lift_down2d
from seg.ops.lifting import lift_up2d as reference_up

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = [(2, 3, 4, 6), (2, 5, 5, 7), (2, 3, 1, 3)]
PREDICTORS = ["learned", "haar", "legall53"]


def max_err(a, b):
    return (a.float() - b.float()).abs().max().item()


def close(a, b, tol=1e-5):
    """Absolute error relative to the reference's magnitude (sums over pixels grow with it)."""
    return max_err(a, b) <= tol * (1.0 + b.float().abs().max().item())


def lowprec_ok(out, ref32, torch_lowprec, atol):
    """flash-attention's criterion: within twice PyTorch's own low-precision error, plus atol."""
    return max_err(out, ref32) <= 2 * max_err(torch_lowprec, ref32) + atol


def make_down(channels, predictor, kernel_size=3, device=DEVICE):
    down = LiftDownPool2d(channels, kernel_size=kernel_size, predictor=predictor).to(device)
    if predictor == "learned":  # away from the zero init, so every term of the gradient is live
        with torch.no_grad():
            for p in down.parameters():
                p.copy_(torch.randn_like(p) * 0.7)
    return down


@pytest.fixture
def no_reference(monkeypatch):
    """Make any fall-back to the LiftPool reference an error."""

    def refuse(*args, **kwargs):
        raise AssertionError("the Triton path fell back to the reference")

    monkeypatch.setattr(lifting, "_lift_down2d", refuse)
    monkeypatch.setattr(lifting, "lift_up2d", refuse)


def _down_loss(bands, reg, grads):
    loss = sum((g * b.float()).sum() for g, b in zip(grads, bands[:4]))
    return loss + 0.3 * reg.c_u + 0.7 * reg.c_p


CASES = [(shape, predictor, 3, "contiguous") for predictor in PREDICTORS for shape in SHAPES] + [
    ((2, 3, 3, 4), "learned", 5, "contiguous"),  # n = 2 <= pad: replicate borders
    ((2, 5, 5, 7), "learned", 3, "channels_last"),
    ((2, 3, 5, 7), "legall53", 3, "transposed"),
]


def _input(shape, layout):
    n, c, h, w = shape
    if layout == "transposed":
        return torch.randn(n, c, w, h, device=DEVICE).transpose(-1, -2)
    x = torch.randn(shape, device=DEVICE)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


@pytest.mark.parametrize("shape,predictor,kernel_size,layout", CASES)
def test_lift_down2d_matches_reference(
    triton_backend, shape, predictor, kernel_size, layout, request
):
    down = make_down(shape[1], predictor, kernel_size)
    x = _input(shape, layout).requires_grad_()
    params = [x, *down.parameters()]
    ref_bands, ref_reg = _lift_down2d(x, *down.predictors, True)
    grads_out = [torch.randn_like(b) for b in ref_bands[:4]]
    ref_grads = torch.autograd.grad(_down_loss(ref_bands, ref_reg, grads_out), params)

    request.getfixturevalue("no_reference")
    # The layer adds 0.3 c_u + 0.7 c_p to the gradient itself, as _down_loss does explicitly.
    set_lift_regularization(down, 0.3, 0.7)
    down.train()
    with record_lift_regularization() as record:
        bands = down.decompose(x)
    for band, ref in zip(bands[:4], ref_bands[:4]):
        assert band.shape == ref.shape and band.dtype == ref.dtype
        assert close(band, ref)
    assert bands.size == ref_bands.size
    assert close(record.c_u, ref_reg.c_u) and close(record.c_p, ref_reg.c_p)
    task = sum((g * b.float()).sum() for g, b in zip(grads_out, bands[:4]))
    grads = torch.autograd.grad(task, params)
    for grad, ref in zip(grads, ref_grads):
        assert close(grad, ref), max_err(grad, ref)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("predictor", PREDICTORS)
def test_lift_up2d_matches_reference(triton_backend, shape, predictor, request):
    down = make_down(shape[1], predictor)
    x = torch.randn(shape, device=DEVICE)
    ref_bands = _lift_down2d(x, *down.predictors, False)[0]
    bands = [b.detach().clone().requires_grad_() for b in ref_bands[:4]]
    bands[0] = torch.randn_like(bands[0]).requires_grad_()  # a decoder feature in place of LL
    params = [*bands, *down.parameters()]
    full = LiftBands(*bands, size=ref_bands.size)
    ref = reference_up(full, *down.predictors)
    grad_out = torch.randn_like(ref)
    ref_grads = torch.autograd.grad((ref * grad_out).sum(), params)

    request.getfixturevalue("no_reference")
    up = LiftUpPool2d(down)
    out = up(bands[0], full)
    assert out.shape == x.shape
    assert close(out, ref)
    grads = torch.autograd.grad((out * grad_out).sum(), params)
    for grad, ref_grad in zip(grads, ref_grads):
        assert close(grad, ref_grad), max_err(grad, ref_grad)


@pytest.mark.parametrize("predictor", ["learned", "haar"])
def test_round_trip_is_exact(triton_backend, predictor, no_reference):
    down = make_down(5, predictor).eval()
    x = torch.randn(2, 5, 5, 7, device=DEVICE)
    set_lift_regularization(down)
    with record_lift_regularization() as record:
        bands = down.decompose(x)
    assert record.calls == 0  # eval mode: no regulariser
    assert max_err(LiftUpPool2d(down)(bands.ll, bands), x) < 1e-5


def test_ops_are_registered_and_called(triton_backend, monkeypatch):
    import seg.ops.triton.lifting as kernels

    calls = []
    for name in ("lift_down2d_op", "lift_up2d_op"):
        op = getattr(kernels, name)

        def counting(*args, _op=op, _name=name):
            calls.append(_name)
            return _op(*args)

        monkeypatch.setattr(kernels, name, counting)
    down = make_down(3, "haar").eval()
    bands = down.decompose(torch.randn(1, 3, 4, 4, device=DEVICE))
    LiftUpPool2d(down)(bands.ll, bands)
    assert calls == ["lift_down2d_op", "lift_up2d_op"]
    assert hasattr(torch.ops.seg, "lift_down2d") and hasattr(torch.ops.seg, "lift_up2d")


@pytest.mark.parametrize("predictor", ["learned", "legall53"])
def test_opcheck(triton_backend, predictor):
    down = make_down(3, predictor)

    params = [p.detach().requires_grad_() for p in down.kernel_parameters()]
    x = torch.randn(2, 3, 3, 5, device=DEVICE, requires_grad=True)
    # the AOT-dispatch check re-runs the backward several times: too slow for the
    # interpreter with the learned predictor, so that one gets it on the GPU only
    utils = None
    if predictor == "learned" and not torch.cuda.is_available():
        utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    kwargs = {} if utils is None else {"test_utils": utils}
    torch.library.opcheck(torch.ops.seg.lift_down2d.default, (x, params, predictor, 3), **kwargs)
    bands = [torch.randn(2, 3, 2, 3, device=DEVICE, requires_grad=True) for _ in range(4)]
    torch.library.opcheck(
        torch.ops.seg.lift_up2d.default, (*bands, params, predictor, 3, 3, 5), **kwargs
    )


# --------------------------------------------------------------------------- GPU only


@pytest.mark.gpu
@pytest.mark.parametrize("predictor", PREDICTORS)
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (4, 70, 33, 65), (2, 128, 32, 32)])
def test_gpu_matches_reference(triton_backend, predictor, shape):
    down = make_down(shape[1], predictor, device="cuda").train()
    x = torch.randn(shape, device="cuda", requires_grad=True)
    params = [x, *down.parameters()]
    ref_bands, ref_reg = _lift_down2d(x, *down.predictors, True)
    grads_out = [torch.randn_like(b) for b in ref_bands[:4]]
    ref_grads = torch.autograd.grad(_down_loss(ref_bands, ref_reg, grads_out), params)
    set_lift_regularization(down, 0.3, 0.7)
    bands = down.decompose(x)
    task = sum((g * b.float()).sum() for g, b in zip(grads_out, bands[:4]))
    grads = torch.autograd.grad(task, params)
    for band, ref in zip(bands[:4], ref_bands[:4]):
        assert close(band, ref)
    for grad, ref in zip(grads, ref_grads):
        assert close(grad, ref, 1e-4)
    out = LiftUpPool2d(down)(bands.ll, bands)
    assert max_err(out, x) < 1e-4


def _check_low_precision(device, predictor, dtype, atol, shape, monkeypatch):
    down = make_down(shape[1], predictor, device=device).eval()
    x32 = torch.randn(shape, device=device, requires_grad=True)
    x = x32.detach().to(dtype).requires_grad_()
    monkeypatch.setenv("SEG_OPS_BACKEND", "reference")
    ref = down.decompose(x32)
    low = down.decompose(x)
    grads_out = [torch.randn_like(b) for b in ref[:4]]

    def grad_of(bands, inp):
        loss = sum((g * b.float()).sum() for g, b in zip(grads_out, bands[:4]))
        return torch.autograd.grad(loss, inp)[0]

    ref_grad, low_grad = grad_of(ref, x32), grad_of(low, x)
    monkeypatch.setenv("SEG_OPS_BACKEND", "triton")
    out = down.decompose(x)
    for band, ref_band, low_band in zip(out[:4], ref[:4], low[:4]):
        assert band.dtype == dtype
        assert lowprec_ok(band, ref_band, low_band, atol)
    assert lowprec_ok(grad_of(out, x), ref_grad, low_grad, atol)
    up_ref = LiftUpPool2d(down)(ref.ll, ref)
    monkeypatch.setenv("SEG_OPS_BACKEND", "reference")
    up_low = LiftUpPool2d(down)(low.ll, low)
    monkeypatch.setenv("SEG_OPS_BACKEND", "triton")
    up_out = LiftUpPool2d(down)(low.ll, low)
    assert up_out.dtype == dtype
    assert lowprec_ok(up_out, up_ref, up_low, atol)


@pytest.mark.parametrize("predictor", ["learned", "legall53"])
@pytest.mark.parametrize("dtype,atol", [(torch.float16, 1e-3), (torch.bfloat16, 1e-2)])
def test_low_precision(triton_backend, predictor, dtype, atol, monkeypatch):
    _check_low_precision(DEVICE, predictor, dtype, atol, (2, 5, 5, 7), monkeypatch)


@pytest.mark.gpu
@pytest.mark.parametrize("predictor", PREDICTORS)
@pytest.mark.parametrize("dtype,atol", [(torch.float16, 1e-3), (torch.bfloat16, 1e-2)])
def test_gpu_low_precision(triton_backend, predictor, dtype, atol, monkeypatch):
    _check_low_precision("cuda", predictor, dtype, atol, (2, 19, 33, 45), monkeypatch)


class _SegNetBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.down = LiftDownPool2d(channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.up = LiftUpPool2d(self.down)

    def forward(self, x):
        bands = self.down.decompose(x)
        return self.up(self.conv(bands.ll), bands)


def _check_compile(device, backend, shape):
    block = _SegNetBlock(shape[1]).to(device).train()
    set_lift_regularization(block)  # the regulariser's gradient must trace too
    x = torch.randn(shape, device=device, requires_grad=True)
    expected = block(x)
    expected.sum().backward()
    expected_grad = block.down.predict_w.mix_weight.grad.clone()
    block.zero_grad()
    compiled = torch.compile(block, fullgraph=True, backend=backend)
    out = compiled(x)
    assert max_err(out, expected) < 1e-4
    out.sum().backward()
    assert x.grad is not None
    assert max_err(block.down.predict_w.mix_weight.grad, expected_grad) < 1e-4


def test_compile_fullgraph_aot_eager(triton_backend, no_reference):
    """Fake and autograd registrations trace in one graph (inductor needs a GPU here)."""
    _check_compile(DEVICE, "aot_eager", (2, 3, 5, 7))


@pytest.mark.gpu
def test_gpu_compile_fullgraph(triton_backend):
    _check_compile("cuda", "inductor", (2, 16, 31, 33))
