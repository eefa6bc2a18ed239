"""The training loop: exact resume, the NaN guard, the data stream, the LR schedule, errors."""

from __future__ import annotations

import copy
import json
import math
import resource

import pytest
import torch
import torch.nn.functional as F

from seg.config import ConfigError
from seg.engine import TrainingDiverged, load_checkpoint, train
from seg.engine import trainer as trainer_module
from seg.engine.distributed import DistInfo
from seg.engine.trainer import TrainSampler, build_run, poly_lr_factor, train_step


def _take(iterator, count):
    return [next(iterator) for _ in range(count)]


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, make_config):
    straight = make_config(tmp_path / "straight")
    train(straight)
    # Interrupted after step 2 (between checkpoints), then resumed with data workers on:
    # the stream and every augmentation depend on the position only, not on the workers.
    split = make_config(tmp_path / "split")
    result = train(split, stop_after=2)
    assert result["iteration"] == 2
    assert load_checkpoint(tmp_path / "split" / "last.pt")["iteration"] == 2
    resumed = make_config(tmp_path / "split", ["train.workers=2"])
    train(resumed, resume=True)
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["iteration"] == b["iteration"] == 6
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    momentum_a = a["optimizer"]["state"]
    momentum_b = b["optimizer"]["state"]
    for key in momentum_a:
        assert torch.equal(momentum_a[key]["momentum_buffer"], momentum_b[key]["momentum_buffer"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 6
    metrics_a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    metrics_b = json.loads((tmp_path / "split" / "metrics.json").read_text())
    assert metrics_a["confusion_matrix"] == metrics_b["confusion_matrix"]
    # The cost record spans both jobs of the split run: every step timed once.
    assert load_checkpoint(tmp_path / "split" / "last.pt")["cost"]["timed_iters"] == 6


def test_metrics_record_what_training_cost(tmp_path, make_config):
    train(make_config(tmp_path))
    record = json.loads((tmp_path / "metrics.json").read_text())["train"]
    model = trainer_module.build_model(make_config(tmp_path).model)
    assert record["params"] == sum(p.numel() for p in model.parameters())
    assert record["iters"] == 6 and record["world_size"] == 1
    assert 0 < record["seconds_per_iter"] < 60
    # CPU: this process's peak resident set when training ended (torch alone is > 100 MiB).
    assert record["memory"] == "cpu_max_rss"
    peak_now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert 100 < record["peak_memory_mib"] <= peak_now


def test_checkpoint_holds_everything_to_continue_and_to_infer(tmp_path, make_config):
    train(make_config(tmp_path))
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(state) >= {
        "model", "optimizer", "scheduler", "scaler", "iteration", "best_miou", "rng", "config",
        "meta",
    }  # fmt: skip
    assert state["config"]["model"]["width"] == 0.0625
    assert state["meta"]["classes"][:2] == ["background", "disc"]
    assert len(state["meta"]["palette"]) == 4
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["best_miou"] == pytest.approx(max(best["best_miou"], state["best_miou"]))
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "train.log").is_file()


def test_resume_at_the_end_changes_nothing(tmp_path, make_config):
    cfg = make_config(tmp_path)
    train(cfg)
    before = load_checkpoint(tmp_path / "last.pt")
    metrics = train(cfg, resume=tmp_path / "last.pt")
    after = load_checkpoint(tmp_path / "last.pt")
    assert after["iteration"] == 6 and metrics["mIoU"] >= 0
    for key, tensor in before["model"].items():
        assert torch.equal(tensor, after["model"][key])


def test_resume_with_another_model_is_refused(tmp_path, make_config):
    train(make_config(tmp_path, ["train.iters=1"]))
    with pytest.raises(ConfigError, match=r"cannot resume .*model.up: .* -> 'bilinear'"):
        train(make_config(tmp_path, ["train.iters=1", "model.up=bilinear"]), resume=True)


def test_nan_loss_stops_with_the_iteration_and_term(tmp_path, make_config, monkeypatch):
    real_build = trainer_module.build_losses

    def build_with_nan(cfg, num_classes, ignore_index):
        weight, ce = real_build(cfg, num_classes, ignore_index)["ce"]
        calls = {"n": 0}

        def poisoned(logits, target):
            calls["n"] += 1
            loss = ce(logits, target)
            return loss * math.nan if calls["n"] == 5 else loss

        return {"ce": (weight, poisoned)}

    monkeypatch.setattr(trainer_module, "build_losses", build_with_nan)
    with pytest.raises(TrainingDiverged, match=r"loss term ce is NaN/inf at iteration 5"):
        train(make_config(tmp_path))
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["iteration"] == 3  # the last good checkpoint stays
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())


def test_a_zero_class_weight_that_gives_a_nan_loss_is_named(tmp_path, make_config):
    # Every class weighted 0: the weighted cross-entropy's mean is 0/0 on the first batch.
    zeros = "train.class_weights=[0.0, 0.0, 0.0, 0.0]"
    with pytest.raises(TrainingDiverged, match=r"class weight 0, .* data.ignore_index"):
        train(make_config(tmp_path, [zeros, "train.iters=1"]))


def test_sampler_shards_epochs_and_resumes_by_position():
    size, world = 10, 3
    streams = [iter(TrainSampler(size, rank, world, seed=4)) for rank in range(world)]
    epoch = [_take(stream, size // world) for stream in streams]
    indices = [index for part in epoch for index, _ in part]
    assert len(set(indices)) == len(indices) == 9  # disjoint, drop_last
    seeds = [seed for part in epoch for _, seed in part]
    assert len(set(seeds)) == len(seeds)
    full = _take(iter(TrainSampler(size, 1, world, seed=4)), 20)
    resumed = _take(iter(TrainSampler(size, 1, world, seed=4, start=7)), 13)
    assert resumed == full[7:]
    second_epoch = [index for index, _ in full[3:6]]
    assert second_epoch != [index for index, _ in full[:3]]  # reshuffled per epoch


def test_sampler_needs_an_image_per_process():
    with pytest.raises(ConfigError, match="fewer than the 4 processes"):
        TrainSampler(3, 0, 4, seed=0)


def test_poly_lr_with_warmup(make_config, tmp_path):
    cfg = make_config(
        tmp_path, ["train.iters=100", "train.warmup_iters=10", "train.warmup_ratio=0.1"]
    ).train
    factor = poly_lr_factor(cfg)
    assert factor(0) == pytest.approx(0.1)
    assert factor(5) == pytest.approx((0.1 + 0.9 * 0.5) * (1 - 0.05) ** 0.9)
    assert factor(50) == pytest.approx(0.5**0.9)
    assert factor(100) == 0.0
    with_min = poly_lr_factor(make_config(tmp_path, ["train.min_lr=0.005"]).train)
    assert with_min(6) == pytest.approx(0.005 / 0.05)  # min_lr / lr at the end


def test_class_count_mismatch_and_missing_data_are_clear(tmp_path, make_config):
    with pytest.raises(ConfigError, match="set model.num_classes=4"):
        train(make_config(tmp_path / "a", ["model.num_classes=5"]))
    with pytest.raises(ConfigError, match="model.in_channels is 1, but .* RGB images"):
        train(make_config(tmp_path / "a", ["model.in_channels=1"]))
    voc = make_config(tmp_path / "b", data={"name": "voc", "root": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        train(voc)


def test_an_empty_validation_split_is_refused_before_training(tmp_path, make_config):
    empty = "data.num_samples={train: 8, val: 0, test: 2}"
    with pytest.raises(ConfigError, match=r"the 'val' split \(eval.split\) .* has no images"):
        train(make_config(tmp_path / "run", [empty]))
    assert not (tmp_path / "run").exists()


def test_class_weights_length_is_checked(tmp_path, make_config):
    with pytest.raises(ConfigError, match="class_weights has 2 values for 4 classes"):
        train(make_config(tmp_path, ["train.class_weights=[1, 2]"]))


@pytest.mark.parametrize("loss", ["{ce: 1.0, dice: 0.5}", "{lovasz: 1.0}"])
def test_other_losses_train_and_are_logged(tmp_path, make_config, loss):
    metrics = train(make_config(tmp_path, [f"train.loss={loss}", "train.iters=2"]))
    assert 0.0 <= metrics["mIoU"] <= 1.0
    log = (tmp_path / "train.log").read_text()
    for name in ("dice", "lovasz"):
        assert (f"{name} " in log) == (name in loss)


def test_sync_bn_with_one_process_warns_and_trains(tmp_path, make_config):
    train(make_config(tmp_path, ["train.sync_bn=true", "train.iters=1"]))
    assert "sync_bn is on but there is one process" in (tmp_path / "train.log").read_text()


def test_median_frequency_class_weights(tmp_path, make_config):
    train(make_config(tmp_path, ["train.class_weights=median_frequency", "train.iters=1"]))
    assert "median-frequency class weights: [" in (tmp_path / "train.log").read_text()


def _run_and_batch(cfg):
    """A `Run` as `train()` builds it, and a fixed batch of the config's size."""
    torch.manual_seed(0)
    losses = trainer_module.build_losses(cfg.train, cfg.model["num_classes"], 255)
    run = build_run(cfg, DistInfo(), {"classes": []}, losses)
    run.net.train()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 32, 32, generator=g)
    masks = torch.randint(0, 4, (2, 32, 32), generator=g)
    masks[:, :3] = 255
    return run, (images, masks)


def test_train_step_is_forward_loss_backward_clip_update(tmp_path, make_config):
    cfg = make_config(tmp_path, ["train.grad_clip=0.05", "train.warmup_iters=0"])
    run, (images, masks) = _run_and_batch(cfg)
    # The reference: the same model and optimizer, stepped by hand.
    reference = copy.deepcopy(run.model)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loss = F.cross_entropy(reference(images), masks, ignore_index=255)
    loss.backward()  # the LiftPool regularisers reach the gradient through the layers
    norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.05)
    assert norm > 0.05  # clipping changes this step
    optimizer.step()

    terms, flags = train_step(run, (images, masks))
    assert run.iteration == 1 and run.lr == pytest.approx(0.05)
    assert terms["ce"].item() == pytest.approx(loss.item(), rel=1e-6)
    assert {"reg_u", "reg_p"} <= set(terms) and flags.tolist() == [0.0, 0.0, 0.0]
    for (name, a), b in zip(run.model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)
    assert run.scheduler.get_last_lr()[0] < 0.05  # the schedule moved on


def test_train_step_refuses_a_nan_loss_and_leaves_the_weights(tmp_path, make_config):
    run, (images, masks) = _run_and_batch(make_config(tmp_path))
    before = {name: p.detach().clone() for name, p in run.model.named_parameters()}
    images[0, 0, 0, 0] = math.nan
    with pytest.raises(TrainingDiverged, match="is NaN/inf at iteration 1"):
        train_step(run, (images, masks))
    assert run.iteration == 0  # no update (BatchNorm's running stats saw the batch: the
    for name, param in run.model.named_parameters():  # checkpoint on disk is the good state)
        assert torch.equal(param, before[name]), name


class _NanGradient(torch.autograd.Function):
    """0 forward, NaN backward: a finite loss whose backward overflowed."""

    @staticmethod
    def forward(ctx, logits):
        ctx.shape = logits.shape
        return logits.new_zeros(())

    @staticmethod
    def backward(ctx, grad):
        return torch.full(ctx.shape, math.nan)


@pytest.mark.parametrize("clip", ["null", "1.0"])
def test_train_step_refuses_a_nan_gradient_under_a_finite_loss(tmp_path, make_config, clip):
    run, batch = _run_and_batch(make_config(tmp_path, [f"train.grad_clip={clip}"]))
    run.losses["overflow"] = (1.0, lambda logits, masks: _NanGradient.apply(logits))
    before = {name: p.detach().clone() for name, p in run.model.named_parameters()}
    with pytest.raises(TrainingDiverged, match=r"^the gradient is NaN/inf, every loss term "):
        train_step(run, batch)
    assert run.iteration == 0
    for name, param in run.model.named_parameters():
        assert torch.equal(param, before[name]), name


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_under_a_grad_scaler_a_nan_gradient_skips_the_step(tmp_path, make_config):
    """fp16's GradScaler: an overflowed gradient is no divergence; the scaler skips the
    update and halves its scale, and training goes on."""
    run, batch = _run_and_batch(make_config(tmp_path))
    run.scaler = torch.amp.GradScaler("cpu", init_scale=8.0)  # as on a GPU: enabled
    run.losses["overflow"] = (1.0, lambda logits, masks: _NanGradient.apply(logits))
    before = {name: p.detach().clone() for name, p in run.model.named_parameters()}
    _, flags = train_step(run, batch)
    assert flags.tolist() == [0.0, 0.0, 0.0] and run.scaler.get_scale() == 4.0
    for name, param in run.model.named_parameters():
        assert torch.equal(param, before[name]), name


def test_a_run_without_a_scaler_resumes_under_one(tmp_path, make_config):
    """train.amp=fp16 started on a CPU (no scaler) and resumed where fp16 is on: the
    scaler starts afresh instead of refusing the run's empty scaler state."""
    cfg = make_config(tmp_path, ["train.amp=fp16"])
    run, _ = _run_and_batch(cfg)
    assert not run.scaler.is_enabled()
    state = run.state_dict()
    assert state["scaler"] == {}
    again, _ = _run_and_batch(cfg)
    again.scaler = torch.amp.GradScaler("cpu", init_scale=8.0)  # as on a GPU: enabled
    again.load_state_dict(state)
    assert again.scaler.is_enabled() and again.scaler.get_scale() == 8.0


def test_train_step_flags_a_signal(tmp_path, make_config):
    run, batch = _run_and_batch(make_config(tmp_path))
    stop = trainer_module._Stop(signum=15)
    _, flags = train_step(run, batch, stop)
    assert flags.tolist() == [0.0, 1.0, 0.0]


def test_run_state_dict_round_trip_continues_identically(tmp_path, make_config):
    cfg = make_config(tmp_path)
    run, batch = _run_and_batch(cfg)
    for _ in range(2):
        train_step(run, batch)
    run.best_miou, run.cost["timed_iters"] = 0.25, 2
    state = copy.deepcopy(run.state_dict())
    assert state["iteration"] == 2 and state["config"] == cfg.to_dict()

    other, _ = _run_and_batch(cfg)
    train_step(other, batch)  # a different history, overwritten by the load
    other.load_state_dict(state)
    again = other.state_dict()
    assert (again["iteration"], again["best_miou"], again["cost"]) == (2, 0.25, run.cost)
    assert again["scheduler"] == state["scheduler"]
    for a, b in ((run, other),):
        train_step(a, batch)
        train_step(b, batch)
        for key, tensor in a.model.state_dict().items():
            assert torch.equal(tensor, b.model.state_dict()[key]), key


def test_a_grad_scaler_leaves_the_step_and_the_regulariser_as_they_were(tmp_path, make_config):
    """fp16's GradScaler multiplies the loss and divides the gradients by its scale; the
    LiftPool regulariser (which the layers add to the gradient themselves) must follow."""
    cfg = make_config(tmp_path, ["train.warmup_iters=0", "train.lambda_p=1.0"])
    plain, batch = _run_and_batch(cfg)
    scaled, _ = _run_and_batch(cfg)
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for run in (plain, scaled):
        train_step(run, batch)
    for (name, a), b in zip(plain.model.named_parameters(), scaled.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_the_log_names_the_model_that_runs_not_only_the_config(tmp_path, make_config):
    """A --set that changes the pooling pair keeps the config's name: the log says what ran."""
    cfg = make_config(tmp_path, ["model.down=max", "model.up=maxunpool", "train.iters=1"])
    train(cfg)
    first = (tmp_path / "train.log").read_text().splitlines()[0]
    assert f"training {cfg.name} (model: " in first
    assert " down=max up=maxunpool" in first
