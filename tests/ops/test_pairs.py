"""The down/up pair protocol: every valid combination, its shapes, gradients and errors."""

import itertools
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import seg.ops as ops

ALL_DOWNS = ["max", "avg", "lift", "soft", "lip", "stride"]
ALL_UPS = ["lift", "maxunpool", "bilinear", "nearest", "transposed"]
NEEDS = {"lift": "lift", "maxunpool": "max"}
VALID = [(d, u) for d, u in itertools.product(ALL_DOWNS, ALL_UPS) if NEEDS.get(u, d) == d]
INVALID = [(d, u) for d, u in itertools.product(ALL_DOWNS, ALL_UPS) if NEEDS.get(u, d) != d]


def test_registry_lists_exactly_the_valid_pairs():
    assert sorted(ops.valid_pairs()) == sorted(VALID)
    assert len(VALID) == 6 * 3 + 2


@pytest.mark.parametrize("down, up", VALID)
def test_pair_shapes_on_odd_size_and_gradients_reach_every_parameter(down, up):
    pair = ops.build_pool_pair(down, up, channels=4)
    with torch.no_grad():  # non-trivial values: zero-initialised layers hide gradient paths
        for p in pair.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2, 4, 97, 131, requires_grad=True)
    y, skip = pair.down(x)
    assert y.shape == (2, 4, 49, 66)
    out = pair.up(torch.tanh(y), skip)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in pair.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("down, up", INVALID)
def test_impossible_pairs_raise_and_list_the_valid_ones(down, up):
    with pytest.raises(ValueError, match="Valid pairs") as info:
        ops.build_pool_pair(down, up, channels=4)
    assert "max/maxunpool" in str(info.value) and "lift/lift" in str(info.value)


def test_unknown_names_and_options_raise():
    with pytest.raises(ValueError, match="unknown down"):
        ops.build_pool_pair("median", "bilinear", channels=4)
    with pytest.raises(ValueError, match="unknown up"):
        ops.build_pool_pair("max", "pixelshuffle", channels=4)
    with pytest.raises(ValueError, match="predictor"):
        ops.build_pool_pair("max", "maxunpool", channels=4, predictor="haar")
    pair = ops.build_pool_pair("lift", "lift", channels=4, predictor="haar", output="sum")
    assert pair.pool.lift.predictor == "haar" and pair.pool.lift.output == "sum"


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_lift_pair_up_inverts_down(size):
    pair = ops.build_pool_pair("lift", "lift", channels=3, kernel_size=3).double()
    with torch.no_grad():
        for p in pair.parameters():
            p.normal_(0, 0.5)
    x = torch.randn(1, 3, *size, dtype=torch.float64)
    y, skip = pair.down(x)
    torch.testing.assert_close(pair.up(y, skip), x, atol=1e-9, rtol=0)


def test_maxunpool_pair_puts_each_max_back_where_it_was():
    pair = ops.build_pool_pair("max", "maxunpool", channels=1)
    x = torch.randn(1, 1, 5, 7)
    y, skip = pair.down(x)
    out = pair.up(y, skip)
    # naive: each 2x2 (ceil-mode) window keeps its max at its position, zeros elsewhere
    expected = torch.zeros_like(x)
    for i in range(0, 5, 2):
        for j in range(0, 7, 2):
            window = x[0, 0, i : i + 2, j : j + 2]
            k = int(window.argmax())
            r, c = divmod(k, window.shape[1])
            expected[0, 0, i + r, j + c] = window.max()
            assert y[0, 0, i // 2, j // 2] == window.max()
    torch.testing.assert_close(out, expected)


def test_baseline_downs_match_torch_pooling():
    x = torch.randn(1, 2, 7, 8)
    y, _ = ops.build_pool_pair("avg", "bilinear", channels=2).down(x)
    torch.testing.assert_close(y, F.avg_pool2d(x, 2, 2, ceil_mode=True))
    y, _ = ops.build_pool_pair("soft", "nearest", channels=2).down(x)
    padded = F.pad(x, (0, 0, 0, 1), mode="replicate")
    torch.testing.assert_close(y, ops.soft_pool2d(padded, 2))
    # the padded last row repeats itself, so its windows pool only the valid row
    torch.testing.assert_close(y[..., -1, :], ops.soft_pool1d(x[..., -1, :], 2))


def test_importing_ops_pulls_in_no_data_or_logging_stack():
    code = (
        "import sys, seg.ops; "
        "bad = [m for m in ('albumentations', 'cv2', 'tensorboard', 'torch.utils.tensorboard') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
