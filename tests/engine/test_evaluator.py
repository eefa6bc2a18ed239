"""The evaluator: sharding over ranks counts every image once, images of mixed sizes, JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from seg.config import EvalConfig
from seg.engine.distributed import DistInfo
from seg.engine.evaluator import _batches_by_size, evaluate, json_ready, shard

NUM_CLASSES = 3


class ChannelArgmax(nn.Module):
    """Logits = the image's own channels: the prediction is the argmax channel per pixel."""

    def forward(self, x):
        return x


def _data(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for h, w in sizes:
        image = torch.randn(NUM_CLASSES, h, w, generator=g)
        mask = torch.randint(0, NUM_CLASSES, (h, w), generator=g)
        mask[0, : w // 2] = 255  # ignored pixels
        items.append((image, mask))
    return items


def _reference(items) -> torch.Tensor:
    """torchmetrics' confusion matrix of every image, counted once."""
    metric = MulticlassConfusionMatrix(NUM_CLASSES, ignore_index=255)
    for image, mask in items:
        metric.update(image.argmax(0)[None], mask[None])
    return metric.compute()


@pytest.mark.parametrize("count,world,limit", [(7, 3, None), (5, 2, 4), (2, 4, None), (9, 1, 3)])
def test_shards_of_all_ranks_cover_each_image_exactly_once(count, world, limit):
    seen = [i for rank in range(world) for i in shard(range(count), rank, world, limit).indices]
    assert sorted(seen) == list(range(min(count, limit or count)))


def test_ranks_together_count_what_one_process_counts():
    sizes = [(8, 8), (8, 8), (6, 10), (8, 8), (5, 7), (5, 7), (8, 8)]
    items = _data(sizes)
    cfg = EvalConfig(batch_size=3, workers=0)
    names = ["a", "b", "c"]
    single = evaluate(ChannelArgmax(), items, NUM_CLASSES, names, cfg).metrics
    truth = _reference(items)
    assert torch.equal(torch.tensor(single["confusion_matrix"]), truth)
    assert single["num_images"] == len(items)
    # Three "processes" (the all-reduce is a no-op outside a process group): their matrices
    # add up to the single process's, so a real all-reduce gives the same metrics.
    parts = [
        evaluate(ChannelArgmax(), items, NUM_CLASSES, names, cfg, DistInfo(rank=r, world_size=3))
        for r in range(3)
    ]
    summed = sum(torch.tensor(p.metrics["confusion_matrix"]) for p in parts)
    assert torch.equal(summed, truth)
    assert sum(p.metrics["num_images"] for p in parts) == len(items)
    # The mIoU is the data set's, from the summed counts (not a mean over images).
    inter = truth.diag().double()
    union = truth.sum(0) + truth.sum(1) - truth.diag()
    assert single["mIoU"] == pytest.approx((inter / union).mean().item())


def test_batches_group_consecutive_images_of_one_size_in_order():
    items = _data([(4, 4), (4, 4), (3, 5), (4, 4)])
    groups = list(_batches_by_size(items))
    assert [g[0].shape[0] for g in groups] == [2, 1, 1]
    assert [tuple(g[1].shape[1:]) for g in groups] == [(4, 4), (3, 5), (4, 4)]
    flat = [image for images, _ in groups for image in images]
    assert all(torch.equal(a, b[0]) for a, b in zip(flat, items))


def test_json_ready_turns_nan_into_null_everywhere():
    metrics = {"mIoU": math.nan, "IoU": (0.5, math.nan), "nested": {"x": [math.nan, 1]}}
    clean = json_ready(metrics)
    assert clean == {"mIoU": None, "IoU": [0.5, None], "nested": {"x": [None, 1]}}
    assert json.loads(json.dumps(clean, allow_nan=False)) == clean
    assert math.isnan(metrics["mIoU"])  # the input is left as it was
