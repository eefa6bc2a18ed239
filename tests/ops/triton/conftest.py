"""Fixtures for the kernel tests: the Triton backend switched on for the test's duration."""

import pytest
import torch


@pytest.fixture
def triton_backend(monkeypatch):
    """SEG_OPS_BACKEND=triton; on CPU the kernels run in Triton's interpreter (see tests/conftest.py)."""
    pytest.importorskip("triton")
    from seg.ops import dispatch

    monkeypatch.setenv("SEG_OPS_BACKEND", "triton")
    if dispatch.triton_kernels() is None:
        pytest.fail("seg.ops.triton did not load: the kernels are missing")
    return "cuda" if torch.cuda.is_available() else "cpu"
