"""The models' size handling is export-safe and changed no eager result.

`pad_to_multiple` pads always (no ``if no padding: return x``) and `crop_to` crops with a
negative ``F.pad`` (no slice view): a traced graph then holds at every size, not only at
sizes like the example's. The eager logits are those of the former code bit for bit,
checked here against that code (kept below as ``_former_pad`` and ``_former_crop``) at sizes
that are and are not multiples of the stride, contiguous and channels_last.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_helpers import randomize_batch_norm_stats, randomize_lift_predictors

import seg.models.deeplab as deeplab_module
import seg.models.segnet as segnet_module
from seg.engine.export import ExportError, check_guards, export_program, supported_minimum
from seg.models import DeepLabV3Plus, SegNet
from seg.models.common import crop_to, pad_to_multiple

SIZES = [(32, 32), (16, 40), (33, 17), (7, 45), (3, 5)]  # stride 8: multiples, then not
PAIRS = [
    ("lift", "lift", {}),
    ("lift", "lift", {"predictor": "haar"}),
    ("lift", "lift", {"predictor": "legall53"}),
    ("max", "maxunpool", {}),
    ("max", "bilinear", {}),
    ("soft", "bilinear", {}),
    ("lip", "bilinear", {}),
    ("max", "bilinear+skip", {}),
    ("max", "maxunpool+skip", {}),
]


def _former_pad(x, multiple, mode="replicate"):
    """seg.models.common.pad_to_multiple before it became export-safe."""
    if mode == "none" or multiple <= 1:
        return x
    height, width = x.shape[-2], x.shape[-1]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    if mode == "replicate":
        return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return F.pad(x, (0, pad_w, 0, pad_h))


def _former_crop(logits, height, width):
    return logits[..., :height, :width]


def _prepared(model):
    randomize_lift_predictors(model)
    randomize_batch_norm_stats(model)
    return model.eval()


def _outputs(model, inputs):
    with torch.no_grad():
        return [model(x) for x in inputs]


def _inputs():
    generator = torch.Generator().manual_seed(0)
    inputs = []
    for height, width in SIZES:
        x = torch.randn(2, 3, height, width, generator=generator)
        inputs += [x, x.contiguous(memory_format=torch.channels_last)]
    return inputs


def _assert_bitwise_former(model, module, monkeypatch, pad_name):
    inputs = _inputs()
    now = _outputs(model, inputs)
    with monkeypatch.context() as patch:
        patch.setattr(module, pad_name, _former_pad)
        patch.setattr(module, "crop_to", _former_crop)
        before = _outputs(model, inputs)
    for x, a, b in zip(inputs, now, before):
        assert a.shape == b.shape == (2, model.num_classes, *x.shape[-2:])
        assert torch.equal(a, b), tuple(x.shape)


def test_pad_and_crop_are_the_former_values_bit_for_bit():
    generator = torch.Generator().manual_seed(1)
    for size in [(8, 8), (9, 13), (1, 1), (24, 17)]:
        x = torch.randn(2, 3, *size, generator=generator)
        for mode in ("replicate", "zeros", "none"):
            assert torch.equal(pad_to_multiple(x, 8, mode), _former_pad(x, 8, mode))
        padded = pad_to_multiple(x, 8)
        cropped = crop_to(padded, *size)
        assert torch.equal(cropped, _former_crop(padded, *size)) and cropped.is_contiguous()


@pytest.mark.parametrize("pad_mode", ["replicate", "zeros", "none"])
@pytest.mark.parametrize(("down", "up", "options"), PAIRS)
def test_segnet_logits_unchanged_at_every_size(down, up, options, pad_mode, monkeypatch):
    torch.manual_seed(0)
    model = _prepared(
        SegNet(5, width=0.0625, depth=3, down=down, up=up, pad_mode=pad_mode, **options)
    )
    _assert_bitwise_former(model, segnet_module, monkeypatch, "pad_to_multiple")


@pytest.mark.parametrize("pad_mode", ["replicate", "zeros"])
@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("up", ["bilinear", "lift"])
def test_deeplab_logits_unchanged_at_every_size(up, output_stride, pad_mode, monkeypatch):
    torch.manual_seed(0)
    model = DeepLabV3Plus(
        5,
        encoder="resnet18",
        up=up,
        output_stride=output_stride,
        decoder_channels=16,
        pad_mode=pad_mode,
    )
    _assert_bitwise_former(_prepared(model), deeplab_module, monkeypatch, "_pad")


def _segnet_lift():
    torch.manual_seed(0)
    return _prepared(SegNet(4, width=0.0625, depth=2, down="lift", up="lift"))  # stride 4


def test_export_from_a_multiple_of_the_stride_holds_at_every_size():
    model = _segnet_lift()
    example = torch.randn(2, 3, 16, 16)  # a multiple of the stride (4): the trap's example
    program = export_program(model, example)
    minimum = supported_minimum(program, example.shape, 4)
    assert minimum == (5, 5)  # learned predictors reflect-pad: 2 samples at the deepest level
    assert check_guards(program, 3, minimum, 4) > 0
    module = program.module()
    with torch.no_grad():
        for shape in [(1, 3, 5, 7), (1, 3, 33, 37), (3, 3, 50, 24), (2, 3, 16, 16)]:
            x = torch.randn(shape)
            torch.testing.assert_close(module(x), model(x), rtol=1e-5, atol=1e-5)


def test_the_former_padding_branch_is_caught_by_the_export(monkeypatch):
    model = _segnet_lift()
    example = torch.randn(2, 3, 16, 16)
    monkeypatch.setattr(segnet_module, "pad_to_multiple", _former_pad)
    program = export_program(model, example)
    with pytest.raises(ExportError, match=r"only valid for some sizes.*% 4\) == 0"):
        supported_minimum(program, example.shape, 4)


def test_odd_stages_without_padding_are_refused():
    torch.manual_seed(0)
    model = _prepared(SegNet(4, width=0.0625, depth=2, pad_mode="none"))
    example = torch.randn(2, 3, 16, 16)
    program = export_program(model, example)
    with pytest.raises(ExportError, match="pad_mode 'replicate' or 'zeros'"):
        check_guards(program, 3, supported_minimum(program, example.shape, 4), 4)
