"""Segmentation models: SegNet and DeepLabV3+ with pluggable pooling pairs, and ``build_model``.

``build_model({"name": "segnet", "num_classes": 21, "width": 0.25, "down": "lift", ...})``
builds a model from a config dictionary (what the tools read from YAML).

Every model maps [N, C, H, W] images of any size to [N, num_classes, H, W] logits and
works with ``channels_last``, CPU/GPU autocast, ``torch.export`` and ``torch.compile``.
In training mode its LiftPool layers add the paper's regularisers to the gradient of the
loss by themselves (weights: ``seg.ops.set_lift_regularization(model, lambda_u, lambda_p)``;
values for logging: ``seg.ops.record_lift_regularization``).

``torch.compile``: use ``dynamic=False`` (one graph per input size) when the model
sees more than one size. With dynamic shapes, PyTorch 2.14's inductor fails on
CPU (``TypeError: cannot determine truth value of Relational`` in
``get_stride_order``) on any conv that reads the output of ``max_unpool2d`` or of
LiftUpPool's interleave while autograd is on; and torch.compile's default
switches to dynamic shapes after the second size it sees.
"""

from __future__ import annotations

import inspect

from torch import nn

from seg.ops import DOWNS, UPS

from .deeplab import DeepLabV3Plus
from .segnet import SegNet

MODELS: dict[str, type[nn.Module]] = {
    "segnet": SegNet,
    "deeplabv3plus": DeepLabV3Plus,
}


def _pool_option_names() -> set[str]:
    return {name for spec in (*DOWNS.values(), *UPS.values()) for name in spec.options}


def model_options(name: str) -> list[str]:
    """The config keys model ``name`` accepts (besides ``name``)."""
    params = inspect.signature(MODELS[name].__init__).parameters
    keys = {
        key
        for key, param in params.items()
        if key != "self" and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL)
    }
    return sorted(keys | _pool_option_names())


def build_model(cfg: dict) -> nn.Module:
    """Build a model from a config dictionary.

    Args:
        cfg: ``{"name": "segnet" | "deeplabv3plus", "num_classes": int, ...}``; every
            other key is a keyword argument of the model class (pool options such as
            ``predictor`` included).
    Raises:
        ValueError: missing or unknown ``name``, unknown keys (the message lists the
            valid ones), or a value the model rejects.
    """
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name is None:
        raise ValueError(f"model config needs a 'name': one of {sorted(MODELS)}")
    key = str(name).lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    if "num_classes" not in cfg:
        raise ValueError(f"model config for {name!r} needs 'num_classes'")
    valid = model_options(key)
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in the {name!r} model config; valid keys: {', '.join(valid)}"
        )
    return MODELS[key](**cfg)


__all__ = ["MODELS", "DeepLabV3Plus", "SegNet", "build_model", "model_options"]
