"""The LiftPool regulariser: what a training step gets is exactly the gradient of
``task + sum over every LiftDownPool call of (lambda_u * c_u + lambda_p * c_p)``, also
under activation checkpointing, DDP and torch.compile, and nothing outlives the step.

The truth each test compares with is explicit: forward hooks capture every LiftDownPool
call's input, the paper's c_u / c_p are recomputed from those inputs with the functional
reference, added to the task loss, and differentiated.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

import seg.ops as ops
from seg.ops.lifting import _lift_down2d

LAMBDA_U, LAMBDA_P = 0.3, 0.7


def randomise(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return module


class Net(nn.Module):
    """conv -> LiftDown (x2, the same layer twice) -> a side branch using details only."""

    def __init__(self, reentrant: bool | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.down = ops.LiftDownPool2d(4)
        self.side = ops.LiftDownPool2d(4)
        self.head = nn.Conv2d(4, 2, 1)
        self.reentrant = reentrant

    def body(self, h):
        y = self.down(self.down(h))  # one layer, two calls
        bands = self.side.decompose(h)
        return y + 0.5 * (bands.lh + bands.hh)[..., : y.shape[-2], : y.shape[-1]].sum()

    def forward(self, x):
        h = self.conv(x)
        if self.reentrant is None:
            return self.head(self.body(h))
        return self.head(checkpoint(self.body, h, use_reentrant=self.reentrant))


class capture_calls:  # noqa: N801
    """Every LiftDownPool2d call's (layer, input), through forward or decompose."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, ops.LiftDownPool2d)]
        self.calls: list[tuple[nn.Module, torch.Tensor]] = []

    def __enter__(self):
        for layer in self.layers:
            original = layer.decompose

            def decompose(x, layer=layer, original=original):
                self.calls.append((layer, x))
                return original(x)

            layer.decompose = decompose  # forward() calls self.decompose too
        return self.calls

    def __exit__(self, *exc):
        for layer in self.layers:
            del layer.decompose


def _explicit_grads(model: Net, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of task + the regulariser of every call, recomputed from captured inputs."""
    ops.set_lift_regularization(model, 0.0, 0.0)  # the model adds nothing by itself here
    model.zero_grad()
    with capture_calls(model) as inputs:
        task = model(x).square().mean()
    reg = 0.0
    for module, inp in inputs:
        _, terms = _lift_down2d(inp, *module.predictors, with_reg=True)
        reg = reg + LAMBDA_U * terms.c_u + LAMBDA_P * terms.c_p
    (task + reg).backward()
    assert len(inputs) == 3  # down twice, side once
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _implicit_grads(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    ops.set_lift_regularization(model, LAMBDA_U, LAMBDA_P)
    model.zero_grad()
    model(x).square().mean().backward()
    named = model.module if hasattr(model, "module") else model
    named = getattr(named, "_orig_mod", named)
    return {name: p.grad.clone() for name, p in named.named_parameters()}


def _assert_same(got, expected):
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name)


def _pair():
    torch.manual_seed(0)
    model = randomise(Net()).double()
    return model, torch.randn(2, 3, 8, 10, dtype=torch.float64)


def test_every_call_counts_once_each_even_when_only_details_are_used():
    model, x = _pair()
    expected = _explicit_grads(model, x)
    _assert_same(_implicit_grads(model, x), expected)
    # and the regulariser really changes the gradient (the weights are not ignored)
    ops.set_lift_regularization(model, 0.0, 0.0)
    model.zero_grad()
    model(x).square().mean().backward()
    assert not torch.allclose(
        model.down.predict_w.mix_weight.grad, expected["down.predict_w.mix_weight"]
    )


class InPlaceAfterPool(Net):
    """In-place ops on what the layer returns, as a network built for nn.MaxPool2d does."""

    def body(self, h):
        y = self.down(nn.functional.relu(self.down(h), inplace=True))
        bands = self.side.decompose(h)
        detail = bands.lh.mul_(0.5).add_(bands.hh)
        return y + detail[..., : y.shape[-2], : y.shape[-1]].sum()


def test_in_place_ops_after_the_layer_train():
    torch.manual_seed(0)
    model = randomise(InPlaceAfterPool()).double()
    x = torch.randn(2, 3, 8, 10, dtype=torch.float64)
    expected = _explicit_grads(model, x)
    _assert_same(_implicit_grads(model, x), expected)


@pytest.mark.parametrize("reentrant", [True, False])
def test_activation_checkpointing(reentrant):
    model, x = _pair()
    expected = _explicit_grads(model, x)
    model.reentrant = reentrant
    _assert_same(_implicit_grads(model, x), expected)


def test_torch_compile():
    model, x = _pair()
    expected = _explicit_grads(model, x)
    ops.set_lift_regularization(model, LAMBDA_U, LAMBDA_P)
    compiled = torch.compile(model, backend="aot_eager", dynamic=False)
    _assert_same(_implicit_grads(compiled, x), expected)


def test_ddp(tmp_path):
    model, x = _pair()
    expected = _explicit_grads(model, x)
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(model)
        _assert_same(_implicit_grads(wrapped, x), expected)
    finally:
        dist.destroy_process_group()


def test_recorded_values_are_the_sum_over_calls():
    model, x = _pair()
    ops.set_lift_regularization(model, LAMBDA_U, LAMBDA_P)
    with capture_calls(model) as inputs, ops.record_lift_regularization() as record:
        model(x)
    c_u = sum(_lift_down2d(i, *m.predictors, with_reg=True)[1].c_u for m, i in inputs)
    c_p = sum(_lift_down2d(i, *m.predictors, with_reg=True)[1].c_p for m, i in inputs)
    assert record.calls == 3
    torch.testing.assert_close(record.c_u, c_u.detach())
    torch.testing.assert_close(record.c_p, c_p.detach())
    torch.testing.assert_close(record.loss, (LAMBDA_U * c_u + LAMBDA_P * c_p).detach())
    assert not record.loss.requires_grad
    model(x)  # outside the scope nothing more is recorded
    assert record.calls == 3


def test_nothing_outlives_the_step_and_eval_adds_nothing():
    model, x = _pair()
    ops.set_lift_regularization(model, LAMBDA_U, LAMBDA_P)
    out = model(x)
    probe = weakref.ref(out)
    out.square().mean().backward()
    del out
    gc.collect()
    assert probe() is None
    for module in model.modules():
        for value in vars(module).values():
            assert not (isinstance(value, torch.Tensor) and value.grad_fn is not None)
    model.eval()
    with ops.record_lift_regularization() as record:
        model(x)
    assert record.calls == 0 and float(record.loss) == 0.0


def test_off_by_default_and_set_turns_on_the_papers_weights():
    down = ops.LiftDownPool2d(4)
    assert (down.lambda_u, down.lambda_p) == (0.0, 0.0)
    with ops.record_lift_regularization() as record:
        down(torch.randn(1, 4, 4, 4))
    assert record.calls == 0  # off: not even computed
    model = nn.Sequential(ops.LiftDownPool2d(2), nn.Sequential(ops.LiftDownPool1d(2)))
    assert ops.set_lift_regularization(model) == 2
    assert all((m.lambda_u, m.lambda_p) == (0.01, 0.1) for m in (model[0], model[1][0]))
