"""Test-session set-up shared by every test folder.

Without a GPU, Triton kernels run through Triton's interpreter, which must be
switched on before anything imports triton: hence here, first.
"""

import copy
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


TINY = {
    "model": {"name": "segnet", "num_classes": 4, "width": 0.0625, "depth": 3},
    "data": {
        "name": "synthetic",
        "size": 32,
        "num_classes": 4,
        "num_samples": {"train": 12, "val": 5, "test": 3},
    },
    "train": {"batch_size": 2, "workers": 0, "lr": 0.05, "log_interval": 1},
    "eval": {"batch_size": 2, "workers": 0},
}


@pytest.fixture(scope="session")
def tiny_raw():
    """A training config small enough for a CPU test (SegNet x1/16, depth 3, 32x32 scenes), as
    the dict a YAML file holds. Each call returns a fresh copy with ``sections`` merged in."""

    def make(**sections):
        raw = copy.deepcopy(TINY)
        for name, values in sections.items():
            raw.setdefault(name, {}).update(values)
        return raw

    return make


@pytest.fixture(scope="session")
def load_tool():
    """``load_tool("check_data")``: the module of ``tools/check_data.py``, loaded from its file
    (the tools are scripts, not a package: tests call their ``main(argv)`` as a user would)."""
    import importlib.util
    from pathlib import Path

    tools = Path(__file__).resolve().parents[1] / "tools"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"tools_{name}", tools / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
