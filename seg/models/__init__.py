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
from collections.abc import Mapping
from typing import Any

from torch import nn

from seg.ops import DOWNS, UPS
from seg.registry import ConfigError, check_keys, config_error

from . import deeplab, segnet
from .deeplab import DeepLabV3Plus
from .segnet import SegNet, segnet_pairs, segnet_ups

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


def pooling_choices(name: str) -> dict[str, tuple[str, ...]]:
    """The pooling names model ``name`` accepts, per config key (``down``, ``up``).

    SegNet: every registered down, every registered up and each with ``+skip`` (the
    skip-connection control). DeepLabV3+: ``up`` ``bilinear`` or ``lift``.
    """
    if name == "segnet":
        return {"down": tuple(DOWNS), "up": segnet_ups()}
    return {"up": deeplab.UPS}


def _default(name: str, key: str) -> Any:
    return inspect.signature(MODELS[name].__init__).parameters[key].default


def _check_pooling(name: str, kwargs: Mapping[str, Any]) -> None:
    up = kwargs.get("up")
    if name == "deeplabv3plus" and isinstance(up, str) and up.endswith(segnet.SKIP_SUFFIX):
        raise ConfigError(
            f"model.up: {deeplab.SKIP_REFUSAL}. Choose one of: {', '.join(deeplab.UPS)}"
        )
    choices = pooling_choices(name)
    for key, valid in choices.items():
        if key in kwargs:
            check_keys(f"model.{key}", [kwargs[key]], valid, what=f"{key} pooling")
    if name == "segnet" and ("down" in kwargs or "up" in kwargs):
        down = kwargs.get("down", _default(name, "down"))
        up = kwargs.get("up", _default(name, "up"))
        try:
            segnet.check_pair(down, up)
        except ValueError as error:  # the message build_model would give, without building
            raise config_error(
                f"model: a {name} model can't be built from this config", error
            ) from error


def check_model_config(cfg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Check a model config without building it: the model's registry name and its kwargs.

    Checks ``name`` against `MODELS` (any case), every other key against
    `model_options`, that ``num_classes`` is an int >= 1, and the pooling names
    ``down`` and ``up`` against `pooling_choices` (``"bilinear+skip"`` is SegNet's
    skip-connection control; ``"bilnear+skip"`` is refused with the closest valid name)
    and, for SegNet, that the up can follow the down. The values of the other options
    are the model's to check, when `build_model` builds it.

    Raises:
        ConfigError: naming the key (``model.name``, ``model.num_classes``, ...) and the fix.
    """
    kwargs = dict(cfg)
    name = kwargs.pop("name", None)
    key = name.lower() if isinstance(name, str) else name
    check_keys("model.name", [key], MODELS, what="model")
    check_keys("model", kwargs, model_options(key))
    num_classes = kwargs.get("num_classes")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(
            f"model.num_classes must be an int >= 1 (the number of classes, as the data set "
            f"has them), got {num_classes!r}"
        )
    _check_pooling(key, kwargs)
    return key, kwargs


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """Build a model from a config dictionary.

    Args:
        cfg: ``{"name": "segnet" | "deeplabv3plus", "num_classes": int, ...}``; every
            other key is a keyword argument of the model class (pool options such as
            ``predictor`` included).
    Raises:
        ConfigError: (a ValueError) missing or unknown ``name``, unknown keys (the message
            suggests the closest and lists the valid ones), or a value the model rejects.
    """
    key, kwargs = check_model_config(cfg)
    try:
        return MODELS[key](**kwargs)
    except (TypeError, ValueError) as error:
        raise config_error(
            f"model: a {key} model can't be built from this config", error
        ) from error


__all__ = [
    "MODELS",
    "DeepLabV3Plus",
    "SegNet",
    "build_model",
    "check_model_config",
    "model_options",
    "pooling_choices",
    "segnet_pairs",
]
