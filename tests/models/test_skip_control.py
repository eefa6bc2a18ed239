"""SegNet's skip-connection control (``up: "<up>+skip"``): shapes, parameter counts
against the channel plan and against lift/lift, the skip actually carrying the encoder's
pre-pool feature, the config names, and one training step. DeepLabV3+ refuses ``+skip``."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from model_helpers import parameter_count, randomize_lift_predictors

from seg.config import ConfigError, config_from_dict
from seg.models import DeepLabV3Plus, SegNet, build_model, check_model_config, segnet_pairs
from seg.models.segnet import segnet_ups
from seg.ops import valid_pairs

NUM_CLASSES = 5
SKIP_PAIRS = [(down, up) for down, up in segnet_pairs() if up.endswith("+skip")]
# Last channel count of each vgg16_bn stage (64, 128, 256, 512, 512) times the width.
STAGE_CHANNELS = {0.25: (16, 32, 64, 128, 128), 1.0: (64, 128, 256, 512, 512)}
ALL_UPS = (
    "bilinear, bilinear+skip, lift, lift+skip, maxunpool, maxunpool+skip, nearest, "
    "nearest+skip, transposed, transposed+skip"
)


def test_every_pair_has_a_skip_variant():
    assert len(SKIP_PAIRS) == len(valid_pairs())
    assert {(d, u + "+skip") for d, u in valid_pairs()} == set(SKIP_PAIRS)
    for pair in [("max", "bilinear+skip"), ("max", "maxunpool+skip"), ("lift", "lift+skip")]:
        assert pair in SKIP_PAIRS


@pytest.mark.parametrize(("down", "up"), SKIP_PAIRS)
@pytest.mark.parametrize("size", [(97, 131), (33, 47)])
def test_output_shape_at_odd_sizes(down, up, size):
    model = SegNet(NUM_CLASSES, width=0.125, depth=3, down=down, up=up)
    assert model.skip and len(model.skip_fusions) == 3
    for batch in (1, 2):
        with torch.no_grad():
            logits = model(torch.randn(batch, 3, *size))
        assert logits.shape == (batch, NUM_CLASSES, *size)
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("up", ["bilinear+skip", "maxunpool+skip", "lift+skip"])
def test_output_shape_unpadded(up):
    """pad_mode="none": every up-pooled feature has the encoder feature's odd size."""
    down = "lift" if up.startswith("lift") else "max"
    model = SegNet(NUM_CLASSES, width=0.125, depth=4, down=down, up=up, pad_mode="none").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 33, 47)).shape == (2, NUM_CLASSES, 33, 47)


def _skip_params(width: float) -> int:
    # One 1x1 conv per stage, 2C -> C, no bias: 2 * C * C weights.
    return sum(2 * c * c for c in STAGE_CHANNELS[width])


@pytest.mark.parametrize("width", [0.25, 1.0])
@pytest.mark.parametrize(
    ("down", "up"),
    [
        ("max", "bilinear"),
        ("max", "maxunpool"),
        ("max", "nearest"),
        ("max", "transposed"),
        ("lift", "lift"),
    ],
)
def test_parameter_count_is_base_plus_the_1x1_convs(width, down, up):
    base = SegNet(21, width=width, down=down, up=up)
    skip = SegNet(21, width=width, down=down, up=up + "+skip")
    assert not hasattr(base, "skip_fusions")
    assert parameter_count(skip) == parameter_count(base) + _skip_params(width)
    assert parameter_count(skip.skip_fusions) == _skip_params(width)


def test_skip_parameters_by_hand():
    assert _skip_params(0.25) == 2 * (16**2 + 32**2 + 64**2 + 128**2 + 128**2) == 76_288
    assert _skip_params(1.0) == 2 * (64**2 + 128**2 + 256**2 + 512**2 + 512**2) == 1_220_608
    assert parameter_count(SegNet(21, down="max", up="maxunpool+skip")) == 30_672_021
    assert parameter_count(SegNet(21, width=0.25, down="max", up="bilinear+skip")) == 1_923_381


@pytest.mark.parametrize("width", [0.25, 1.0])
def test_skip_controls_are_parameter_matched_to_lift(width):
    lift = parameter_count(SegNet(21, width=width, down="lift", up="lift"))
    for up in ("bilinear+skip", "maxunpool+skip"):
        control = parameter_count(SegNet(21, width=width, down="max", up=up))
        assert abs(control / lift - 1) < 0.10, (up, control, lift)
    both = parameter_count(SegNet(21, width=width, down="lift", up="lift+skip"))
    assert abs(both / lift - 1) < 0.10


# ------------------------------------------------------------------ the skip is wired in


def _capture_encoder_features(model):
    """Hooks that keep each encoder stage's output (the pre-pool feature) with its grad."""
    features = []

    def keep(module, inputs, output):
        if output.requires_grad:
            output.retain_grad()
        features.append(output)

    return features, [stage.register_forward_hook(keep) for stage in model.encoder]


def test_fusion_reads_the_pre_pool_encoder_feature():
    model = SegNet(NUM_CLASSES, width=0.125, depth=3, down="max", up="bilinear+skip").eval()
    features, handles = _capture_encoder_features(model)
    inputs = []
    handles += [
        fusion.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
        for fusion in model.skip_fusions
    ]
    with torch.no_grad():
        model(torch.randn(1, 3, 40, 56))
    for handle in handles:
        handle.remove()
    # The decoder runs deepest first.
    for feature, fused_input in zip(features, reversed(inputs)):
        channels = feature.shape[1]
        assert fused_input.shape == (1, 2 * channels, *feature.shape[-2:])
        assert torch.equal(fused_input[:, channels:], feature)


def _below_window_max(feature):
    """Positions strictly below the max of their 2x2 pooling window: max pooling passes
    them no gradient, so any gradient they get comes through the skip."""
    pooled = F.max_pool2d(feature, 2, 2, ceil_mode=True)
    window_max = pooled.repeat_interleave(2, -2).repeat_interleave(2, -1)
    return feature < window_max[..., : feature.shape[-2], : feature.shape[-1]]


def _grads_below_window_max(model, x):
    features, handles = _capture_encoder_features(model)
    try:
        model(x).square().mean().backward()
    finally:
        for handle in handles:
            handle.remove()
    return [feature.grad[_below_window_max(feature.detach())] for feature in features]


@pytest.mark.parametrize("up", ["bilinear", "maxunpool", "nearest", "transposed"])
def test_gradient_reaches_the_encoder_feature_through_the_skip(up):
    """With max pooling, an encoder position that is not its window's maximum gets a
    gradient only through the skip: non-zero with the skip, exactly zero without it
    (plain model, or the skip half of every 1x1 conv zeroed)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 48, dtype=torch.float64)
    model = SegNet(NUM_CLASSES, width=0.125, depth=3, down="max", up=up + "+skip").double()
    model.eval()

    for grads in _grads_below_window_max(model, x):
        assert grads.numel() > 100
        assert (grads != 0).float().mean() > 0.5

    with torch.no_grad():
        for fusion in model.skip_fusions:
            fusion.weight[:, fusion.out_channels :] = 0
    model.zero_grad()
    for grads in _grads_below_window_max(model, x):
        assert grads.numel() > 100 and torch.all(grads == 0)

    plain = SegNet(NUM_CLASSES, width=0.125, depth=3, down="max", up=up).double().eval()
    for grads in _grads_below_window_max(plain, x):
        assert torch.all(grads == 0)


def _skip_path_grads(model, x):
    """The gradient each encoder feature gets through the skip path alone: the pooling
    layers read a detached copy (same values, so the same forward), so nothing flows back
    through the pooling, its bands or its indices."""
    features, handles = _capture_encoder_features(model)
    handles += [
        pair.pool.register_forward_pre_hook(lambda module, args: (args[0].detach(),))
        for pair in model.pairs
    ]
    model.zero_grad()
    try:
        model(x).square().mean().backward()
    finally:
        for handle in handles:
            handle.remove()
    return [feature.grad for feature in features]


@pytest.mark.parametrize(("down", "up"), [("lift", "lift+skip"), ("max", "bilinear+skip")])
def test_skip_path_alone_carries_the_encoder_feature(down, up):
    """Any pair (lift's bands also pass a gradient everywhere): with the pooling cut off
    from autograd, the encoder features still get a gradient, through the skip only; it
    vanishes when the skip half of every 1x1 conv is zeroed."""
    torch.manual_seed(0)
    model = SegNet(NUM_CLASSES, width=0.125, depth=3, down=down, up=up).double().eval()
    randomize_lift_predictors(model)
    x = torch.randn(2, 3, 32, 48, dtype=torch.float64)
    for grad in _skip_path_grads(model, x):
        assert grad is not None and (grad != 0).float().mean() > 0.5
    for fusion in model.skip_fusions:
        assert fusion.weight.grad[:, fusion.out_channels :].abs().sum() > 0
    with torch.no_grad():
        for fusion in model.skip_fusions:
            fusion.weight[:, fusion.out_channels :] = 0
    for grad in _skip_path_grads(model, x):
        assert grad is not None and torch.all(grad == 0)


# ------------------------------------------------------------------ config and names


def test_build_model_from_config():
    model = build_model(
        {"name": "segnet", "num_classes": 3, "width": 0.125, "down": "max", "up": "bilinear+skip"}
    )
    assert isinstance(model, SegNet) and model.skip and len(model.skip_fusions) == 5
    assert model(torch.randn(1, 3, 33, 47)).shape == (1, 3, 33, 47)


def test_config_file_with_skip_loads():
    base = {
        "model": {"name": "segnet", "num_classes": 4, "width": 0.125, "down": "max"},
        "data": {"name": "synthetic", "size": 64},
    }
    for up in ("bilinear+skip", "maxunpool+skip"):
        cfg = config_from_dict(base, [f"model.up={up}"])
        assert cfg.model["up"] == up
    cfg = config_from_dict(base, ["model.down=lift", "model.up=lift+skip"])
    assert build_model(cfg.model).skip


@pytest.mark.parametrize(
    ("up", "pattern"),
    [
        (
            "bilnear+skip",
            rf"^model.up: unknown up pooling 'bilnear\+skip'; did you mean 'bilinear\+skip'\? "
            rf"Choose one of: {re.escape(ALL_UPS)}$",
        ),
        ("maxunpool+skp", r"did you mean 'maxunpool\+skip'\?"),
        ("+skip", r"unknown up pooling '\+skip'"),
        ("bilinear+skip+skip", r"unknown up pooling 'bilinear\+skip\+skip'"),
        (None, r"model.up: no up pooling given. Choose one of: bilinear, bilinear\+skip"),
    ],
)
def test_unknown_up_names_are_refused_with_the_valid_ones(up, pattern):
    cfg = {"name": "segnet", "num_classes": 3, "down": "max", "up": up}
    with pytest.raises(ConfigError, match=pattern):
        check_model_config(cfg)
    with pytest.raises(ConfigError, match=pattern):
        build_model(cfg)


def test_segnet_refuses_unknown_names_itself():
    with pytest.raises(ValueError, match=r"unknown up pooling 'bilnear\+skip'; choose one of"):
        SegNet(3, down="max", up="bilnear+skip")
    with pytest.raises(ValueError, match=r"Valid pairs \(down/up\):.*max/maxunpool\+skip"):
        SegNet(3, down="avg", up="maxunpool+skip")
    assert sorted(segnet_ups()) == ALL_UPS.split(", ")


def test_impossible_skip_pairs_are_refused_at_config_time():
    """Before anything is built, with the message build_model gives."""
    with pytest.raises(
        ConfigError,
        match=r"^model: a segnet model can't be built from this config: "
        r"up='maxunpool\+skip' can only follow down='max', not 'avg'\. "
        r"Valid pairs \(down/up\): lift/lift, lift/lift\+skip, max/maxunpool, ",
    ):
        check_model_config(
            {"name": "segnet", "num_classes": 3, "down": "avg", "up": "maxunpool+skip"}
        )
    # down defaults to lift
    with pytest.raises(ConfigError, match=r"only follow down='max', not 'lift'"):
        check_model_config({"name": "segnet", "num_classes": 3, "up": "maxunpool+skip"})
    with pytest.raises(ConfigError, match=r"^model.down: unknown down pooling 'maxx'"):
        check_model_config({"name": "segnet", "num_classes": 3, "down": "maxx"})


@pytest.mark.parametrize("up", ["bilinear+skip", "lift+skip"])
def test_deeplab_refuses_skip_with_the_reason(up):
    cfg = {"name": "deeplabv3plus", "num_classes": 3, "encoder": "resnet18", "up": up}
    with pytest.raises(ConfigError, match=r"^model.up: DeepLabV3\+ has no '\+skip' variant"):
        check_model_config(cfg)
    with pytest.raises(ValueError, match="already concatenates the encoder's stride-4 feature"):
        DeepLabV3Plus(3, encoder="resnet18", up=up)
    with pytest.raises(
        ConfigError, match=r"did you mean 'bilinear'\? Choose one of: bilinear, lift"
    ):
        check_model_config({**cfg, "up": "bilnear"})


# ------------------------------------------------------------------ training


@pytest.mark.parametrize(("down", "up"), [("max", "bilinear+skip"), ("lift", "lift+skip")])
def test_one_training_step(down, up):
    torch.manual_seed(0)
    model = build_model(
        {"name": "segnet", "num_classes": 4, "width": 0.125, "depth": 3, "down": down, "up": up}
    )
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(2, 3, 33, 47)
    target = torch.randint(0, 4, (2, 33, 47))
    target[:, :3] = 255
    before = [fusion.weight.detach().clone() for fusion in model.skip_fusions]

    loss = F.cross_entropy(model(x), target, ignore_index=255)
    optimizer.zero_grad()
    loss.backward()
    assert torch.isfinite(loss)
    named = dict(model.named_parameters())
    missing = [name for name, p in named.items() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in named.values())
    for fusion in model.skip_fusions:
        assert fusion.weight.grad.abs().sum() > 0
    optimizer.step()
    for fusion, old in zip(model.skip_fusions, before):
        assert not torch.equal(fusion.weight, old)
    assert torch.isfinite(F.cross_entropy(model(x), target, ignore_index=255))
