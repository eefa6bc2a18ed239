"""Segmentation models: SegNet and DeepLabV3+ with pluggable pooling pairs, and ``build_model``."""

from .segnet import SegNet

__all__ = ["SegNet"]
