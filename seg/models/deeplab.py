"""DeepLabV3+ on a segmentation_models_pytorch encoder, with bilinear or LiftUpPool decoding.

``up="bilinear"`` is DeepLabV3+ as smp builds it (same modules, same parameter
count, same outputs given the same weights): ASPP on the deepest features, one
separable 3x3 conv, bilinear upsampling to stride 4, concatenation with the
stride-4 features reduced to 48 channels, one separable 3x3 conv, a 1x1
classifier and bilinear upsampling x4 to the input size. Two choices differ
from smp's defaults without changing the structure: the ASPP rates are the
paper's (6, 12, 18) at output stride 16 and (12, 24, 36) at 8, where smp uses
(12, 24, 36) for both; and inputs of any size are padded instead of rejected.

``up="lift"`` replaces the decoder's bilinear upsampling by LiftUpPool steps.
Side branches on the encoder's stride-4 and stride-8 features project them to
the decoder's width (1x1 conv-BN-ReLU) and pool them once with LiftDownPool;
their detail bands (LH, HL, HH) are kept and their LL band is thrown away: the
decoder feature takes its place in the inverse lifting step. At output stride 16::

    encoder   stride 4 ─────────────────────┬──────────────── 1x1 -> 48 ──┐
              stride 4 ── 1x1 -> C ── LiftDown ─ bands_4 (at stride 8)    │
              stride 8 ── 1x1 -> C ── LiftDown ─ bands_8 (at stride 16)   │
              stride 16 ─ ASPP ─ sep 3x3 ─ y16                            │
                                                                          │
    decoder   y16 ─ LiftUp(bands_8) ─ y8 ─ LiftUp(bands_4) ─ y4 ─ concat ─┘
              ─ sep 3x3 ─ 1x1 classifier ─ bilinear x4 ─ logits

At output stride 8 the ASPP output already is at stride 8, so there is one
lift step (with ``bands_4``) and no stride-8 branch. The last x4 upsampling of
the logits stays bilinear: there is no encoder feature at strides 1 and 2 that
the pooling could take its bands from without a much larger decoder.

Inputs of any size are padded (bottom/right) to a multiple of the output stride,
so every feature map is exactly 1/stride of the padded input, and the logits are
cropped back.

No ``+skip`` variant (the skip-connection control SegNet has, ``up="bilinear+skip"``):
DeepLabV3+'s decoder already is one. Both ``bilinear`` and ``lift`` concatenate the
encoder's stride-4 feature (1x1 -> 48) with the upsampled decoder feature and fuse
them with a 3x3 conv, which is what ``+skip`` adds to SegNet (concatenation after the
up step + a conv), so ``bilinear+skip`` would be ``bilinear`` and ``lift+skip`` would
be ``lift``. ``up="bilinear"`` is therefore the skip control of ``up="lift"``, within
5 % of its parameters (lift adds 0.73 M, 2.7 %, with resnet50 and 0.58 M, 4.7 %, with
resnet18). What it does not control for is the stride-8 feature, which only the lift
branches read at output stride 16. Any ``+skip`` up is refused with that reason.
"""

from __future__ import annotations

import contextlib
import difflib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seg.ops import build_pool_pair

from .common import (
    check_model_arguments,
    check_pad_mode,
    conv_bn_relu,
    crop_to,
    download_failed,
    weights_path,
)
from .common import pad_to_multiple as _pad

ATROUS_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}  # the DeepLabV3+ paper's, per output stride
UPS = ("bilinear", "lift")
SKIP_REFUSAL = (
    "DeepLabV3+ has no '+skip' variant: its decoder already concatenates the encoder's "
    "stride-4 feature after upsampling (the low-level skip) for up='bilinear' and "
    "up='lift' alike, so up='bilinear' is the skip control of up='lift'. '+skip' is a "
    "SegNet option"
)
LOW_LEVEL_CHANNELS = 48  # the paper's reduction of the stride-4 features


def separable_conv(
    in_channels: int, out_channels: int, dilation: int = 1, bias: bool = False
) -> nn.Sequential:
    """Depthwise 3x3 (dilated) conv then pointwise 1x1: [N, in, H, W] -> [N, out, H, W]."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            in_channels,
            3,
            padding=dilation,
            dilation=dilation,
            groups=in_channels,
            bias=False,
        ),
        nn.Conv2d(in_channels, out_channels, 1, bias=bias),
    )


def separable_conv_bn_relu(in_channels: int, out_channels: int, dilation: int = 1):
    return nn.Sequential(
        separable_conv(in_channels, out_channels, dilation),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global average -> 1x1 conv-BN-ReLU -> broadcast back."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = conv_bn_relu(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(self.pool(x))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: [N, in, h, w] -> [N, out, h, w].

    A 1x1 branch, three separable 3x3 branches dilated by ``rates``, an image-pooling
    branch; concatenated and projected by a 1x1 conv-BN-ReLU and dropout.
    """

    def __init__(
        self, in_channels: int, out_channels: int, rates: tuple[int, int, int], dropout: float
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, out_channels, kernel_size=1)]
            + [separable_conv_bn_relu(in_channels, out_channels, rate) for rate in rates]
            + [ImagePooling(in_channels, out_channels)]
        )
        self.project = nn.Sequential(
            conv_bn_relu(len(self.branches) * out_channels, out_channels, kernel_size=1),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the weights hub answers within ``timeout`` seconds, asked the way
    huggingface_hub itself asks: its endpoint (``HF_ENDPOINT``: a mirror), its HTTP session
    (``HTTPS_PROXY`` and friends) and its offline switch (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
        return True
    except Exception:  # any transport error (DNS, proxy, TLS, timeout) means "not now"
        return False


@contextlib.contextmanager
def _offline_unless_hub_reachable(needs_hub: bool):
    """Without a reachable hub, look in the local cache only: fail in a second instead of
    retrying for half a minute (huggingface_hub's retries), and still load cached weights."""
    if not needs_hub or hub_reachable():
        yield
        return
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def _hub_files(name: str, weights: str) -> str:
    """Where smp fetches ``name``'s ``weights`` from: the repo and files to fetch by hand."""
    import segmentation_models_pytorch as smp
    from huggingface_hub import constants

    settings = smp.encoders.encoders.get(name, {}).get("pretrained_settings", {}).get(weights)
    if not settings or "repo_id" not in settings:
        return ""
    url = f"{constants.ENDPOINT}/{settings['repo_id']}"
    return (
        f" Fetch model.safetensors and config.json from {url} (revision "
        f"{settings.get('revision') or 'main'}) into the Hugging Face cache "
        "(huggingface-cli download), or point HF_ENDPOINT at a mirror."
    )


def _build_encoder(name: str, in_channels: int, output_stride: int, encoder_weights):
    import segmentation_models_pytorch as smp

    path = weights_path(encoder_weights)
    hub_weights = None if path is not None else encoder_weights
    try:
        with _offline_unless_hub_reachable(hub_weights is not None):
            encoder = smp.encoders.get_encoder(
                name,
                in_channels=in_channels,
                depth=5,
                weights=hub_weights,
                output_stride=output_stride,
            )
    except KeyError as error:  # smp's "wrong encoder name": past the tools' error handling
        known = smp.encoders.get_encoder_names()
        close = [] if name in known else difflib.get_close_matches(str(name), known, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        reason = error.args[0] if error.args else error
        raise ValueError(f"encoder {name!r}{hint} ({reason})") from error
    except OSError as error:  # no internet: DNS, socket, URLError, hub cache misses
        raise download_failed(
            f"{hub_weights!r} weights for encoder {name!r}" + _hub_files(name, hub_weights),
            None,
            error,
        ) from error
    if path is not None:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        # smp's encoders drop a classifier's keys (e.g. torchvision ResNet's fc.*) themselves.
        encoder.load_state_dict(state_dict)
    return encoder


def check_up(up: str) -> None:
    """Raise ValueError for an ``up`` DeepLabV3+ can't build (``+skip``: `SKIP_REFUSAL`)."""
    if isinstance(up, str) and up.endswith("+skip"):
        raise ValueError(f"up={up!r}: {SKIP_REFUSAL}; choose one of {', '.join(UPS)}")
    if up not in UPS:
        raise ValueError(f"unknown DeepLabV3+ up {up!r}; choose one of {UPS}")


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ (Chen et al., 2018) with bilinear or LiftUpPool decoder upsampling.

    Args:
        num_classes: channels of the logits.
        in_channels: channels of the input image.
        encoder: any smp encoder name that supports ``output_stride`` (``resnet18``,
            ``resnet50``, ``resnet101``, ...).
        output_stride: 16 (ASPP rates 6, 12, 18) or 8 (rates 12, 24, 36).
        up: ``bilinear`` (smp's DeepLabV3+) or ``lift`` (see the module docstring); no
            ``+skip`` variant: the decoder's low-level skip already is one (module docstring).
        encoder_weights: None (random init), a name smp knows (``"imagenet"``, downloaded),
            or the path of the encoder's state dict saved with ``torch.save`` (a
            torchvision ResNet state dict works for smp's ResNets).
        decoder_channels: channels of ASPP and decoder (C in the diagram).
        atrous_rates: overrides the ASPP rates of ``output_stride``.
        aspp_dropout: dropout after the ASPP projection.
        pad_mode: ``replicate`` or ``zeros``, how inputs are padded to the output stride.
        pool_options: for ``up="lift"``, passed to ``build_pool_pair`` (``predictor``,
            ``kernel_size``).

    ``forward``: [N, in_channels, H, W] float -> logits [N, num_classes, H, W], any H, W.
    In training mode the batch must hold more than one image (ASPP's image-pooling
    branch batch-normalises a 1x1 map), as in smp and torchvision.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        encoder: str = "resnet50",
        output_stride: int = 16,
        up: str = "bilinear",
        encoder_weights: str | None = None,
        decoder_channels: int = 256,
        atrous_rates: tuple[int, int, int] | None = None,
        aspp_dropout: float = 0.5,
        pad_mode: str = "replicate",
        **pool_options,
    ) -> None:
        super().__init__()
        check_model_arguments(DeepLabV3Plus, num_classes, pool_options)
        if output_stride not in ATROUS_RATES:
            raise ValueError(f"DeepLabV3+ output_stride must be 8 or 16, got {output_stride}")
        check_up(up)
        if up != "lift" and pool_options:
            raise ValueError(
                f"pool options {sorted(pool_options)} only apply to up='lift', not up={up!r}"
            )
        rates = tuple(atrous_rates) if atrous_rates is not None else ATROUS_RATES[output_stride]
        if len(rates) != 3:
            raise ValueError(f"atrous_rates needs three dilation rates, got {rates}")
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.aspp_rates = rates
        self.up = up
        self.pad_mode = check_pad_mode(pad_mode, ("replicate", "zeros"))

        # Registration order follows smp's DeepLabV3Plus, so its state dict maps onto ours
        # one to one (tests/models check that).
        self.encoder = _build_encoder(encoder, in_channels, output_stride, encoder_weights)
        channels = self.encoder.out_channels  # strides 1, 2, 4, 8, 16, 32 (or dilated)
        self.aspp = ASPP(channels[-1], decoder_channels, rates, aspp_dropout)
        self.aspp_conv = separable_conv_bn_relu(decoder_channels, decoder_channels)
        self.low_level = conv_bn_relu(channels[2], LOW_LEVEL_CHANNELS, kernel_size=1)
        self.fuse = separable_conv_bn_relu(LOW_LEVEL_CHANNELS + decoder_channels, decoder_channels)
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

        # Lift side branches, deepest first: encoder feature index (stride 8, then 4).
        self.lift_levels: tuple[int, ...] = ()
        if up == "lift":
            self.lift_levels = (3, 2) if output_stride == 16 else (2,)
            self.lift_projections = nn.ModuleList(
                conv_bn_relu(channels[level], decoder_channels, kernel_size=1)
                for level in self.lift_levels
            )
            self.lift_pairs = nn.ModuleList(
                build_pool_pair("lift", "lift", decoder_channels, **pool_options)
                for _ in self.lift_levels
            )
        self._init_decoder()

    def _init_decoder(self) -> None:
        for name, module in self.named_modules():
            if name.startswith("encoder"):
                continue
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.classifier.weight)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2], x.shape[-1]
        x = _pad(x, self.output_stride, self.pad_mode)
        features = self.encoder(x)
        low_level = features[2]
        y = self.aspp_conv(self.aspp(features[-1]))
        if self.up == "lift":
            for level, projection, pair in zip(
                self.lift_levels, self.lift_projections, self.lift_pairs
            ):
                _, bands = pair.down(projection(features[level]))
                y = pair.up(y, bands)
        else:
            y = F.interpolate(y, size=low_level.shape[-2:], mode="bilinear", align_corners=True)
        y = self.fuse(torch.cat([y, self.low_level(low_level)], dim=1))
        logits = F.interpolate(
            self.classifier(y), size=x.shape[-2:], mode="bilinear", align_corners=True
        )
        return crop_to(logits, height, width)
