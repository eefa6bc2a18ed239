"""The training loop: one function, read top to bottom.

`train(cfg)` builds the data, model, optimizer and schedule a `Config` describes, then
runs ``cfg.train.iters`` optimizer steps on one process or under ``torchrun`` (DDP),
validating every ``val_interval`` steps and writing ``last.pt`` / ``best.pt`` atomically.

Resuming is exact: the sampler's stream and every augmentation are functions of
``(seed, rank, position in the stream)``, and the checkpoint holds every other state, so
a run stopped at step k and resumed ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from seg.config import Config, ConfigError, TrainConfig, config_from_dict, load_config
from seg.data import build_dataset, build_val_transform, median_frequency_weights
from seg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from seg.engine import checkpoint as ckpt
from seg.engine.distributed import all_reduce_sum, barrier, init_distributed
from seg.engine.evaluator import evaluate, format_table, json_ready
from seg.engine.visualize import panel
from seg.models import build_model
from seg.ops import record_lift_regularization, set_lift_regularization

log = logging.getLogger("seg")


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite; the last checkpoint on disk is the last good one."""


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


def _ignore_sigint(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the main process decides when to stop, so
    # workers must not die mid-batch under it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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


def build_losses(
    cfg: TrainConfig, num_classes: int, ignore_index: int
) -> dict[str, tuple[float, Callable[[Tensor, Tensor], Tensor]]]:
    """``{name: (weight, fn(logits, target))}`` for each term of ``cfg.loss``."""
    weight = None
    if isinstance(cfg.class_weights, list):
        if len(cfg.class_weights) != num_classes:
            raise ConfigError(
                f"train.class_weights has {len(cfg.class_weights)} values for {num_classes} classes"
            )
        weight = torch.tensor(cfg.class_weights, dtype=torch.float32)
    losses = {}
    for name, term_weight in cfg.loss.items():
        if name == "ce":

            def cross_entropy(logits: Tensor, target: Tensor, w=weight) -> Tensor:
                w = None if w is None else w.to(logits.device)
                return F.cross_entropy(logits, target, weight=w, ignore_index=ignore_index)

            losses[name] = (term_weight, cross_entropy)
        else:
            from segmentation_models_pytorch import losses as smp_losses

            cls = smp_losses.DiceLoss if name == "dice" else smp_losses.LovaszLoss
            losses[name] = (term_weight, cls(mode="multiclass", ignore_index=ignore_index))
    return losses


# ---------------------------------------------------------------- the run


@dataclass
class _Stop:
    """Set by SIGINT/SIGTERM: the loop finishes the step, saves and exits."""

    signum: int | None = None

    def __call__(self, signum, frame) -> None:
        if self.signum is None:
            log.warning(
                "received %s: finishing this step, then saving", signal.Signals(signum).name
            )
        self.signum = signum


def _setup_logging(work_dir: Path, is_main: bool) -> None:
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    for handler in list(log.handlers):
        if getattr(handler, "_seg_run", False):
            log.removeHandler(handler)
            handler.close()
    handlers: list[logging.Handler] = [_TqdmHandler()]
    if is_main:
        handlers.append(logging.FileHandler(work_dir / "train.log"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler._seg_run = True
        log.addHandler(handler)
    log.propagate = False


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``train.amp`` asks for on ``device`` (None: full precision; AMP
    runs on CUDA only)."""
    if device.type != "cuda" or cfg.amp == "none":
        return None
    return torch.bfloat16 if cfg.amp == "bf16" else torch.float16


def data_meta(dataset, data_cfg: dict) -> dict:
    """What inference needs without the data set: class names, palette, normalisation."""
    return {
        "classes": list(dataset.class_names),
        "palette": np.asarray(dataset.palette).astype(int).tolist(),
        "ignore_index": int(dataset.ignore_index),
        "mean": list(data_cfg.get("mean", IMAGENET_MEAN)),
        "std": list(data_cfg.get("std", IMAGENET_STD)),
    }


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """This process's peak memory so far and what it counts.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only). CPU: the process's peak
    resident set (``ru_maxrss``), which also holds the interpreter, the data set and the
    loader's buffers: compare CPU figures between runs of the same data, not as absolutes.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024, "cpu_max_rss"


def train(
    cfg: Config,
    resume: str | Path | bool | None = None,
    device: str | None = None,
    stop_after: int | None = None,
) -> dict:
    """Train as ``cfg`` says; returns the last validation's metrics.

    Args:
        resume: True = ``last.pt`` of the work dir (a fresh start if there is none), a path =
            that checkpoint, None/False = start from scratch.
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available).
        stop_after: behave as if SIGTERM arrived after this iteration (split a run into
            jobs of a fixed length; tests use it to interrupt deterministically).
    Raises:
        TrainingDiverged: a NaN/inf loss term (nothing is saved after the last good step).
    """
    dist_info = init_distributed(device)
    tcfg = cfg.train
    work_dir = cfg.work_dir
    if dist_info.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
    barrier()
    _setup_logging(work_dir, dist_info.is_main)
    if tcfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif dist_info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # Checkpoint first: its config is the one to continue with.
    state = None
    resume_path = None
    if resume is True:
        resume_path = ckpt.find_latest(work_dir)
        if resume_path is None:
            log.info("--resume: no %s in %s, starting from scratch", ckpt.LAST, work_dir)
    elif resume:
        resume_path = Path(resume)
    if resume_path is not None:
        state = ckpt.load_checkpoint(resume_path)
        if state["config"]["model"] != cfg.model:
            raise ConfigError(
                f"{resume_path} was trained with model {state['config']['model']}, "
                f"but the config says {cfg.model}: resume with the same model config"
            )
    if dist_info.is_main:
        cfg.dump(work_dir / "config.yaml")

    torch.manual_seed(tcfg.seed)
    train_set = build_dataset(cfg.data, "train")
    mean = tuple(cfg.data.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.data.get("std", IMAGENET_STD))
    val_set = build_dataset(cfg.data, cfg.eval.split, transform=build_val_transform(mean, std))
    num_classes = cfg.model["num_classes"]
    if train_set.num_classes != num_classes:
        raise ConfigError(
            f"model.num_classes is {num_classes} but the '{cfg.data['name']}' data set has "
            f"{train_set.num_classes} classes: set model.num_classes={train_set.num_classes}"
        )
    meta = data_meta(train_set, cfg.data)

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
    optimizer = build_optimizer(model, tcfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lr_factor(tcfg))
    amp_dtype = autocast_dtype(tcfg, dist_info.device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    if tcfg.class_weights == "median_frequency":
        weights = median_frequency_weights(train_set)
        log.info("median-frequency class weights: %s", np.round(weights, 4).tolist())
        tcfg = replace(tcfg, class_weights=weights.tolist())
    losses = build_losses(tcfg, num_classes, train_set.ignore_index)

    start_iter, best_miou = 0, -math.inf
    # What training cost: step time (data wait + forward + backward + update, without
    # validation and checkpoints) summed over every job of the run, and the peak memory.
    cost = {"train_seconds": 0.0, "timed_iters": 0, "peak_memory_mib": 0.0}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_iter, best_miou = int(state["iteration"]), float(state["best_miou"])
        cost = dict(state.get("cost", cost))
        log.info("resumed from %s at iteration %d", resume_path, start_iter)

    sampler = TrainSampler(
        len(train_set),
        dist_info.rank,
        dist_info.world_size,
        tcfg.seed,
        start_iter * tcfg.batch_size,
    )
    loader = DataLoader(
        SeededSamples(train_set),
        batch_size=tcfg.batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=tcfg.workers,
        pin_memory=dist_info.device.type == "cuda",
        persistent_workers=tcfg.workers > 0,
        worker_init_fn=_ignore_sigint,
    )
    batches = iter(loader)
    if state is not None:
        # After the loader drew its worker seeds: nothing random differs from a straight run.
        ckpt.set_rng_state(state["rng"])

    writer = None
    if dist_info.is_main and cfg.output.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(work_dir / "tb"), purge_step=start_iter + 1)

    def save(name: str, iteration: int) -> Path:
        return ckpt.save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "iteration": iteration,
                "best_miou": best_miou,
                "rng": ckpt.rng_state(),
                "config": cfg.to_dict(),
                "meta": meta,
                "cost": cost,
            },
            work_dir / name,
        )

    def validate(iteration: int) -> dict:
        result = evaluate(
            model,
            val_set,
            num_classes,
            meta["classes"],
            cfg.eval,
            dist_info,
            ignore_index=train_set.ignore_index,
            resize=cfg.data.get("resize"),
            num_samples=tcfg.num_vis,
            limit=tcfg.val_max_images,
            amp_dtype=amp_dtype,
        )
        metrics = result.metrics
        log.info(
            "iter %d validation: mIoU %.4f  mBIoU %.4f  mAcc %.4f  aAcc %.4f",
            iteration,
            metrics["mIoU"],
            metrics["mBIoU"],
            metrics["mAcc"],
            metrics["aAcc"],
        )
        if writer is not None:
            for key in ("mIoU", "mBIoU", "mAcc", "aAcc"):
                writer.add_scalar(f"val/{key}", metrics[key], iteration)
            for name, iou in zip(meta["classes"], metrics["IoU"]):
                if not math.isnan(iou):
                    writer.add_scalar(f"val_IoU/{name}", iou, iteration)
            palette = np.asarray(meta["palette"], dtype=np.uint8)
            for index, (image, truth, pred) in enumerate(result.samples):
                picture = panel(image, truth, pred, palette, mean, std, train_set.ignore_index)
                writer.add_image(f"val/sample_{index}", picture, iteration, dataformats="HWC")
        return metrics

    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    progress = None
    if dist_info.is_main and cfg.output.progress:
        from tqdm import tqdm

        progress = tqdm(
            total=tcfg.iters, initial=start_iter, desc="train", unit="it", dynamic_ncols=True
        )
    log.info(
        "training %s for %d iterations on %d process(es), %s, from iteration %d; work dir %s",
        cfg.name,
        tcfg.iters,
        dist_info.world_size,
        dist_info.device,
        start_iter,
        work_dir,
    )
    metrics: dict = {}
    net.train()
    tick, seen = time.perf_counter(), 0
    iteration = start_iter
    try:
        while iteration < tcfg.iters:
            step_start = time.perf_counter()
            images, masks = next(batches)
            images = images.to(dist_info.device, non_blocking=True)
            masks = masks.to(dist_info.device, non_blocking=True)
            autocast = torch.autocast(
                dist_info.device.type, dtype=amp_dtype, enabled=amp_dtype is not None
            )
            # The LiftPool layers put their regularisers into the gradient themselves;
            # the record holds their values, for the NaN guard and the logs.
            with autocast, record_lift_regularization() as reg:
                logits = net(images)
            terms = {name: w * fn(logits.float(), masks) for name, (w, fn) in losses.items()}
            loss = sum(terms.values())  # what backward needs; the regularisers ride along
            if reg.calls:
                terms["reg_u"] = tcfg.lambda_u * reg.c_u
                terms["reg_p"] = tcfg.lambda_p * reg.c_p
            # One all-reduce per step carries "a term is not finite" and "a signal arrived",
            # so every process stops at the same step.
            # Built on the device: the step waits for the GPU once, at `flags[0] > 0`.
            nonfinite = torch.stack([~torch.isfinite(t.detach()) for t in terms.values()]).any()
            signalled = torch.tensor(float(stop.signum is not None), device=dist_info.device)
            flags = torch.stack([nonfinite.float(), signalled])
            all_reduce_sum(flags)
            if flags[0] > 0:
                bad = [n for n, t in terms.items() if not torch.isfinite(t.detach())]
                values = ", ".join(f"{n}={t.detach().item():.4g}" for n, t in terms.items())
                last = work_dir / ckpt.LAST
                raise TrainingDiverged(
                    f"loss term {', '.join(bad)} is NaN/inf at iteration {iteration + 1} "
                    f"({values}); nothing was saved after it. Last good checkpoint: "
                    f"{last if last.exists() else 'none yet'}. Lower train.lr, set "
                    "train.grad_clip or check the data, then --resume."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tcfg.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            iteration += 1
            if dist_info.device.type == "cuda":
                torch.cuda.synchronize(dist_info.device)  # backward and update ran async
            cost["train_seconds"] += time.perf_counter() - step_start
            cost["timed_iters"] += 1
            cost["peak_memory_mib"] = max(
                cost["peak_memory_mib"], peak_memory_mib(dist_info.device)[0]
            )
            seen += images.shape[0] * dist_info.world_size
            if progress is not None:
                progress.update(1)

            if iteration % tcfg.log_interval == 0 or iteration == tcfg.iters:
                values = {name: term.detach().item() for name, term in terms.items()}
                elapsed = time.perf_counter() - tick
                throughput = seen / elapsed if elapsed > 0 else 0.0
                if writer is not None:
                    writer.add_scalar("train/loss", sum(values.values()), iteration)
                    for name, value in values.items():
                        writer.add_scalar(f"train/loss_{name}", value, iteration)
                    writer.add_scalar("train/lr", lr, iteration)
                    writer.add_scalar("train/images_per_s", throughput, iteration)
                log.info(
                    "iter %d/%d  loss %.4f (%s)  lr %.3e  %.1f img/s",
                    iteration,
                    tcfg.iters,
                    sum(values.values()),
                    ", ".join(f"{name} {value:.4f}" for name, value in values.items()),
                    lr,
                    throughput,
                )
                if progress is not None:
                    progress.set_postfix(loss=f"{sum(values.values()):.4f}", lr=f"{lr:.2e}")
                tick, seen = time.perf_counter(), 0

            finished = iteration == tcfg.iters
            interrupted = flags[1] > 0 or (stop_after is not None and iteration >= stop_after)
            if finished or (tcfg.val_interval and iteration % tcfg.val_interval == 0):
                metrics = validate(iteration)
                if dist_info.device.type == "cuda":  # the peak is training's, not validation's
                    torch.cuda.reset_peak_memory_stats(dist_info.device)
                if metrics["mIoU"] > best_miou:
                    best_miou = metrics["mIoU"]
                    if dist_info.is_main:
                        save(ckpt.BEST, iteration)
                net.train()
            periodic = tcfg.ckpt_interval and iteration % tcfg.ckpt_interval == 0
            if dist_info.is_main and (finished or interrupted or periodic):
                save(ckpt.LAST, iteration)
            if interrupted and not finished:
                barrier()
                log.warning(
                    "stopped at iteration %d/%d; %s holds it. Resume with: "
                    "python tools/train.py %s --resume",
                    iteration,
                    tcfg.iters,
                    work_dir / ckpt.LAST,
                    work_dir / "config.yaml",
                )
                return {"interrupted": stop.signum or -1, "iteration": iteration}
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if progress is not None:
            progress.close()
        if writer is not None:
            writer.close()

    if not metrics:  # resumed at the very end: score the final weights
        metrics = validate(iteration)
    barrier()
    if dist_info.is_main:
        record = json_ready(metrics)
        record["train"] = {
            "iters": iteration,
            "seconds_per_iter": cost["train_seconds"] / max(cost["timed_iters"], 1),
            "peak_memory_mib": cost["peak_memory_mib"],
            "memory": peak_memory_mib(dist_info.device)[1],
            "params": sum(p.numel() for p in model.parameters()),
            "device": torch.cuda.get_device_name(dist_info.device)
            if dist_info.device.type == "cuda"
            else f"cpu ({torch.get_num_threads()} threads)",
            "world_size": dist_info.world_size,
        }
        (work_dir / "metrics.json").write_text(json.dumps(record, indent=2))
        table = format_table(metrics)
        (work_dir / "metrics.md").write_text(table + "\n")
        log.info("final validation (%s split):\n%s", cfg.eval.split, table)
        log.info("checkpoints: %s, %s", work_dir / ckpt.LAST, work_dir / ckpt.BEST)
    return metrics


def load_for_inference(
    path: str | Path,
    overrides: tuple[str, ...] = (),
    device: str | torch.device = "cpu",
    config: str | Path | None = None,
) -> tuple[nn.Module, Config, dict]:
    """The model of a checkpoint, in eval mode on ``device``, with its config and metadata.

    ``config``: a YAML file to use instead of the stored config (data paths, eval
    settings); the model is always built as the checkpoint's weights were trained.
    """
    state = ckpt.load_checkpoint(path)
    if config is not None:
        cfg = load_config(config, overrides)
    else:
        cfg = config_from_dict(state["config"], overrides)
    model = build_model(state["config"]["model"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg, state["meta"]
