"""SegNet: a VGG-bn encoder and its mirror-image decoder, joined stage by stage through
pooling pairs.

Each encoder stage ends with ``pair.down``; the decoder stage that mirrors it starts
with ``pair.up`` of the same pair, so whatever the pooling kept (LiftPool detail
bands, max-pool indices, the size to restore) goes straight to the layer that
undoes it::

    x ─ stage 1 ─ down1 ─ stage 2 ─ down2 ─ ... ─ stage 5 ─ down5 ─┐
                    │ skip1           │ skip2              │ skip5   │
    logits ─ cls ─ dec 1 ─ up1 ─ dec 2 ─ up2 ─ ... ─ dec 5 ─ up5 ───┘

``down="max", up="maxunpool"`` is the original SegNet (Badrinarayanan et al.,
2017); ``up="bilinear"`` the bilinear baseline; ``down="lift", up="lift"`` the
bidirectional LiftPool network.

The skip-connection control: any up name with the suffix ``+skip``
(``"bilinear+skip"``, ``"maxunpool+skip"``, ``"lift+skip"``, ...) adds a U-Net-style
skip at every stage. After the stage's up-pooling, the encoder's pre-pool feature of
that stage is concatenated and a 1x1 conv maps the 2C channels back to C::

    up_i = pair_i.up(x, skip_i)                        # [N, C, H, W]
    x    = fuse_i(cat([up_i, feature_i]))              # 1x1 conv 2C -> C, then dec i

LiftUpPool hands the encoder's LH/HL/HH bands to the decoder: in effect a learned skip
path. ``max/bilinear+skip`` and ``max/maxunpool+skip`` are the baselines with a plain
skip, parameter-matched to ``lift/lift`` (within 5 % at width 0.25 and 1, see
``docs/model_params.md``); ``lift/lift+skip`` asks whether the bands add anything on
top of a skip.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seg.ops import DOWNS, UPS, build_pool_pair, valid_pairs

from .common import (
    check_model_arguments,
    check_pad_mode,
    conv_bn_relu,
    crop_to,
    download_failed,
    pad_to_multiple,
    weights_path,
)

# Output channels of each conv, stage by stage (torchvision's VGG configurations).
VGG_STAGES: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg11_bn": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13_bn": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16_bn": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19_bn": (
        (64, 64),
        (128, 128),
        (256, 256, 256, 256),
        (512, 512, 512, 512),
        (512, 512, 512, 512),
    ),
}


SKIP_SUFFIX = "+skip"


def _scale(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def split_up(up: str) -> tuple[str, bool]:
    """``"bilinear+skip"`` -> ``("bilinear", True)``; ``"bilinear"`` -> ``("bilinear", False)``."""
    if isinstance(up, str) and up.endswith(SKIP_SUFFIX):
        return up[: -len(SKIP_SUFFIX)], True
    return up, False


def segnet_ups() -> tuple[str, ...]:
    """Every up name SegNet accepts: each registered up, and each with ``+skip``."""
    return tuple(name for up in UPS for name in (up, up + SKIP_SUFFIX))


def segnet_pairs() -> list[tuple[str, str]]:
    """Every (down, up) SegNet can build: the registry's pairs, and each with ``+skip``."""
    return [(down, up + suffix) for down, up in valid_pairs() for suffix in ("", SKIP_SUFFIX)]


def check_pair(down: str, up: str) -> tuple[str, bool]:
    """Check SegNet's ``down``/``up`` names: the registry up name and whether it has ``+skip``.

    Raises:
        ValueError: an unknown name (listing the valid ones) or an up that can't follow
            ``down`` (listing the valid pairs, ``+skip`` ones included).
    """
    base, skip = split_up(up)
    if down not in DOWNS:
        raise ValueError(f"unknown down pooling {down!r}; choose one of {', '.join(DOWNS)}")
    if base not in UPS:
        raise ValueError(f"unknown up pooling {up!r}; choose one of {', '.join(segnet_ups())}")
    requires = UPS[base].requires
    if requires is not None and down not in requires:
        valid = ", ".join(f"{d}/{u}" for d, u in segnet_pairs())
        raise ValueError(
            f"up={up!r} can only follow down={' or '.join(requires)!r}, not {down!r}. "
            f"Valid pairs (down/up): {valid}"
        )
    return base, skip


def _check_shape(encoder: str, depth: int, width: float) -> None:
    if encoder not in VGG_STAGES:
        raise ValueError(f"unknown SegNet encoder {encoder!r}; choose one of {list(VGG_STAGES)}")
    if not 1 <= depth <= len(VGG_STAGES[encoder]):
        raise ValueError(f"SegNet depth must be 1..{len(VGG_STAGES[encoder])}, got {depth}")
    if not math.isfinite(width) or width <= 0:
        raise ValueError(f"SegNet width must be a positive finite number, got {width}")


class SegNet(nn.Module):
    """SegNet with any pooling pair of ``seg.ops`` between encoder and decoder.

    Args:
        num_classes: channels of the logits.
        in_channels: channels of the input image.
        encoder: ``vgg16_bn`` (SegNet's, 13 convs in stages of 2, 2, 3, 3, 3), or
            ``vgg11_bn``, ``vgg13_bn``, ``vgg19_bn``.
        width: multiplies every channel count (rounded, at least 1); 0.25 for CPU runs.
        depth: number of stages (1..5), each ending in a 2x pooling; fewer for small images.
        down, up: the pooling pair (see ``seg.ops.valid_pairs()``); ``max``/``maxunpool``
            is the original SegNet. ``up`` with the suffix ``+skip`` (``"bilinear+skip"``,
            ``"lift+skip"``, ...; all in `segnet_pairs`) adds the skip-connection control:
            see ``skip_fusions`` below.
        encoder_weights: None (random init), ``"imagenet"`` (torchvision's ImageNet
            weights of the same VGG, downloaded) or the path of a torchvision
            ``vgg*_bn`` state dict saved with ``torch.save``. Needs width 1 and 3 input
            channels.
        pad_mode: inputs are padded at the bottom/right to a multiple of ``2**depth``
            (``replicate`` or ``zeros``) and the logits cropped back, so every pair
            pools even sizes; ``none`` lets each pair handle odd sizes itself (all do;
            ``lip``'s instance norms need a map of at least 2 pixels at every stage).
        pool_options: passed to ``build_pool_pair`` (``predictor``, ``kernel_size``,
            ``output`` for lift; ``logit`` for lip).

    ``forward``: [N, in_channels, H, W] float -> logits [N, num_classes, H, W], any H, W.

    The decoder stage of encoder stage i un-pools with pair i, then runs as many
    conv-BN-ReLU blocks as the encoder stage has convs; its last block maps to the
    channel count of stage i - 1. Decoder stage 1 ends in ``classifier``, a 3x3 conv
    to ``num_classes`` with no BN/ReLU after it (the logits).

    ``+skip``: ``skip_fusions[i]``, a 1x1 conv (2C -> C, no bias: a conv-BN or the
    classifier follows), runs between the un-pooling of stage i and decoder stage i on
    the concatenation of the un-pooled feature and the encoder's feature of stage i
    before it was pooled (U-Net's skip). Concatenation + 1x1 rather than addition:
    an addition would fix the weight of the skip at 1 and force both features into
    one channel basis (and, after max-unpooling, double the kept maxima), where the
    1x1 conv learns per channel how much of each source to use, as LiftUpPool learns
    how to use its bands through its predictors; it also costs parameters of the
    order of lift's predictors (2C^2 per stage: 76,288 at width 0.25, 1,220,608 at
    width 1, against lift's 159,936 and 2,470,656), so the control stays within
    5 % of lift/lift's parameter count and no 3x3 or bottleneck is needed. Without
    ``+skip`` there are no ``skip_fusions`` (state dicts unchanged).

    Parameters for 21 classes (``docs/model_params.md``, from ``tools/param_table.py``):
    the original configuration (vgg16_bn, width 1, max/maxunpool) has 29,451,413,
    the SegNet paper's 29.45 M; lift/lift with learned predictors has 31,922,069;
    max/bilinear+skip and max/maxunpool+skip have 30,672,021 (-3.9 %).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        encoder: str = "vgg16_bn",
        width: float = 1.0,
        depth: int = 5,
        down: str = "lift",
        up: str = "lift",
        encoder_weights: str | None = None,
        pad_mode: str = "replicate",
        **pool_options,
    ) -> None:
        super().__init__()
        check_model_arguments(SegNet, num_classes, pool_options)
        _check_shape(encoder, depth, width)
        base_up, self.skip = check_pair(down, up)
        self.num_classes = num_classes
        self.encoder_name = encoder
        self.depth = depth
        self.pad_mode = check_pad_mode(pad_mode)
        self.stride = 2**depth

        stages = [tuple(_scale(c, width) for c in stage) for stage in VGG_STAGES[encoder][:depth]]
        stage_in = [in_channels] + [stage[-1] for stage in stages[:-1]]

        self.encoder = nn.ModuleList()
        for channels_in, stage in zip(stage_in, stages):
            blocks = []
            for channels_out in stage:
                # bias=True like torchvision's VGG, so its weights load one to one.
                blocks.append(conv_bn_relu(channels_in, channels_out, bias=True))
                channels_in = channels_out
            self.encoder.append(nn.Sequential(*blocks))

        self.pairs = nn.ModuleList(
            build_pool_pair(down, base_up, stage[-1], **pool_options) for stage in stages
        )
        if self.skip:
            self.skip_fusions = nn.ModuleList(
                nn.Conv2d(2 * stage[-1], stage[-1], 1, bias=False) for stage in stages
            )

        # decoder[i] mirrors encoder[i]: convs at stage i's width, the last one mapping to
        # stage i - 1's (stage 1 hands over to the classifier instead).
        self.decoder = nn.ModuleList()
        for i, stage in enumerate(stages):
            channels = stage[-1]
            blocks = [conv_bn_relu(channels, channels) for _ in stage[:-1]]
            if i > 0:
                blocks.append(conv_bn_relu(channels, stage_in[i]))
            self.decoder.append(nn.Sequential(*blocks))
        self.classifier = nn.Conv2d(stages[0][-1], num_classes, 3, padding=1)

        self._init_weights()
        if encoder_weights is not None:
            self.load_encoder_weights(encoder_weights)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2], x.shape[-1]
        x = pad_to_multiple(x, self.stride, self.pad_mode)
        skips, features = [], []
        for stage, pair in zip(self.encoder, self.pairs):
            feature = stage(x)
            x, skip = pair.down(feature)
            skips.append(skip)
            features.append(feature if self.skip else None)
        for i in reversed(range(self.depth)):
            x = self.pairs[i].up(x, skips[i])
            if self.skip:
                x = self.skip_fusions[i](torch.cat([x, features[i]], dim=1))
            x = self.decoder[i](x)
        logits = self.classifier(x)
        return crop_to(logits, height, width)

    # ------------------------------------------------------------------ pretrained encoder

    def encoder_convs(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        """The encoder's (conv, BN) pairs, in torchvision's ``features`` order."""
        return [(block[0], block[1]) for stage in self.encoder for block in stage]

    def load_encoder_weights(self, encoder_weights: str) -> None:
        """Load torchvision ``vgg*_bn`` weights into the encoder.

        ``encoder_weights`` is ``"imagenet"`` (downloaded through torchvision) or the path
        of a file holding a torchvision VGG-bn ``state_dict`` (keys ``features.N.*``).
        The first ``depth`` stages take the first convs of the file, in order.
        """
        path = weights_path(encoder_weights)
        if path is not None:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
            source = str(path)
        elif encoder_weights == "imagenet":
            state_dict = _download_vgg_weights(self.encoder_name)
            source = f"torchvision {self.encoder_name} IMAGENET1K_V1"
        else:
            raise ValueError(
                f"encoder_weights must be None, 'imagenet' or the path of a torchvision "
                f"{self.encoder_name} state dict, got {encoder_weights!r}"
            )
        self._load_torchvision_features(state_dict, source)

    def _load_torchvision_features(self, state_dict: dict, source: str) -> None:
        if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
            state_dict = state_dict["state_dict"]
        layers: dict[int, dict[str, Tensor]] = {}
        for key, value in state_dict.items():
            parts = key.split(".")
            if len(parts) == 3 and parts[0] == "features" and parts[1].isdigit():
                layers.setdefault(int(parts[1]), {})[parts[2]] = value
        if not layers:
            raise ValueError(
                f"{source} holds no 'features.N.*' keys: expected the state_dict of a "
                f"torchvision {self.encoder_name} model"
            )
        convs = [p for _, p in sorted(layers.items()) if "running_mean" not in p]
        norms = [p for _, p in sorted(layers.items()) if "running_mean" in p]
        ours = self.encoder_convs()
        if len(convs) < len(ours) or len(norms) < len(ours):
            raise ValueError(
                f"{source} has {len(convs)} convs and {len(norms)} batch norms, the encoder "
                f"needs {len(ours)} of each: is it a torchvision {self.encoder_name} state dict?"
            )
        with torch.no_grad():
            for index, ((conv, norm), conv_params, norm_params) in enumerate(
                zip(ours, convs, norms)
            ):
                targets = {
                    "weight": conv.weight,
                    "bias": conv.bias,
                }
                norm_targets = {
                    "weight": norm.weight,
                    "bias": norm.bias,
                    "running_mean": norm.running_mean,
                    "running_var": norm.running_var,
                }
                for params, own, kind in (
                    (conv_params, targets, "conv"),
                    (norm_params, norm_targets, "batch norm"),
                ):
                    for name, target in own.items():
                        if name not in params:
                            raise ValueError(f"{source}: {kind} {index} has no {name!r}")
                        if params[name].shape != target.shape:
                            raise ValueError(
                                f"{source}: {kind} {index} {name} has shape "
                                f"{tuple(params[name].shape)}, the encoder expects "
                                f"{tuple(target.shape)}. Pretrained VGG weights need "
                                f"width=1.0 and in_channels=3 (this model: "
                                f"{tuple(conv.weight.shape[:2])} at conv {index})"
                            )
                        target.copy_(params[name])


def _download_vgg_weights(encoder: str) -> dict:
    import torchvision

    enum_name = encoder.replace("vgg", "VGG").replace("_bn", "_BN") + "_Weights"
    weights = getattr(torchvision.models, enum_name).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True)
    except OSError as error:  # URLError, socket and DNS errors are all OSErrors
        raise download_failed(f"ImageNet weights for {encoder}", weights.url, error) from error
