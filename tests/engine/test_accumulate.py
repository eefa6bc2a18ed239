"""Gradient accumulation: train.accumulate K micro-batches make one optimizer step."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.distributed as dist
from torch import nn

from seg.config import ConfigError
from seg.engine import TrainingDiverged, load_checkpoint, train
from seg.engine import trainer as trainer_module
from seg.engine.distributed import DistInfo
from seg.engine.trainer import build_run, train_step


def _run(cfg) -> trainer_module.Run:
    """A `Run` as `train()` builds it, from seed 0, with BatchNorm on its running statistics:
    BatchNorm normalises each micro-batch on its own, the one thing accumulation can't equal."""
    torch.manual_seed(0)
    losses = trainer_module.build_losses(cfg.train, cfg.model["num_classes"], 255)
    run = build_run(cfg, DistInfo(), {"classes": []}, losses)
    run.net.train()
    for module in run.model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    return run


def _batch(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, 32, 32, generator=g)
    masks = torch.randint(0, 4, (size, 32, 32), generator=g)
    masks[:, :3] = 255  # the same number of ignored pixels in every image
    return images, masks


def _halves(batch):
    images, masks = batch
    return [(images[:4], masks[:4]), (images[4:], masks[4:])]


def test_four_times_two_steps_like_eight_times_one(tmp_path, make_config):
    common = ["train.grad_clip=0.5", "train.warmup_iters=0"]  # clipping of the summed gradient
    big = _run(make_config(tmp_path, [*common, "train.batch_size=8"]))
    accumulated = _run(make_config(tmp_path, [*common, "train.batch_size=4", "train.accumulate=2"]))
    for seed in (1, 2, 3):
        batch = _batch(8, seed)
        terms_big, _ = train_step(big, batch)
        terms_acc, flags = train_step(accumulated, _halves(batch))
        assert flags.tolist() == [0.0, 0.0, 0.0]
        assert set(terms_acc) == set(terms_big) >= {"ce", "reg_u", "reg_p"}  # LiftPool's too
        for name, term in terms_big.items():
            torch.testing.assert_close(terms_acc[name], term, rtol=1e-5, atol=1e-6, msg=name)
    assert big.iteration == accumulated.iteration == 3  # optimizer steps
    assert accumulated.scheduler.last_epoch == 3 and accumulated.lr == pytest.approx(big.lr)
    reference = big.model.state_dict()
    for name, tensor in accumulated.model.state_dict().items():
        torch.testing.assert_close(tensor, reference[name], rtol=1e-4, atol=1e-6, msg=name)


def test_training_with_accumulation_reads_the_stream_of_the_larger_batch(
    tmp_path, make_config, monkeypatch
):
    seen: dict[str, list] = {"big": [], "acc": []}
    real_step = trainer_module.train_step
    key = {"value": "big"}

    def recording_step(run, batch, stop=None):
        seen[key["value"]].append(torch.cat([images for images, _ in batch]))
        return real_step(run, batch, stop)

    monkeypatch.setattr(trainer_module, "train_step", recording_step)
    quick = ["train.iters=3", "train.val_interval=0"]
    train(make_config(tmp_path / "big", [*quick, "train.batch_size=8"]))
    key["value"] = "acc"
    train(make_config(tmp_path / "acc", [*quick, "train.batch_size=4", "train.accumulate=2"]))
    assert len(seen["acc"]) == len(seen["big"]) == 3  # one call per optimizer step
    for big, accumulated in zip(seen["big"], seen["acc"]):
        assert torch.equal(big, accumulated)  # the same images, augmented alike
    last = load_checkpoint(tmp_path / "acc" / "last.pt")
    assert last["iteration"] == 3 and last["scheduler"]["last_epoch"] == 3
    assert last["cost"]["timed_iters"] == 3


def test_a_resumed_accumulating_run_ends_as_an_uninterrupted_one(tmp_path, make_config):
    accumulate = ["train.batch_size=2", "train.accumulate=2"]
    train(make_config(tmp_path / "straight", accumulate))
    assert train(make_config(tmp_path / "split", accumulate), stop_after=2)["iteration"] == 2
    train(make_config(tmp_path / "split", accumulate), resume=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["iteration"] == b["iteration"] == 6
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    with pytest.raises(ConfigError, match=r"cannot resume .*train.accumulate: 2 -> 3"):
        train(make_config(tmp_path / "split", ["train.batch_size=2", "train.accumulate=3"]), True)


def test_a_nan_in_any_micro_batch_stops_before_the_update(tmp_path, make_config):
    run = _run(make_config(tmp_path, ["train.batch_size=4", "train.accumulate=2"]))
    before = {name: p.detach().clone() for name, p in run.model.named_parameters()}
    micro_batches = _halves(_batch(8, 1))
    micro_batches[1][0][0, 0, 0, 0] = math.nan  # the second micro-batch only
    with pytest.raises(TrainingDiverged, match="is NaN/inf at iteration 1"):
        train_step(run, micro_batches)
    assert run.iteration == 0
    for name, param in run.model.named_parameters():
        assert torch.equal(param, before[name]), name
        assert param.grad is None, name  # no half-accumulated gradient is left behind


def test_ddp_synchronises_on_the_last_micro_batch_only(tmp_path, make_config):
    cfg = make_config(tmp_path, ["train.batch_size=2", "train.accumulate=3"])
    plain = _run(cfg)
    run = _run(cfg)
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(run.model)
        syncs = []
        real_no_sync = ddp.no_sync

        @contextlib.contextmanager
        def counting_no_sync():
            syncs.append("skipped")
            with real_no_sync():
                yield

        ddp.no_sync = counting_no_sync
        run.net = ddp
        images, masks = _batch(6, 1)
        micro_batches = [(images[i : i + 2], masks[i : i + 2]) for i in (0, 2, 4)]
        train_step(run, micro_batches)
        train_step(plain, micro_batches)
    finally:
        dist.destroy_process_group()
    assert syncs == ["skipped", "skipped"]  # micro-batches 1 and 2; the third synchronises
    for name, tensor in run.model.state_dict().items():
        torch.testing.assert_close(tensor, plain.model.state_dict()[name], msg=name)


def test_accumulate_must_be_a_positive_count(tmp_path, make_config):
    with pytest.raises(ConfigError, match="train.accumulate must be >= 1, got 0"):
        make_config(tmp_path, ["train.accumulate=0"])
