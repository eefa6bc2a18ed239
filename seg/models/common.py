"""Pieces the segmentation models share: conv blocks, padding to the network's stride and
cropping back (both export-safe: no branch on the input size), argument checks, and
pretrained-weight error messages."""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from seg.ops import DOWNS, UPS

PAD_MODES = ("replicate", "zeros", "none")


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = False
) -> nn.Sequential:
    """``kernel_size`` conv (same padding) -> BatchNorm -> ReLU: [N, in, H, W] -> [N, out, H, W]."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def check_pad_mode(pad_mode: str, allowed: tuple[str, ...] = PAD_MODES) -> str:
    if pad_mode not in allowed:
        raise ValueError(f"unknown pad_mode {pad_mode!r}; choose one of {allowed}")
    return pad_mode


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "replicate") -> Tensor:
    """Pad [N, C, H, W] at the bottom and right so H and W are multiples of ``multiple``.

    ``mode`` is ``replicate`` (repeat the last row/column), ``zeros``, or ``none``
    (returned unchanged). The caller crops its output back to (H, W) with `crop_to`.

    Export-safe: it pads always, by ``ceil(H / m) * m - H`` (zero when H is a multiple: a
    copy), never branching on the size, so a traced graph (``torch.export``, ONNX) holds
    at every size, not only at those that need the example's padding or none; and the
    padded size is ``m * ceil(H / m)``, which the tracer knows to be even at every pooling.
    The values are those of the former ``if no padding: return x`` bit for bit.
    """
    if mode == "none" or multiple <= 1:
        return x
    height, width = x.shape[-2], x.shape[-1]
    pad_h = (height + multiple - 1) // multiple * multiple - height
    pad_w = (width + multiple - 1) // multiple * multiple - width
    if mode == "replicate":
        return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return F.pad(x, (0, pad_w, 0, pad_h))


def crop_to(x: Tensor, height, width) -> Tensor:
    """``x[..., :height, :width]`` as a new contiguous tensor (a negative ``F.pad``).

    Export-safe where the slice is not: whether a slice is contiguous depends on whether
    anything was cut, and ``torch.export`` would freeze the example's answer into the
    program as a guard (a ``.pt2`` would refuse every size but those like the example's).
    ``height`` and ``width`` may be symbolic sizes.
    """
    return F.pad(x, (0, width - x.shape[-1], 0, height - x.shape[-2]))


def check_model_arguments(model: type, num_classes: int, pool_options: dict) -> None:
    """Refuse ``num_classes < 1`` and keyword arguments that are no model or pool option.

    A misspelt model argument (``widht=0.5``) would otherwise reach the pooling pair and be
    reported as its unknown option; here it names the model and the closest argument.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{model.__name__} num_classes must be an int >= 1, got {num_classes!r}")
    pool_names = {name for spec in (*DOWNS.values(), *UPS.values()) for name in spec.options}
    for key in pool_options:
        if key in pool_names:
            continue
        params = [p for p in inspect.signature(model.__init__).parameters if p != "self"]
        valid = sorted(set(params) - {"pool_options"} | pool_names)
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise TypeError(
            f"{model.__name__} got an unknown argument '{key}'{hint} Valid: {', '.join(valid)}"
        )


def download_failed(what: str, url: str | None, error: Exception) -> RuntimeError:
    """The error to raise when pretrained weights can't be fetched (no internet, hub down)."""
    where = f" from {url}" if url else ""
    return RuntimeError(
        f"could not download {what}{where} ({type(error).__name__}: {error}). This machine "
        "may have no internet access: download the file on a machine that has, copy it here "
        "and pass its path as encoder_weights=<path>, or use encoder_weights=None."
    )


def weights_path(encoder_weights) -> Path | None:
    """``encoder_weights`` as a local file path, or None when it names hub weights."""
    if encoder_weights is None:
        return None
    path = Path(encoder_weights)
    if isinstance(encoder_weights, Path) or path.suffix in (".pt", ".pth", ".bin") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"encoder_weights file {str(path)!r} does not exist")
        return path
    return None
