"""The training losses a config names in ``train.loss`` (``{name: weight}``), as a registry.

`LOSSES` maps each name to a factory ``(class_weight, ignore_index) -> fn(logits, target)``;
a new loss is one entry there, and the config checks ``train.loss`` against its names.
``class_weight`` (from ``train.class_weights``) weighs cross-entropy only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from seg.config import ConfigError, TrainConfig
from seg.registry import check_keys

LossFn = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(class_weight: Tensor | None, ignore_index: int) -> LossFn:
    """Pixel-wise cross-entropy, each class weighted by ``class_weight`` (None: equally)."""

    def loss(logits: Tensor, target: Tensor) -> Tensor:
        weight = None if class_weight is None else class_weight.to(logits.device)
        return F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index)

    return loss


def dice(class_weight: Tensor | None, ignore_index: int) -> LossFn:
    """segmentation_models_pytorch's multiclass Dice loss (``class_weight`` unused)."""
    from segmentation_models_pytorch.losses import DiceLoss

    return DiceLoss(mode="multiclass", ignore_index=ignore_index)


def lovasz(class_weight: Tensor | None, ignore_index: int) -> LossFn:
    """segmentation_models_pytorch's multiclass Lovász-softmax loss (``class_weight`` unused)."""
    from segmentation_models_pytorch.losses import LovaszLoss

    return LovaszLoss(mode="multiclass", ignore_index=ignore_index)


LOSSES: dict[str, Callable[[Tensor | None, int], LossFn]] = {
    "ce": cross_entropy,
    "dice": dice,
    "lovasz": lovasz,
}


def build_losses(
    cfg: TrainConfig, num_classes: int, ignore_index: int
) -> dict[str, tuple[float, LossFn]]:
    """``{name: (weight, fn(logits, target))}`` for each term of ``cfg.loss``.

    Raises:
        ConfigError: a name that isn't in `LOSSES`, or ``class_weights`` whose length
            isn't ``num_classes``.
    """
    check_keys("train.loss", cfg.loss, LOSSES, what="loss")
    class_weight = None
    if isinstance(cfg.class_weights, list):
        if len(cfg.class_weights) != num_classes:
            raise ConfigError(
                f"train.class_weights has {len(cfg.class_weights)} values for {num_classes} classes"
            )
        class_weight = torch.tensor(cfg.class_weights, dtype=torch.float32)
    return {
        name: (weight, LOSSES[name](class_weight, ignore_index))
        for name, weight in cfg.loss.items()
    }
