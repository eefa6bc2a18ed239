"""What the trainer and the tools rely on: build_model, state_dict round trips,
torch.compile, torch.export, channels_last and bf16 autocast."""

from __future__ import annotations

import pytest
import torch
from model_helpers import randomize_batch_norm_stats, randomize_lift_predictors

from seg.config import ConfigError
from seg.models import DeepLabV3Plus, SegNet, build_model
from seg.ops import set_lift_regularization, valid_pairs


def small_segnet(**kwargs) -> SegNet:
    options = dict(num_classes=5, width=0.125, depth=3) | kwargs
    return SegNet(**options)


def small_deeplab(**kwargs) -> DeepLabV3Plus:
    options = dict(num_classes=5, encoder="resnet18", decoder_channels=32, up="lift") | kwargs
    return DeepLabV3Plus(**options)


def _perturbed(model):
    randomize_lift_predictors(model)
    randomize_batch_norm_stats(model)
    return model.eval()


# --------------------------------------------------------------------------- build_model


def test_build_model_from_config():
    model = build_model(
        {"name": "segnet", "num_classes": 21, "width": 0.125, "depth": 2, "predictor": "haar"}
    )
    assert isinstance(model, SegNet) and model.classifier.out_channels == 21
    model = build_model({"name": "DeepLabV3Plus", "num_classes": 3, "encoder": "resnet18"})
    assert isinstance(model, DeepLabV3Plus)


def test_build_model_rejects_unknown_names_and_keys():
    with pytest.raises(
        ConfigError,
        match=r"^model.name: unknown model 'unet'.* Choose one of: deeplabv3plus, segnet$",
    ):
        build_model({"name": "unet", "num_classes": 2})
    with pytest.raises(ConfigError, match=r"^model: unknown key 'widht'; did you mean 'width'\?"):
        build_model({"name": "segnet", "num_classes": 2, "widht": 0.5})
    with pytest.raises(ConfigError, match=r"^model.num_classes must be an int >= 1 .*got None$"):
        build_model({"name": "segnet"})
    with pytest.raises(ConfigError, match=r"^model.name: no model given\. Choose one of"):
        build_model({"num_classes": 2})


def test_build_model_reports_what_the_model_rejects_as_a_config_error():
    # The model's own ValueError / TypeError, prefixed with the section, on one line.
    with pytest.raises(ConfigError, match=r"^model: a segnet model can't be built .*depth"):
        build_model({"name": "segnet", "num_classes": 2, "depth": 9})
    with pytest.raises(ConfigError, match=r"^model: a segnet model can't be built .*Valid pairs"):
        build_model({"name": "segnet", "num_classes": 2, "down": "max", "up": "lift"})


# --------------------------------------------------------------------------- state dicts


@pytest.mark.parametrize(
    "make",
    [
        lambda: small_segnet(),
        lambda: small_segnet(down="max", up="maxunpool"),
        lambda: small_segnet(down="lip", up="transposed"),
        lambda: small_deeplab(),
    ],
    ids=["segnet-lift", "segnet-maxunpool", "segnet-lip-transposed", "deeplab-lift"],
)
def test_state_dict_round_trip(make, tmp_path):
    model = _perturbed(make())
    torch.save(model.state_dict(), tmp_path / "model.pt")
    torch.manual_seed(123)
    fresh = make().eval()
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    x = torch.randn(2, 3, 45, 70)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


# --------------------------------------------------------------------------- compile / export


@pytest.mark.slow
def test_torch_compile():
    model = small_segnet()
    randomize_lift_predictors(model)
    compiled = torch.compile(model, dynamic=False)
    x = torch.randn(2, 3, 61, 67)
    compiled(x).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [small_segnet, small_deeplab], ids=["segnet-lift", "deeplab-lift"])
def test_torch_export(make):
    model = _perturbed(make())
    x = torch.randn(1, 3, 64, 80)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("down", "up"), valid_pairs())
def test_torch_export_every_pair(down, up):
    model = small_segnet(down=down, up=up).eval()
    x = torch.randn(1, 3, 45, 70)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- layouts and precision


def _max_error(a, b):
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("make", [small_segnet, small_deeplab], ids=["segnet-lift", "deeplab-lift"])
def test_channels_last(make):
    model = _perturbed(make())
    x = torch.randn(2, 3, 45, 70)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("make", [small_segnet, small_deeplab], ids=["segnet-lift", "deeplab-lift"])
def test_bf16_autocast_close_to_fp32(make):
    model = _perturbed(make())
    x = torch.randn(2, 3, 45, 70)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.shape == reference.shape and torch.isfinite(out).all()
    # bf16 keeps 8 bits of mantissa: a few percent of the logits' range.
    assert _max_error(out, reference) <= 0.05 * reference.abs().max().item() + 1e-3


def test_autocast_training_step():
    model = small_segnet()
    set_lift_regularization(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(2, 3, 40, 40))
        loss = torch.nn.functional.cross_entropy(logits, torch.randint(0, 5, (2, 40, 40)))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.slow
def test_docs_param_table_is_current():
    """docs/model_params.md is what tools/param_table.py prints today."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("param_table", root / "tools/param_table.py")
    param_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(param_table)
    doc = (root / "docs/model_params.md").read_text()
    assert param_table.table() in doc, (
        "regenerate: python tools/param_table.py --out docs/model_params.md"
    )
