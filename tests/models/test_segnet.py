"""SegNet: every pooling pair end to end, the decoder's use of the encoder's details,
parameter counts, and loading torchvision VGG weights."""

from __future__ import annotations

import pytest
import torch
from model_helpers import parameter_count, randomize_batch_norm_stats, randomize_lift_predictors

from seg.models import DeepLabV3Plus, SegNet
from seg.ops import record_lift_regularization, set_lift_regularization, valid_pairs

NUM_CLASSES = 5


@pytest.mark.parametrize(("down", "up"), valid_pairs())
def test_forward_backward_every_pair(down, up):
    model = SegNet(NUM_CLASSES, width=0.125, depth=3, down=down, up=up)
    x = torch.randn(1, 3, 97, 131)
    logits = model(x)
    assert logits.shape == (1, NUM_CLASSES, 97, 131)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()

    named = dict(model.named_parameters())
    missing = [name for name, p in named.items() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    # Pooling layers may start where part of them has zero gradient (a zero-initialised
    # LiftPool predictor or LIP norm); every conv and BN of encoder and decoder may not.
    zero = [n for n, p in named.items() if not n.startswith("pairs.") and p.grad.abs().sum() == 0]
    assert not zero, f"zero gradient for {zero}"
    nonzero = sum(bool(p.grad.abs().sum() > 0) for p in named.values())
    assert nonzero >= 0.6 * len(named)


@pytest.mark.parametrize("pad_mode", ["replicate", "zeros", "none"])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (33, 17), (64, 48)])
def test_any_input_size(pad_mode, size):
    model = SegNet(3, in_channels=2, width=0.0625, depth=4, pad_mode=pad_mode).eval()
    assert model(torch.randn(2, 2, *size)).shape == (2, 3, *size)


def test_original_segnet_parameter_count():
    # The SegNet paper (Badrinarayanan et al., 2017, table 6) gives 29.46 M for SegNet.
    model = SegNet(21, down="max", up="maxunpool")
    assert parameter_count(model) == 29_451_413
    assert len(model.encoder_convs()) == 13


def test_width_and_depth_shape_the_network():
    model = SegNet(21, width=0.25, depth=3, down="max", up="maxunpool")
    assert [conv.out_channels for conv, _ in model.encoder_convs()] == [16, 16, 32, 32] + [64] * 3
    assert len(model.pairs) == 3
    assert model.classifier.out_channels == 21
    # The logits come straight from the classifier conv: no BN or ReLU after it.
    assert isinstance(model.classifier, torch.nn.Conv2d)


def test_invalid_arguments_name_the_fix():
    with pytest.raises(ValueError, match="Valid pairs"):
        SegNet(3, down="avg", up="maxunpool")
    with pytest.raises(ValueError, match="depth"):
        SegNet(3, depth=6)
    with pytest.raises(ValueError, match="vgg16_bn"):
        SegNet(3, encoder="resnet50")
    with pytest.raises(ValueError, match="unknown option"):
        SegNet(3, down="max", up="maxunpool", predictor="haar")
    for width in (0, -1, float("inf"), float("nan")):  # inf overflowed past the tools' handling
        with pytest.raises(ValueError, match="width must be a positive finite number"):
            SegNet(3, width=width)


def _decode_with_hook(model, x, hook=None):
    handle = model.pairs[1].pool.register_forward_hook(hook) if hook else None
    try:
        return model(x)
    finally:
        if handle:
            handle.remove()


def test_lift_decoder_uses_the_encoder_details():
    model = SegNet(NUM_CLASSES, width=0.125, depth=3).eval()
    randomize_lift_predictors(model)
    x = torch.randn(1, 3, 40, 56)

    def perturb_details(module, inputs, output):
        y, bands = output
        return y, bands._replace(lh=bands.lh + 1.0, hh=bands.hh - 1.0)

    def keep(module, inputs, output):
        return output

    reference = _decode_with_hook(model, x)
    assert torch.equal(_decode_with_hook(model, x, keep), reference)
    assert not torch.allclose(_decode_with_hook(model, x, perturb_details), reference)


@pytest.mark.parametrize("predictor", ["learned", "haar", "legall53"])
def test_each_lift_pair_inverts_its_stage(predictor):
    """An identity decoder path through one stage: up(down(f)) reconstructs the encoder
    feature f, also for odd sizes and with non-zero learned predictors."""
    model = SegNet(NUM_CLASSES, width=0.125, depth=3, predictor=predictor, pad_mode="none")
    model.eval()
    randomize_lift_predictors(model)
    randomize_batch_norm_stats(model)
    feature = torch.randn(2, 3, 45, 61, dtype=torch.float64)
    model.double()
    with torch.no_grad():
        for stage, pair in zip(model.encoder, model.pairs):
            feature = stage(feature)
            pooled, skip = pair.down(feature)
            assert pooled.shape[-2:] == ((feature.shape[-2] + 1) // 2, (feature.shape[-1] + 1) // 2)
            torch.testing.assert_close(pair.up(pooled, skip), feature)
            feature = pooled


def test_lift_regularization_is_reachable():
    model = SegNet(NUM_CLASSES, width=0.125, depth=2)
    assert set_lift_regularization(model) == 2
    with record_lift_regularization() as record:
        logits = model(torch.randn(2, 3, 32, 32))
    assert record.calls == 2 and float(record.loss) > 0
    predictor = model.pairs[0].pool.lift.predict_w.mix_weight
    (logits.sum() * 0).backward()  # the task contributes nothing: the gradient is the regulariser's
    assert predictor.grad is not None and predictor.grad.abs().sum() > 0
    model.eval()
    with record_lift_regularization() as record:
        model(torch.randn(2, 3, 32, 32))
    assert record.calls == 0
    baseline = SegNet(NUM_CLASSES, width=0.125, depth=2, down="max", up="maxunpool")
    assert set_lift_regularization(baseline) == 0


@pytest.fixture(scope="module")
def vgg16_bn_file(tmp_path_factory):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(1)
    state_dict = torchvision.models.vgg16_bn().state_dict()  # random init: no download
    path = tmp_path_factory.mktemp("weights") / "vgg16_bn.pth"
    torch.save(state_dict, path)
    return path, state_dict


def test_encoder_weights_from_torchvision_file(vgg16_bn_file):
    path, state_dict = vgg16_bn_file
    model = SegNet(21, encoder_weights=str(path), down="max", up="maxunpool")
    convs = [k for k, v in state_dict.items() if k.startswith("features.") and v.dim() == 4]
    assert len(convs) == 13
    for (conv, norm), key in zip(model.encoder_convs(), convs):
        torch.testing.assert_close(conv.weight, state_dict[key], rtol=0, atol=0)
        torch.testing.assert_close(conv.bias, state_dict[key.replace("weight", "bias")])
        # In torchvision's list the BN follows its conv: features.{k} conv, features.{k+1} BN.
        norm_key = f"features.{int(key.split('.')[1]) + 1}"
        torch.testing.assert_close(norm.weight, state_dict[f"{norm_key}.weight"])
        torch.testing.assert_close(norm.running_var, state_dict[f"{norm_key}.running_var"])


def test_encoder_weights_need_width_one(vgg16_bn_file):
    path, _ = vgg16_bn_file
    with pytest.raises(ValueError, match="width=1.0"):
        SegNet(21, width=0.5, encoder_weights=path)


def test_imagenet_weights_offline_fail_clearly(monkeypatch):
    from urllib.error import URLError

    from torchvision.models._api import WeightsEnum

    def no_internet(self, *args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", no_internet)
    with pytest.raises(RuntimeError, match="encoder_weights=<path>"):
        SegNet(21, width=0.125, depth=1, encoder_weights="imagenet")


@pytest.mark.parametrize(
    "model_cls, typo, meant",
    [(SegNet, "widht", "width"), (DeepLabV3Plus, "ouput_stride", "output_stride")],
)
def test_class_count_and_misspelt_arguments_are_named(model_cls, typo, meant):
    with pytest.raises(ValueError, match="num_classes must be an int >= 1, got 0"):
        model_cls(0)
    with pytest.raises(TypeError, match=rf"unknown argument '{typo}'; did you mean '{meant}'\?"):
        model_cls(3, **{typo: 8})
