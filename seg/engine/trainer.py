"""The training loop: one function, read top to bottom.

`train(cfg)` builds the data, model, optimizer and schedule a `Config` describes, then
runs ``cfg.train.iters`` optimizer steps on one process or under ``torchrun`` (DDP),
validating every ``val_interval`` steps and writing ``last.pt`` / ``best.pt`` atomically.

Resuming is exact: the sampler's stream and every augmentation are functions of
``(seed, rank, position in the stream)``, and the checkpoint holds every other state, so
a run stopped at step k and resumed ends with the weights of an uninterrupted run. With
``train.accumulate`` K, a step reads K micro-batches; checkpoints fall between steps, so
step k resumes at position ``k * batch_size * K``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from seg.config import Config, ConfigError, TrainConfig
from seg.data import build_dataset, build_val_transform, median_frequency_weights
from seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from seg.engine import checkpoint as ckpt
from seg.engine import rundir
from seg.engine.checkpoint import data_meta
from seg.engine.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    init_distributed,
    on_main_process,
)
from seg.engine.evaluator import evaluate, format_table, json_ready
from seg.engine.losses import build_losses
from seg.engine.runtime import (
    autocast_dtype,
    describe_device,
    peak_memory_mib,
    synchronize,
    use_compile,
)
from seg.engine.visualize import panel
from seg.models import build_model
from seg.ops import record_lift_regularization, set_lift_regularization

log = logging.getLogger("seg")


class TrainingDiverged(RuntimeError):
    """A loss term or the gradient became NaN or infinite; the last checkpoint on disk is the
    last good one."""


# ---------------------------------------------------------------- data stream


class TrainSampler(Sampler):
    """This process's endless stream of ``(index, seed)`` pairs, from position ``start``.

    Epoch ``e`` is `DistributedSampler`'s shuffle for epoch ``e`` (``drop_last``, so every
    process sees as many samples); ``seed`` is the augmentation seed of that draw, a function
    of ``(seed, rank, position)`` only. Starting at ``start`` skips whole epochs by arithmetic.
    """

    def __init__(self, dataset_size: int, rank: int, world_size: int, seed: int, start: int = 0):
        self.inner = DistributedSampler(
            range(dataset_size),
            num_replicas=world_size,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        self.per_epoch = len(self.inner)
        if self.per_epoch == 0:
            raise ConfigError(
                f"the training set has {dataset_size} images, fewer than the {world_size} "
                "processes: each process needs at least one"
            )
        self.rank, self.seed, self.start = rank, seed, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start
        while True:
            epoch, offset = divmod(position, self.per_epoch)
            self.inner.set_epoch(epoch)
            for index in list(self.inner)[offset:]:
                state = np.random.SeedSequence([self.seed, self.rank, position]).generate_state(1)
                yield index, int(state[0])
                position += 1


class SeededSamples(Dataset):
    """``dataset[(index, seed)]`` -> ``dataset.sample(index, seed)``."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        return self.dataset.sample(index, seed)


def _ignore_stop_signals(worker_id: int) -> None:
    # Ctrl-C and a scheduler's SIGTERM reach the whole process group; the main process
    # decides when to stop (it finishes the step and saves), so workers must not die under
    # them mid-batch. The main process shuts them down as it exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# ---------------------------------------------------------------- schedule, loss, optimizer


def poly_lr_factor(cfg: TrainConfig) -> Callable[[int], float]:
    """LR multiplier at step ``it``: poly decay to ``min_lr``, times a linear warm-up."""

    def factor(it: int) -> float:
        progress = min(it, cfg.iters) / cfg.iters
        min_ratio = cfg.min_lr / cfg.lr
        value = (1.0 - min_ratio) * (1.0 - progress) ** cfg.poly_power + min_ratio
        if it < cfg.warmup_iters:
            value *= cfg.warmup_ratio + (1.0 - cfg.warmup_ratio) * it / cfg.warmup_iters
        return value

    return factor


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
    )


# ---------------------------------------------------------------- the run


@dataclass
class _Stop:
    """Set by SIGINT/SIGTERM: the loop finishes the step, saves and exits. A second signal
    aborts at once (KeyboardInterrupt), e.g. out of a long validation; the last checkpoint
    on disk stays. Signals within `same_request_s` of the first are that same request
    arriving twice (Ctrl-C or ``kill -- -PGID`` reaches the whole process group, and a
    parent such as tools/compare.py or torchrun forwards it too), not a call to abort."""

    signum: int | None = None
    at: float = 0.0
    same_request_s: float = 2.0

    def __call__(self, signum, frame) -> None:
        now = time.monotonic()
        if self.signum is not None:
            if now - self.at < self.same_request_s:
                return
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: aborted")
        log.warning(
            "received %s: finishing this step, then saving (send it again to abort)",
            signal.Signals(signum).name,
        )
        self.signum, self.at = signum, now


def _setup_logging(is_main: bool) -> None:
    """The log on the console, and (main process) kept in memory until `_log_to_file` can
    write ``train.log``: a run refused on bad input writes nothing into its work dir."""
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    for handler in list(log.handlers):
        if getattr(handler, "_seg_run", False):
            log.removeHandler(handler)
            handler.close()
    handlers: list[logging.Handler] = [_TqdmHandler()]
    if is_main:
        handlers.append(logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=1 << 20))
    for handler in handlers:
        _add_handler(handler)
    log.propagate = False


def _add_handler(handler: logging.Handler) -> None:
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler._seg_run = True
    log.addHandler(handler)


def _log_to_file(path: Path) -> None:
    """From now on (and what was logged before, in order) into ``path``."""
    file = logging.FileHandler(path)
    _add_handler(file)
    for handler in list(log.handlers):
        if isinstance(handler, logging.handlers.MemoryHandler):
            handler.setTarget(file)
            handler.close()  # flushes the records held so far into the file
            log.removeHandler(handler)


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def _empty_cost() -> dict:
    # What training cost: step time (data wait + forward + backward + update, without
    # validation and checkpoints) summed over every job of the run, and the peak memory.
    return {"train_seconds": 0.0, "timed_iters": 0, "peak_memory_mib": 0.0}


@dataclass
class Run:
    """Everything a training run changes as it goes, and the one map of its checkpoint.

    `state_dict` / `load_state_dict` are the only place the checkpoint's keys are written
    and read; `restore_rng` puts the stored generators back once the data loader exists.
    """

    cfg: Config
    meta: dict
    model: nn.Module
    net: nn.Module  # what the step calls: the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    losses: dict[str, tuple[float, Callable[[Tensor, Tensor], Tensor]]]
    device: torch.device
    amp_dtype: torch.dtype | None = None
    iteration: int = 0
    best_miou: float = -math.inf
    cost: dict = field(default_factory=_empty_cost)
    lr: float = math.nan  # the learning rate of the last step
    world_size: int = 1
    # (micro-batches per step, grad-scaler scale) the LiftPool regulariser weights are set for
    reg_weights_for: tuple[int, float] = (1, 1.0)
    _rng: dict | None = field(default=None, repr=False)

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "best_miou": self.best_miou,
            "rng": ckpt.rng_state(),
            "config": self.cfg.to_dict(),
            "meta": self.meta,
            "cost": self.cost,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # {} from a run whose scaler was off (fp16 asked for on a CPU)
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.best_miou = float(state["best_miou"])
        self.cost = dict(state.get("cost", _empty_cost()))
        self._rng = state["rng"]
        stored_world = int(state.get("world_size", self.world_size))
        if stored_world != self.world_size:
            log.warning(
                "resuming on %d process(es) a run started on %d: the global batch and the "
                "data order change, so the result will differ from an uninterrupted run",
                self.world_size,
                stored_world,
            )

    @staticmethod
    def stored_config(state: dict) -> dict:
        """The resolved config a checkpoint was trained with."""
        return state["config"]

    def restore_rng(self) -> None:
        """The generators as they were at the checkpoint (after the loader drew its worker
        seeds, so nothing random differs from a run that was never stopped)."""
        if self._rng is not None:
            ckpt.set_rng_state(self._rng)
            self._rng = None


def build_run(cfg: Config, dist_info: DistInfo, meta: dict, losses: dict) -> Run:
    """Model (on the device, DDP-wrapped when distributed), optimizer, schedule, scaler."""
    tcfg = cfg.train
    model: nn.Module = build_model(cfg.model).to(dist_info.device)
    set_lift_regularization(model, tcfg.lambda_u, tcfg.lambda_p)
    if tcfg.sync_bn:
        if not dist_info.distributed:
            log.warning("train.sync_bn is on but there is one process: using plain BatchNorm")
        elif dist_info.device.type != "cuda":
            log.warning("train.sync_bn needs CUDA (SyncBatchNorm); using plain BatchNorm on CPU")
        else:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = model
    if dist_info.distributed:
        ids = [dist_info.device.index] if dist_info.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if use_compile(tcfg, dist_info.device):
        log.info("train.compile: the training forward runs through torch.compile")
        net = torch.compile(net)
    optimizer = build_optimizer(model, tcfg)
    amp_dtype = autocast_dtype(tcfg, dist_info.device)
    return Run(
        cfg=cfg,
        meta=meta,
        model=model,
        net=net,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lr_factor(tcfg)),
        scaler=torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16),
        losses=losses,
        device=dist_info.device,
        amp_dtype=amp_dtype,
        world_size=dist_info.world_size,
    )


# ---------------------------------------------------------------- one step


def train_step(
    run: Run,
    batch: tuple[Tensor, Tensor] | list[tuple[Tensor, Tensor]],
    stop: _Stop | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """One optimizer step: forward, losses and backward of each micro-batch, then the
    clip, NaN/signal check (loss terms and gradient), update, LR schedule.

    ``batch`` is one ``(images, masks)`` batch, or a list of K micro-batches
    (``train.accumulate``) whose gradients add up, each loss scaled by 1/K; under DDP the
    gradients are synchronised on the last one only.

    Returns the loss terms, averaged over the micro-batches (the LiftPool regularisers as
    ``reg_u`` / ``reg_p``, which the layers put into the gradient themselves), and
    ``flags``: ``[any term of any micro-batch not finite, a signal arrived, the gradient
    not finite]`` summed over every process, so all of them stop at the same step.
    Raises:
        TrainingDiverged: a term or the gradient is NaN/inf; the weights are left as they
            were.
    """
    micro_batches = [batch] if isinstance(batch[0], Tensor) else list(batch)
    count = len(micro_batches)
    _weigh_regularizers(run, count)
    run.optimizer.zero_grad(set_to_none=True)
    steps = [
        _forward_backward(run, micro, count, sync=index == count - 1)
        for index, micro in enumerate(micro_batches)
    ]
    terms = {name: sum(step[name] for step in steps) / count for name in steps[0]}
    # Built on the device: the step waits for the GPU once, at `flags[0] > 0 or ...`.
    nonfinite = torch.stack([~torch.isfinite(t) for step in steps for t in step.values()]).any()
    signalled = float(stop is not None and stop.signum is not None)
    flags = torch.stack(
        [
            nonfinite.float(),
            torch.tensor(signalled, device=run.device),
            _gradient_nonfinite(run).float(),
        ]
    )
    all_reduce_sum(flags)
    if flags[0] > 0 or flags[2] > 0:
        run.optimizer.zero_grad(set_to_none=True)
        raise _diverged(run, terms, in_gradient=bool(flags[0] == 0))
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    run.iteration += 1
    return terms, flags


def _gradient_nonfinite(run: Run) -> Tensor:
    """Clip the gradient (``train.grad_clip``); True where it holds a NaN/inf that the
    optimizer would write into the weights though every loss term is finite (a backward
    that overflowed). Under fp16's GradScaler that is no fault: the scaler skips the step
    and lowers its scale, so this says False."""
    clip = run.cfg.train.grad_clip
    if clip is not None:
        run.scaler.unscale_(run.optimizer)
        norm = nn.utils.clip_grad_norm_(run.model.parameters(), clip)
    if run.scaler.is_enabled():
        return torch.zeros((), dtype=torch.bool, device=run.device)
    grads = [p.grad.detach() for p in run.model.parameters() if p.grad is not None]
    if not grads:  # a frozen model
        return torch.zeros((), dtype=torch.bool, device=run.device)
    if clip is None:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    return ~torch.isfinite(norm)


def _forward_backward(
    run: Run, batch: tuple[Tensor, Tensor], count: int, sync: bool
) -> dict[str, Tensor]:
    """Forward, losses and backward of one of ``count`` micro-batches (loss / ``count``);
    DDP synchronises the gradients only when ``sync``. Returns the detached loss terms."""
    tcfg = run.cfg.train
    images = batch[0].to(run.device, non_blocking=True)
    masks = batch[1].to(run.device, non_blocking=True)
    autocast = torch.autocast(
        run.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None
    )
    # DDP reduces gradients in the backward of a forward made outside no_sync: the last one.
    no_sync = getattr(run.net, "no_sync", None)
    with contextlib.nullcontext() if sync or no_sync is None else no_sync():
        with autocast, record_lift_regularization() as reg:
            logits = run.net(images)
        terms = {name: w * fn(logits.float(), masks) for name, (w, fn) in run.losses.items()}
        loss = sum(terms.values())  # what backward needs; the regularisers ride along
        run.scaler.scale(loss / count).backward()
    if reg.calls:
        terms["reg_u"] = tcfg.lambda_u * reg.c_u
        terms["reg_p"] = tcfg.lambda_p * reg.c_p
    return {name: term.detach() for name, term in terms.items()}


def _weigh_regularizers(run: Run, count: int) -> None:
    """LiftPool regulariser weights for steps of ``count`` micro-batches under the grad
    scaler: ``lambda * scale / count``.

    Each LiftDownPool call gives its regulariser gradient 1 whatever the loss is scaled by
    (`seg.ops.set_lift_regularization`), so without the ``1 / count`` K micro-batches
    would add it K times where one batch of them all adds it once, and without the
    ``scale`` (fp16's GradScaler multiplies the loss, then divides every gradient by the
    same factor) the term would shrink by that factor (2^16 at first).
    """
    scale = run.scaler.get_scale() if run.scaler.is_enabled() else 1.0
    if run.reg_weights_for != (count, scale):
        tcfg = run.cfg.train
        factor = scale / count
        set_lift_regularization(run.model, tcfg.lambda_u * factor, tcfg.lambda_p * factor)
        run.reg_weights_for = (count, scale)


def _diverged(run: Run, terms: dict[str, Tensor], in_gradient: bool) -> TrainingDiverged:
    bad = [n for n, t in terms.items() if not torch.isfinite(t.detach())]
    values = ", ".join(f"{n}={t.detach().item():.4g}" for n, t in terms.items())
    last = run.cfg.work_dir / ckpt.LAST
    if in_gradient:
        what = "the gradient is NaN/inf, every loss term finite,"
    elif bad:
        what = f"loss term {', '.join(bad)} is NaN/inf"
    else:  # another process's terms
        what = "a loss term of another process is NaN/inf"
    weights = run.cfg.train.class_weights
    if "ce" in bad and isinstance(weights, list) and 0 in weights:
        fix = (
            "train.class_weights gives a class weight 0, and a batch of only such classes "
            "averages 0/0 in the cross-entropy: give those classes data.ignore_index instead"
        )
    else:
        fix = (
            "Check the data, or train again with a lower train.lr"
            f"{'' if in_gradient else ' or a train.grad_clip'}"
        )
    return TrainingDiverged(
        f"{what} at iteration {run.iteration + 1} "
        f"({values}); nothing was saved after it. Last good checkpoint: "
        f"{last if last.exists() else 'none yet'}. {fix} (--force replaces "
        "this run; a resume would take the same step again, and refuses changed settings)."
    )


# ---------------------------------------------------------------- around the steps


def save(run: Run, name: str) -> Path:
    """``run``'s checkpoint as ``WORK_DIR/name``, written atomically."""
    return ckpt.save_checkpoint(run.state_dict(), run.cfg.work_dir / name)


def log_step(
    run: Run, terms: dict[str, Tensor], images_per_s: float, writer=None, progress=None
) -> None:
    """The loss terms, LR and throughput of the last step: log line, TensorBoard, tqdm."""
    values = {name: term.detach().item() for name, term in terms.items()}
    total = sum(values.values())
    if writer is not None:
        writer.add_scalar("train/loss", total, run.iteration)
        for name, value in values.items():
            writer.add_scalar(f"train/loss_{name}", value, run.iteration)
        writer.add_scalar("train/lr", run.lr, run.iteration)
        writer.add_scalar("train/images_per_s", images_per_s, run.iteration)
    log.info(
        "iter %d/%d  loss %.4f (%s)  lr %.3e  %.1f img/s",
        run.iteration,
        run.cfg.train.iters,
        total,
        ", ".join(f"{name} {value:.4f}" for name, value in values.items()),
        run.lr,
        images_per_s,
    )
    if progress is not None:
        progress.set_postfix(loss=f"{total:.4f}", lr=f"{run.lr:.2e}")


def validate_and_log(run: Run, val_set, dist_info: DistInfo, writer=None) -> dict:
    """Score the model on ``val_set``; log, draw samples, and save ``best.pt`` on a new best."""
    cfg = run.cfg
    meta = run.meta
    result = evaluate(
        run.model,
        val_set,
        cfg.model["num_classes"],
        meta["classes"],
        cfg.eval,
        dist_info,
        ignore_index=meta["ignore_index"],
        resize=cfg.data.get("resize"),
        num_samples=cfg.train.num_vis,
        limit=cfg.train.val_max_images,
        amp_dtype=run.amp_dtype,
    )
    metrics = result.metrics
    log.info(
        "iter %d validation: mIoU %.4f  mBIoU %.4f  mAcc %.4f  aAcc %.4f",
        run.iteration,
        metrics["mIoU"],
        metrics["mBIoU"],
        metrics["mAcc"],
        metrics["aAcc"],
    )
    if dist_info.is_main:
        rundir.append_curve(cfg.work_dir, run.iteration, run.cost["train_seconds"], metrics)
    if writer is not None:
        _write_validation(writer, run, metrics, result.samples)
    if run.device.type == "cuda":  # the peak is training's, not validation's
        torch.cuda.reset_peak_memory_stats(run.device)
    if metrics["mIoU"] > run.best_miou:
        run.best_miou = metrics["mIoU"]
        if dist_info.is_main:
            save(run, ckpt.BEST)
    run.net.train()
    return metrics


def _write_validation(writer, run: Run, metrics: dict, samples) -> None:
    meta = run.meta
    for key in ("mIoU", "mBIoU", "mAcc", "aAcc"):
        writer.add_scalar(f"val/{key}", metrics[key], run.iteration)
    for name, iou in zip(meta["classes"], metrics["IoU"]):
        if not math.isnan(iou):
            writer.add_scalar(f"val_IoU/{name}", iou, run.iteration)
    palette = np.asarray(meta["palette"], dtype=np.uint8)
    for index, (image, truth, pred) in enumerate(samples):
        picture = panel(
            image, truth, pred, palette, meta["mean"], meta["std"], meta["ignore_index"]
        )
        writer.add_image(f"val/sample_{index}", picture, run.iteration, dataformats="HWC")


def write_final_report(run: Run, metrics: dict, dist_info: DistInfo) -> None:
    """``metrics.json`` (the validation and what training cost) and ``metrics.md``."""
    cost = run.cost
    record = json_ready(metrics)
    record["train"] = {
        "iters": run.iteration,
        "seconds_per_iter": cost["train_seconds"] / max(cost["timed_iters"], 1),
        "peak_memory_mib": cost["peak_memory_mib"],
        "memory": peak_memory_mib(run.device)[1],
        "params": sum(p.numel() for p in run.model.parameters()),
        "device": describe_device(run.device),
        "world_size": dist_info.world_size,
    }
    work_dir = run.cfg.work_dir
    ckpt.write_text_atomic(work_dir / "metrics.json", json.dumps(record, indent=2))
    table = format_table(metrics)
    ckpt.write_text_atomic(work_dir / "metrics.md", table + "\n")
    log.info("final validation (%s split):\n%s", run.cfg.eval.split, table)
    saved = [str(work_dir / name) for name in (ckpt.LAST, ckpt.BEST) if (work_dir / name).is_file()]
    log.info("checkpoints: %s", ", ".join(saved) or "none")


# ---------------------------------------------------------------- set-up


def _setup(
    cfg: Config, device: str | None, resume: str | Path | bool | None, force: bool
) -> tuple[DistInfo, dict | None, list[str]]:
    """Process group, console log, determinism; the checkpoint to resume (checked against
    ``cfg``), or what a new run would replace in its work dir (refused without ``force``).
    Writes nothing: `_open_work_dir` does, once data and model have been built."""
    dist_info = init_distributed(device)
    _setup_logging(dist_info.is_main)
    state, replaced = None, []
    if resume:
        state = _load_resume_state(cfg, resume)
        rundir.check_resume_target(Path(state["_path"]), cfg.work_dir, cfg.to_dict())
    else:
        load_from = cfg.train.load_from
        if load_from is not None and not Path(load_from).is_file():  # found before any write
            raise FileNotFoundError(
                f"train.load_from: {load_from} not found; give {ckpt.WEIGHT_FORMATS}"
            )
        replaced = rundir.check_fresh_start(cfg.work_dir, cfg.to_dict(), force, keep=load_from)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif dist_info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return dist_info, state, replaced


def _open_work_dir(cfg: Config, dist_info: DistInfo, state: dict | None, replaced) -> None:
    """The main process clears what ``--force`` replaces, then writes ``config.yaml`` and
    starts ``train.log``; a resume into another folder takes the run's ``best.pt`` along.
    Every process stops if the main one cannot (it says why)."""
    work_dir = cfg.work_dir

    def write() -> None:
        try:
            rundir.clear_run(work_dir, replaced)
            work_dir.mkdir(parents=True, exist_ok=True)
            rundir.remove_stale_temporaries(work_dir)
            ckpt.write_text_atomic(work_dir / rundir.CONFIG, cfg.to_yaml())
            _log_to_file(work_dir / "train.log")
            if state is not None:
                _carry_best(Path(state["_path"]).parent, work_dir)
        except OSError as error:
            raise OSError(
                f"cannot write the run into --work-dir {work_dir} "
                f"({error.strerror or error}): choose another folder"
            ) from error

    on_main_process(write, dist_info)


def _carry_best(source: Path, work_dir: Path) -> None:
    """A resume into another work dir copies the run's ``best.pt`` there: the new folder
    then holds both of the run's checkpoints (``best_miou`` is restored, so a later
    validation only replaces it when it beats it; the curve, log and TensorBoard events
    of the part before stay in the old folder)."""
    best = source / ckpt.BEST
    if source.resolve() == work_dir.resolve() or not best.is_file():
        return
    with open(best, "rb") as source_file:
        ckpt.atomic_write(
            work_dir / ckpt.BEST, lambda handle: shutil.copyfileobj(source_file, handle)
        )
    log.info("copied %s (the run's best so far) into %s", best, work_dir)


# What Run.state_dict writes and a resume reads.
_RESUME_KEYS = (
    *("model", "optimizer", "scheduler", "scaler"),
    *("iteration", "best_miou", "rng", "config", "meta"),
)


def _load_resume_state(cfg: Config, resume: str | Path | bool) -> dict:
    """The checkpoint ``--resume`` names (True: the work dir's ``last.pt``), if it was
    trained with ``cfg`` (up to the keys safe to change on a resume)."""
    path = ckpt.find_latest(cfg.work_dir) if resume is True else Path(resume)
    if path is None:
        best = cfg.work_dir / ckpt.BEST
        raise ConfigError(
            f"--resume: there is no {ckpt.LAST} in {cfg.work_dir} to continue"
            + (
                f"; continue from its best one with --resume {best}, or start anew with --force"
                if best.is_file()
                else ". Start a new run without --resume, or name the checkpoint: --resume PATH"
            )
        )
    state = ckpt.load_checkpoint(path)
    missing = [key for key in _RESUME_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ConfigError(
            f"--resume {path}: not a training checkpoint of tools/train.py (no "
            f"{', '.join(missing)}); to start a new run from its weights, give "
            f"train.load_from={path} instead"
        )
    rundir.check_resumable(path, Run.stored_config(state), cfg.to_dict())
    state["_path"] = str(path)
    return state


def load_pretrained(run: Run) -> ckpt.WeightMatch:
    """Fine-tuning: ``train.load_from``'s weights into the model, before the first step.

    Weights only: the optimizer, schedule and iteration start afresh. Tensors that don't fit
    (another class count's head) keep their initialisation, each named in the log; with
    ``train.load_strict`` they are a `ConfigError` instead (see `checkpoint.load_weights`).
    """
    tcfg = run.cfg.train
    match = ckpt.load_weights(run.model, tcfg.load_from, strict=tcfg.load_strict)
    total = len(match.loaded) + len(match.mismatched) + len(match.missing)
    log.info(
        "fine-tuning from %s: loaded %d of the model's %d tensors",
        tcfg.load_from,
        len(match.loaded),
        total,
    )
    for line in match.skipped():
        log.warning("load_from %s: %s", tcfg.load_from, line)
    return match


def _build_data(cfg: Config) -> tuple[Dataset, Dataset, dict]:
    """The training and validation sets, and the metadata inference needs."""
    train_set = build_dataset(cfg.data, "train")
    mean = tuple(cfg.data.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.data.get("std", IMAGENET_STD))
    val_set = build_dataset(cfg.data, cfg.eval.split, transform=build_val_transform(mean, std))
    if len(val_set) == 0:
        raise ConfigError(
            f"the '{cfg.eval.split}' split (eval.split) of the '{cfg.data['name']}' data set "
            "has no images: validation would score nothing; give it images or another split"
        )
    channels = cfg.model.get("in_channels", 3)
    if channels != 3:
        raise ConfigError(
            f"model.in_channels is {channels}, but every data set here gives RGB images: "
            "set model.in_channels=3"
        )
    num_classes = cfg.model["num_classes"]
    if train_set.num_classes != num_classes:
        raise ConfigError(
            f"model.num_classes is {num_classes} but the '{cfg.data['name']}' data set has "
            f"{train_set.num_classes} classes: set model.num_classes={train_set.num_classes}"
        )
    return train_set, val_set, data_meta(train_set, cfg.data)


def _build_losses(cfg: Config, train_set) -> dict:
    tcfg = cfg.train
    if tcfg.class_weights == "median_frequency":
        weights = median_frequency_weights(train_set)
        log.info("median-frequency class weights: %s", np.round(weights, 4).tolist())
        tcfg = replace(tcfg, class_weights=weights.tolist())
    return build_losses(tcfg, cfg.model["num_classes"], train_set.ignore_index)


def _train_loader(run: Run, train_set, dist_info: DistInfo) -> Iterator:
    """The endless batch stream, from the run's position in it."""
    tcfg = run.cfg.train
    sampler = TrainSampler(
        len(train_set),
        dist_info.rank,
        dist_info.world_size,
        tcfg.seed,
        run.iteration * tcfg.batch_size * tcfg.accumulate,  # steps are written whole
    )
    loader = DataLoader(
        SeededSamples(train_set),
        batch_size=tcfg.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=tcfg.workers,
        pin_memory=dist_info.device.type == "cuda",
        persistent_workers=tcfg.workers > 0,
        worker_init_fn=_ignore_stop_signals,
    )
    return iter(loader)


def _open_outputs(run: Run, dist_info: DistInfo):
    """TensorBoard writer and progress bar of the main process (None where off)."""
    writer = progress = None
    if dist_info.is_main and run.cfg.output.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run.cfg.work_dir / "tb"), purge_step=run.iteration + 1)
    # A log file gets the log lines at train.log_interval, not carriage-return frames.
    if dist_info.is_main and run.cfg.output.progress and sys.stderr.isatty():
        from tqdm import tqdm

        progress = tqdm(
            total=run.cfg.train.iters,
            initial=run.iteration,
            desc="train",
            unit="it",
            dynamic_ncols=True,
        )
    return writer, progress


# ---------------------------------------------------------------- the loop


def train(
    cfg: Config,
    resume: str | Path | bool | None = None,
    device: str | None = None,
    stop_after: int | None = None,
    force: bool = False,
) -> dict:
    """Train as ``cfg`` says; returns the last validation's metrics.

    Args:
        resume: True = ``last.pt`` of the work dir, a path = that checkpoint (either must
            exist and have been trained with ``cfg``, up to
            `rundir.SAFE_TO_CHANGE_ON_RESUME`), None/False = a new run. A new run with
            ``train.load_from`` starts from those weights (`load_pretrained`); a resume
            restores the checkpoint's own and doesn't apply it again.
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available).
        stop_after: behave as if SIGTERM arrived after this iteration (split a run into
            jobs of a fixed length; tests use it to interrupt deterministically).
        force: a new run replaces the checkpoints and metrics of a run already in the work
            dir (without it, that is an error).
    Raises:
        ConfigError: a work dir that holds a run (without ``resume``/``force``), nothing to
            resume, or a checkpoint trained with another config.
        TrainingDiverged: a NaN/inf loss term or gradient (nothing is saved after the last good step).
    """
    dist_info, state, replaced = _setup(cfg, device, resume, force)
    torch.manual_seed(cfg.train.seed)
    train_set, val_set, meta = _build_data(cfg)
    run = build_run(cfg, dist_info, meta, _build_losses(cfg, train_set))
    if state is not None:  # a resume restores its own weights: load_from is not applied again
        run.load_state_dict(state)
        log.info(
            "resumed from %s at iteration %d%s",
            state["_path"],
            run.iteration,
            "; train.load_from is not applied again" if cfg.train.load_from else "",
        )
    elif cfg.train.load_from is not None:
        load_pretrained(run)
    # Only now, with data, model and weights shown to work, is the work dir written
    # (--force would otherwise delete a run for a new one that cannot start).
    _open_work_dir(cfg, dist_info, state, replaced)
    batches = _train_loader(run, train_set, dist_info)
    run.restore_rng()

    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    writer, progress = _open_outputs(run, dist_info)
    log.info(
        "training %s (model: %s) for %d iterations on %d process(es), %s, from iteration %d; "
        "work dir %s",
        cfg.name,
        # the config's name stays that of its file when --set changes the model: say what runs
        " ".join(f"{key}={value}" for key, value in cfg.model.items()),
        cfg.train.iters,
        dist_info.world_size,
        dist_info.device,
        run.iteration,
        cfg.work_dir,
    )
    try:
        metrics = _loop(run, batches, val_set, dist_info, stop, stop_after, writer, progress)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for output in (progress, writer):
            if output is not None:
                output.close()
    if "interrupted" in metrics:
        return metrics
    if not metrics:  # resumed at the very end: score the final weights
        if dist_info.is_main and not (cfg.work_dir / ckpt.LAST).is_file():
            save(run, ckpt.LAST)  # into another folder: it holds both checkpoints too
        metrics = validate_and_log(run, val_set, dist_info)
    barrier()
    if dist_info.is_main:
        write_final_report(run, metrics, dist_info)
    return metrics


def _loop(run: Run, batches, val_set, dist_info, stop, stop_after, writer, progress) -> dict:
    """Steps until ``train.iters`` or a stop; validates and saves on the way.

    Returns the last validation's metrics, or ``{"interrupted": signal, "iteration": k}``.
    """
    tcfg = run.cfg.train
    metrics: dict = {}
    run.net.train()
    tick, seen = time.perf_counter(), 0
    while run.iteration < tcfg.iters:
        start = time.perf_counter()
        micro_batches = [next(batches) for _ in range(tcfg.accumulate)]
        terms, flags = train_step(run, micro_batches, stop)
        synchronize(run.device)  # backward and update ran async
        run.cost["train_seconds"] += time.perf_counter() - start
        run.cost["timed_iters"] += 1
        run.cost["peak_memory_mib"] = max(
            run.cost["peak_memory_mib"], peak_memory_mib(run.device)[0]
        )
        seen += sum(images.shape[0] for images, _ in micro_batches) * dist_info.world_size
        if progress is not None:
            progress.update(1)
        it = run.iteration
        if it % tcfg.log_interval == 0 or it == tcfg.iters:
            elapsed = time.perf_counter() - tick
            log_step(run, terms, seen / elapsed if elapsed > 0 else 0.0, writer, progress)
            tick, seen = time.perf_counter(), 0

        finished = it == tcfg.iters
        interrupted = flags[1] > 0 or (stop_after is not None and it >= stop_after)
        if dist_info.is_main and finished:
            save(run, ckpt.LAST)  # first: an error in the final validation loses no step
        if finished or (tcfg.val_interval and it % tcfg.val_interval == 0):
            metrics = validate_and_log(run, val_set, dist_info, writer)
        periodic = tcfg.ckpt_interval and it % tcfg.ckpt_interval == 0
        if dist_info.is_main and (finished or interrupted or periodic):
            save(run, ckpt.LAST)
        if interrupted and not finished:
            barrier()
            local = int(os.environ.get("LOCAL_WORLD_SIZE", dist_info.world_size))
            command = rundir.launch_command(
                dist_info.world_size, local, run.cfg.work_dir / "config.yaml"
            )
            log.warning(
                "stopped at iteration %d/%d; %s holds it. Resume with: %s",
                it,
                tcfg.iters,
                run.cfg.work_dir / ckpt.LAST,
                command,
            )
            return {"interrupted": stop.signum or -1, "iteration": it}
    return metrics
