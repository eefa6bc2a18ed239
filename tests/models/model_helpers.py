"""Shared helpers for the model tests."""

from __future__ import annotations

import torch
from torch import nn

from seg.ops import LearnedPredictor


def randomize_lift_predictors(model: nn.Module, scale: float = 0.3) -> None:
    """Give every learned LiftPool predictor non-zero weights (a fresh one is the lazy wavelet)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LearnedPredictor):
                module.mix_weight.normal_(0.0, scale / module.channels**0.5)
                module.mix_bias.normal_(0.0, scale)


def randomize_batch_norm_stats(model: nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode tests see more than the identity."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
