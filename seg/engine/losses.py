"""The training losses a config names in ``train.loss``: ``{name: weight}``."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from seg.config import ConfigError, TrainConfig


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
