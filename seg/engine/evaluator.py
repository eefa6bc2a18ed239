"""Run a model over a data set into data-set-level metrics, sharded over processes.

Each process takes images ``rank, rank + world, ...``: no padding, so every image counts
exactly once whatever the number of images and processes; the counts are summed over
processes before any division. Predictions are scored at each label's own resolution.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from seg.config import EvalConfig
from seg.engine.distributed import DistInfo, all_reduce_sum
from seg.engine.inference import predict
from seg.engine.metrics import BoundaryIoU, ConfusionMatrix


@dataclass
class EvalResult:
    """Metrics (fractions in [0, 1]; NaN for an excluded class) and a few drawn samples."""

    metrics: dict[str, object]
    samples: list[tuple[Tensor, Tensor, Tensor]] = field(default_factory=list)  # image, gt, pred


def _collate(batch):
    return batch


def shard(dataset: Dataset, rank: int, world_size: int, limit: int | None = None) -> Subset:
    """This process's share of ``dataset`` (``rank::world_size``), first ``limit`` images only."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    return Subset(dataset, range(rank, count, world_size))


def _batches_by_size(items: Sequence[tuple[Tensor, Tensor]]):
    """Consecutive items of one image size, stacked: ``(images [B,3,H,W], masks [B,H,W])``."""
    group: list[tuple[Tensor, Tensor]] = []
    for item in items:
        if group and item[0].shape != group[0][0].shape:
            yield torch.stack([g[0] for g in group]), torch.stack([g[1] for g in group])
            group = []
        group.append(item)
    if group:
        yield torch.stack([g[0] for g in group]), torch.stack([g[1] for g in group])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    class_names: Sequence[str],
    eval_cfg: EvalConfig,
    dist_info: DistInfo = DistInfo(),
    ignore_index: int = 255,
    resize: int | Sequence[int] | None = None,
    num_samples: int = 0,
    limit: int | None = None,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> EvalResult:
    """Score ``model`` on ``dataset`` (``(image, mask)`` pairs at the label's resolution).

    ``num_samples``: how many (image, truth, prediction) triples the main process keeps
    for drawing. ``limit``: score only the first ``limit`` images.
    """
    device = dist_info.device
    was_training = model.training
    model.eval()
    confusion = ConfusionMatrix(num_classes, ignore_index, device=device)
    boundary = BoundaryIoU(num_classes, ignore_index, eval_cfg.boundary_ratio, device=device)
    subset = shard(dataset, dist_info.rank, dist_info.world_size, limit)
    loader = DataLoader(
        subset,
        batch_size=eval_cfg.batch_size,
        num_workers=eval_cfg.workers,
        collate_fn=_collate,
        persistent_workers=False,
    )
    crop = eval_cfg.crop_size
    samples: list[tuple[Tensor, Tensor, Tensor]] = []
    iterator = loader
    if progress and dist_info.is_main and sys.stderr.isatty():  # no frames in a log file
        from tqdm import tqdm

        iterator = tqdm(loader, desc="eval", unit="batch", leave=False, dynamic_ncols=True)
    for items in iterator:
        for images, masks in _batches_by_size(items):
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                probs = predict(
                    model,
                    images,
                    mode=eval_cfg.mode,
                    crop_size=crop,
                    stride=eval_cfg.stride,
                    tta=eval_cfg.tta,
                    scales=eval_cfg.scales,
                    resize=resize,
                )
            preds = probs.argmax(dim=1)
            confusion.update(preds, masks)
            boundary.update(preds, masks)
            if dist_info.is_main and len(samples) < num_samples:
                for image, mask, pred in zip(images, masks, preds):
                    if len(samples) < num_samples:
                        samples.append((image.cpu(), mask.cpu(), pred.cpu()))
    confusion.all_reduce()
    boundary.all_reduce()
    model.train(was_training)
    metrics = {**confusion.compute(), **boundary.compute()}
    metrics = {
        "mIoU": metrics["mIoU"],
        "mAcc": metrics["mAcc"],
        "aAcc": metrics["aAcc"],
        "mBIoU": metrics["mBIoU"],
        "classes": list(class_names),
        "IoU": metrics["IoU"],
        "Acc": metrics["Acc"],
        "BIoU": metrics["BIoU"],
        "num_images": int(all_reduce_sum(torch.tensor([len(subset)], device=device)).item()),
        "confusion_matrix": confusion.mat.cpu().tolist(),
    }
    return EvalResult(metrics=metrics, samples=samples)


def json_ready(metrics: dict[str, object]) -> dict[str, object]:
    """NaN -> None (tuples -> lists), recursively: ``json.dump`` writes ``null`` for them."""

    def clean(value):
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return clean(metrics)


def format_table(metrics: dict[str, object]) -> str:
    """Markdown: a summary line table, then IoU / Acc / Boundary IoU per class (in %)."""

    def pct(value) -> str:
        return (
            "-"
            if value is None or (isinstance(value, float) and math.isnan(value))
            else (f"{100 * value:.2f}")
        )

    lines = [
        "| mIoU | mAcc | aAcc | mBIoU | images |",
        "|---:|---:|---:|---:|---:|",
        f"| {pct(metrics['mIoU'])} | {pct(metrics['mAcc'])} | {pct(metrics['aAcc'])} "
        f"| {pct(metrics['mBIoU'])} | {metrics.get('num_images', '')} |",
        "",
        "| class | IoU | Acc | BIoU |",
        "|---|---:|---:|---:|",
    ]
    for name, iou, acc, biou in zip(
        metrics["classes"], metrics["IoU"], metrics["Acc"], metrics["BIoU"]
    ):
        lines.append(f"| {name} | {pct(iou)} | {pct(acc)} | {pct(biou)} |")
    return "\n".join(lines)
