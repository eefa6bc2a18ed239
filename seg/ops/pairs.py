"""The down/up pooling pair protocol and its registry.

An encoder stage pools with ``pair.down`` and its decoder stage un-pools with
``pair.up``; whatever the up side needs (LiftPool detail bands, max-pool
indices, the size to restore) travels in the ``skip`` object between them::

    pair = build_pool_pair(down="lift", up="lift", channels=64)
    y, skip = pair.down(x)     # x [N, 64, H, W] -> y [N, 64, ceil(H/2), ceil(W/2)]
    x2 = pair.up(y2, skip)     # y2 like y -> x2 [N, 64, H, W]

Models only talk to pairs, so a new operator is one registry entry: a builder
for its module and the options it accepts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from . import baselines
from .lifting import LiftBands, LiftDownPool2d, LiftUpPool2d
from .lip import LIP2d
from .softpool import soft_pool2d


class SizeSkip(NamedTuple):
    """What an interpolating or learned up layer needs: the size to restore."""

    size: tuple[int, int]


class IndexSkip(NamedTuple):
    """What max unpooling needs: argmax indices and the size to restore."""

    indices: Tensor
    size: tuple[int, int]


# --------------------------------------------------------------------------- down layers
# Each maps x [N, C, H, W] to (y [N, C, ceil(H/2), ceil(W/2)], skip). ``keep`` says what
# the paired up layer needs, so nothing else is held for the backward or the decoder.


class LiftDown(nn.Module):
    def __init__(
        self,
        channels: int,
        keep: str,
        predictor: str = "learned",
        kernel_size: int = 3,
        output: str = "LL",
    ) -> None:
        super().__init__()
        self.lift = LiftDownPool2d(channels, kernel_size, predictor, output)
        self.keep = keep

    def forward(self, x: Tensor):
        bands = self.lift.decompose(x)
        y = bands.ll if self.lift.output == "LL" else bands.ll + bands.lh + bands.hl + bands.hh
        # LiftUpPool takes y for what the down layer returned (LL or the sum): exact either way.
        return y, (bands if self.keep == "bands" else SizeSkip(bands.size))


class MaxDown(nn.Module):
    def __init__(self, channels: int, keep: str) -> None:
        super().__init__()
        self.keep = keep

    def forward(self, x: Tensor):
        size = (x.shape[-2], x.shape[-1])
        if self.keep == "indices":
            y, indices = baselines.max_pool2d_with_indices(x)
            return y, IndexSkip(indices, size)
        return F.max_pool2d(x, 2, 2, ceil_mode=True), SizeSkip(size)


class AvgDown(nn.Module):
    def __init__(self, channels: int, keep: str) -> None:
        super().__init__()

    def forward(self, x: Tensor):
        return baselines.avg_pool2d(x), SizeSkip((x.shape[-2], x.shape[-1]))


class SoftDown(nn.Module):
    def __init__(self, channels: int, keep: str) -> None:
        super().__init__()

    def forward(self, x: Tensor):
        size = (x.shape[-2], x.shape[-1])
        # Odd sizes: repeat the last row/column, so an edge window pools its valid samples only.
        pad = (0, size[1] % 2, 0, size[0] % 2)
        if any(pad):
            x = F.pad(x, pad, mode="replicate")
        return soft_pool2d(x, 2, 2), SizeSkip(size)


class LipDown(nn.Module):
    def __init__(self, channels: int, keep: str, logit: str = "projection") -> None:
        super().__init__()
        self.lip = LIP2d(channels, logit=logit, kernel_size=3, stride=2, padding=1)

    def forward(self, x: Tensor):
        return self.lip(x), SizeSkip((x.shape[-2], x.shape[-1]))


class StrideDown(nn.Module):
    def __init__(self, channels: int, keep: str) -> None:
        super().__init__()
        self.conv = baselines.StridedConvDown(channels)

    def forward(self, x: Tensor):
        return self.conv(x), SizeSkip((x.shape[-2], x.shape[-1]))


# --------------------------------------------------------------------------- up layers
# Each maps (y [N, C, h, w], skip) to [N, C, *skip.size].


class LiftUp(nn.Module):
    def __init__(self, channels: int, down: LiftDown) -> None:
        super().__init__()
        self.unlift = LiftUpPool2d(down.lift)

    def forward(self, y: Tensor, skip: LiftBands) -> Tensor:
        return self.unlift(y, skip)


class MaxUnpoolUp(nn.Module):
    def __init__(self, channels: int, down: nn.Module) -> None:
        super().__init__()

    def forward(self, y: Tensor, skip: IndexSkip) -> Tensor:
        return baselines.max_unpool2d(y, skip.indices, skip.size)


class BilinearUp(nn.Module):
    def __init__(self, channels: int, down: nn.Module) -> None:
        super().__init__()

    def forward(self, y: Tensor, skip) -> Tensor:
        return baselines.upsample_bilinear(y, skip.size)


class NearestUp(nn.Module):
    def __init__(self, channels: int, down: nn.Module) -> None:
        super().__init__()

    def forward(self, y: Tensor, skip) -> Tensor:
        return baselines.upsample_nearest(y, skip.size)


class TransposedUp(nn.Module):
    def __init__(self, channels: int, down: nn.Module) -> None:
        super().__init__()
        self.conv = baselines.TransposedConvUp(channels)

    def forward(self, y: Tensor, skip) -> Tensor:
        return self.conv(y, skip.size)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DownSpec:
    builder: Callable[..., nn.Module]
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpSpec:
    builder: Callable[..., nn.Module]
    keep: str = "size"  # what the down side must hand over: "size", "indices" or "bands"
    requires: tuple[str, ...] | None = None  # downs it can invert; None: any
    options: tuple[str, ...] = field(default=())


def _options_of(builder) -> tuple[str, ...]:
    params = inspect.signature(builder).parameters
    return tuple(name for name in params if name not in ("channels", "keep", "down"))


DOWNS: dict[str, DownSpec] = {
    name: DownSpec(cls, _options_of(cls))
    for name, cls in {
        "max": MaxDown,
        "avg": AvgDown,
        "lift": LiftDown,
        "soft": SoftDown,
        "lip": LipDown,
        "stride": StrideDown,
    }.items()
}

UPS: dict[str, UpSpec] = {
    "lift": UpSpec(LiftUp, keep="bands", requires=("lift",)),
    "maxunpool": UpSpec(MaxUnpoolUp, keep="indices", requires=("max",)),
    "bilinear": UpSpec(BilinearUp),
    "nearest": UpSpec(NearestUp),
    "transposed": UpSpec(TransposedUp),
}


def valid_pairs() -> list[tuple[str, str]]:
    """Every (down, up) combination the registry can build."""
    return [
        (down, up)
        for up, spec in UPS.items()
        for down in DOWNS
        if spec.requires is None or down in spec.requires
    ]


def _describe_valid() -> str:
    return ", ".join(f"{d}/{u}" for d, u in valid_pairs())


class PoolPair(nn.Module):
    """A down layer and the up layer that undoes it (see the module docstring)."""

    def __init__(self, down_name: str, up_name: str, pool: nn.Module, unpool: nn.Module) -> None:
        super().__init__()
        self.down_name = down_name
        self.up_name = up_name
        self.pool = pool
        self.unpool = unpool

    def down(self, x: Tensor):
        """x [N, C, H, W] -> (y [N, C, ceil(H/2), ceil(W/2)], skip)."""
        return self.pool(x)

    def up(self, y: Tensor, skip) -> Tensor:
        """y [N, C, ceil(H/2), ceil(W/2)] and the skip of ``down`` -> [N, C, H, W]."""
        return self.unpool(y, skip)

    def extra_repr(self) -> str:
        return f"down={self.down_name!r}, up={self.up_name!r}"


def build_pool_pair(down: str, up: str, channels: int, **options) -> PoolPair:
    """Build a down/up pair for features of ``channels`` channels.

    Args:
        down: one of ``max, avg, lift, soft, lip, stride``.
        up: one of ``lift`` (needs down ``lift``), ``maxunpool`` (needs down ``max``),
            ``bilinear``, ``nearest``, ``transposed``.
        options: passed to the side that accepts them: ``predictor``, ``kernel_size``,
            ``output`` (lift), ``logit`` (lip).
    Raises:
        ValueError: unknown name, impossible combination, or an option neither side takes.
    """
    if down not in DOWNS:
        raise ValueError(f"unknown down pooling {down!r}; choose one of {sorted(DOWNS)}")
    if up not in UPS:
        raise ValueError(f"unknown up pooling {up!r}; choose one of {sorted(UPS)}")
    down_spec, up_spec = DOWNS[down], UPS[up]
    if up_spec.requires is not None and down not in up_spec.requires:
        raise ValueError(
            f"up={up!r} can only invert down={' or '.join(up_spec.requires)!r}, not {down!r}. "
            f"Valid pairs (down/up): {_describe_valid()}"
        )
    unknown = set(options) - set(down_spec.options) - set(up_spec.options)
    if unknown:
        accepted = sorted(set(down_spec.options) | set(up_spec.options)) or ["none"]
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for the {down}/{up} pair; it accepts: "
            f"{', '.join(accepted)}"
        )
    pool = down_spec.builder(
        channels, keep=up_spec.keep, **{k: v for k, v in options.items() if k in down_spec.options}
    )
    unpool = up_spec.builder(
        channels, down=pool, **{k: v for k, v in options.items() if k in up_spec.options}
    )
    return PoolPair(down, up, pool, unpool)
