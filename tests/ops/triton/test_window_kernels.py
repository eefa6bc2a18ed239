"""SoftPool and LIP Triton kernels against the PyTorch reference (interpreter on CPU)."""

import pytest
import torch

import seg.ops as ops
from seg.ops import lip as lip_module
from seg.ops import softpool as softpool_module
from seg.ops.lip import lip2d_reference
from seg.ops.softpool import soft_pool2d_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def max_err(a, b):
    return (a.float() - b.float()).abs().max().item()


def lowprec_ok(out, ref32, torch_lowprec, atol):
    """flash-attention's criterion: within twice PyTorch's own low-precision error, plus atol."""
    return max_err(out, ref32) <= 2 * max_err(torch_lowprec, ref32) + atol


SHAPES = [(2, 3, 4, 6), (2, 5, 5, 7), (2, 3, 1, 3)]
WINDOWS = [(2, None, 0), (3, 2, 1), (3, 1, 1), (1, 2, 0)]
# (shape, window, layout): every shape and window once, the layouts on the awkward shape
CASES = [(shape, window, "contiguous") for shape in SHAPES for window in WINDOWS] + [
    ((2, 5, 5, 7), (3, 2, 1), "channels_last"),
    ((2, 5, 5, 7), (2, None, 0), "transposed"),
]


def _make(shape, layout, device=DEVICE, dtype=torch.float32):
    n, c, h, w = shape
    if layout == "transposed":  # non-contiguous: a W/H-swapped view
        return torch.randn(n, c, w, h, device=device, dtype=dtype).transpose(-1, -2)
    x = torch.randn(shape, device=device, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def _valid(shape, window):
    kernel, _, padding = window
    return all(size + 2 * padding >= kernel for size in shape[2:])


@pytest.fixture
def no_reference(monkeypatch):
    """Make any fall-back to the reference an error, so a passing test ran the kernel."""

    def refuse(*args, **kwargs):
        raise AssertionError("the Triton path fell back to the reference")

    monkeypatch.setattr(softpool_module, "soft_pool2d_reference", refuse)
    monkeypatch.setattr(lip_module, "lip2d_reference", refuse)


@pytest.mark.parametrize("shape,window,layout", CASES)
def test_soft_pool2d_matches_reference(triton_backend, shape, window, layout, request):
    if not _valid(shape, window):
        pytest.skip("window larger than the input")
    x = _make(shape, layout).requires_grad_()
    ref = soft_pool2d_reference(x, *window)
    grad_out = torch.randn_like(ref)
    (ref_grad,) = torch.autograd.grad(ref, x, grad_out)
    request.getfixturevalue("no_reference")
    out = ops.soft_pool2d(x, *window)
    (grad,) = torch.autograd.grad(out, x, grad_out)
    assert out.shape == ref.shape
    assert max_err(out, ref) < 1e-5
    assert max_err(grad, ref_grad) < 1e-5


@pytest.mark.parametrize("shape,window,layout", CASES)
def test_lip2d_matches_reference(triton_backend, shape, window, layout, request):
    if not _valid(shape, window):
        pytest.skip("window larger than the input")
    x = _make(shape, layout).requires_grad_()
    logit = (3 * _make(shape, "contiguous")).requires_grad_()
    ref = lip2d_reference(x, logit, *window)
    grad_out = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (x, logit), grad_out)
    request.getfixturevalue("no_reference")
    out = ops.lip2d(x, logit, *window)
    grads = torch.autograd.grad(out, (x, logit), grad_out)
    assert max_err(out, ref) < 1e-5
    for grad, ref_grad in zip(grads, ref_grads):
        assert max_err(grad, ref_grad) < 1e-5


def test_soft_pool2d_is_the_registered_op(triton_backend, monkeypatch):
    calls = []
    op = torch.ops.seg.soft_pool2d.default
    import seg.ops.triton.softpool as kernel_module

    def counting(*args):
        calls.append(args)
        return op(*args)

    monkeypatch.setattr(kernel_module, "soft_pool2d_op", counting)
    ops.soft_pool2d(torch.randn(1, 3, 4, 4, device=DEVICE))
    assert len(calls) == 1


def test_large_logits_stay_finite(triton_backend):
    x = torch.full((1, 3, 4, 4), 1000.0, device=DEVICE)
    x[..., 0, 0] = 990.0
    assert torch.isfinite(ops.soft_pool2d(x)).all()


def test_opcheck(triton_backend):
    x = torch.randn(2, 3, 5, 7, device=DEVICE, requires_grad=True)
    logit = torch.randn(2, 3, 5, 7, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.seg.soft_pool2d.default, (x, [3, 3], [2, 2], [1, 1]))
    torch.library.opcheck(torch.ops.seg.lip2d.default, (x, logit, [3, 3], [2, 2], [1, 1]))


@pytest.mark.parametrize("dtype,atol", [(torch.float16, 1e-3), (torch.bfloat16, 1e-2)])
def test_low_precision(triton_backend, dtype, atol):
    _check_low_precision(DEVICE, (2, 5, 5, 7), dtype, atol, (3, 2, 1))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,atol", [(torch.float16, 1e-3), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("window", [(2, None, 0), (3, 2, 1)])
def test_low_precision_gpu(triton_backend, dtype, atol, window):
    _check_low_precision("cuda", (4, 19, 33, 45), dtype, atol, window)


def _check_low_precision(device, shape, dtype, atol, window):
    x32 = torch.randn(shape, device=device, requires_grad=True)
    logit32 = torch.randn(shape, device=device, requires_grad=True)
    x = x32.detach().to(dtype).requires_grad_()
    logit = logit32.detach().to(dtype).requires_grad_()
    cases = [
        (soft_pool2d_reference, ops.soft_pool2d, (x32,), (x,)),
        (lip2d_reference, ops.lip2d, (x32, logit32), (x, logit)),
    ]
    for reference, kernel, inputs32, inputs in cases:
        ref = reference(*inputs32, *window)
        grad_out = torch.randn_like(ref)
        ref_grads = torch.autograd.grad(ref, inputs32, grad_out)
        low = reference(*inputs, *window)
        low_grads = torch.autograd.grad(low, inputs, grad_out.to(dtype))
        out = kernel(*inputs, *window)
        grads = torch.autograd.grad(out, inputs, grad_out.to(dtype))
        assert out.dtype == dtype
        assert lowprec_ok(out, ref, low, atol)
        for g, rg, lg in zip(grads, ref_grads, low_grads):
            assert lowprec_ok(g, rg, lg, atol)


@pytest.mark.gpu
def test_compile_fullgraph_gpu(triton_backend):
    layer = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), ops.SoftPool2d(2))
    layer = layer.cuda()
    x = torch.randn(2, 8, 16, 16, device="cuda")
    compiled = torch.compile(layer, fullgraph=True)
    assert max_err(compiled(x), layer(x)) < 1e-5
