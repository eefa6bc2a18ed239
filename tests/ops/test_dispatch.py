"""Backend selection: the environment switch and what has no kernel."""

import pytest
import torch
from torch import nn

import seg.ops as ops
from seg.ops import dispatch


def test_unknown_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SEG_OPS_BACKEND", "cuda")
    with pytest.raises(ValueError, match="SEG_OPS_BACKEND"):
        ops.soft_pool2d(torch.randn(1, 1, 4, 4), 2)


def test_auto_keeps_cpu_tensors_on_the_reference(monkeypatch):
    monkeypatch.setenv("SEG_OPS_BACKEND", "auto")
    assert not dispatch.use_triton(torch.randn(2))


class ScaledPredictor(nn.Module):
    """A user's own predictor: no kernel implements it."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.25))
        self.calls = 0

    def forward(self, t):
        self.calls += 1
        return self.scale * t


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_custom_predictor_modules_run_on_the_reference(monkeypatch, backend):
    if backend == "triton" and dispatch.triton_kernels() is None:
        pytest.skip("triton unavailable")
    monkeypatch.setenv("SEG_OPS_BACKEND", backend)
    down = ops.LiftDownPool2d(3)
    down.predict_w = ScaledPredictor()
    x = torch.randn(1, 3, 6, 8)
    bands = down.decompose(x)
    assert down.predict_w.calls == 1
    x_e, x_o = x[..., 0::2], x[..., 1::2]
    # update_w is still the fresh learned one (zero), so s = x_e and d = x_o - 0.25 x_e
    torch.testing.assert_close(bands.ll, x_e[..., 0::2, :])
    torch.testing.assert_close(bands.hl, (x_o - 0.25 * x_e)[..., 0::2, :])
    torch.testing.assert_close(ops.LiftUpPool2d(down)(bands.ll, bands), x)


def test_float64_has_no_kernel_and_stays_on_the_reference(monkeypatch):
    if dispatch.triton_kernels() is None:
        pytest.skip("triton unavailable")
    monkeypatch.setenv("SEG_OPS_BACKEND", "triton")
    assert dispatch.use_triton(torch.randn(2, dtype=torch.float32))
    assert not dispatch.use_triton(torch.randn(2, dtype=torch.float64))
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(ops.soft_pool2d(x, 3, 2, 1), ops.soft_pool2d_reference(x, 3, 2, 1))
