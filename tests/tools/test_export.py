"""tools/export.py and tools/infer.py on exported files, through their ``main(argv)`` as a
user runs them: the export verifies itself at sizes off the stride, carries the checkpoint's
metadata, refuses what it can't do (exit 2 for usage, 1 for what failed) and leaves nothing
behind when it fails; predictions from an ONNX export match the checkpoint's.

The fast tests export SegNet lift/lift (learned predictors) to ONNX and pt2 and SegNet
max/maxunpool to ONNX; the slow ones every SegNet pair and DeepLabV3+ in both formats.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import seg.engine.export as export_module
import seg.models.segnet as segnet_module
from seg.engine import save_checkpoint
from seg.engine.export import ExportedModel, custom_ops, export_program, reference_ops
from seg.models import build_model
from seg.ops import LearnedPredictor, LiftDownPool2d

CONFIG = {
    "model": {"name": "segnet", "num_classes": 4, "width": 0.0625, "depth": 3},
    "data": {"name": "synthetic", "size": 32, "num_classes": 4},
}
META = {
    "classes": ["background", "disc", "bar", "ring"],
    "palette": [[0, 0, 0], [200, 30, 30], [30, 200, 30], [30, 30, 200]],
    "ignore_index": 255,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
DEEPLAB = {"name": "deeplabv3plus", "num_classes": 4, "encoder": "resnet18"}
MATRIX = {
    "segnet-lift-lift": {},
    "segnet-lift-lift-haar": {"predictor": "haar"},
    "segnet-lift-lift-legall53": {"predictor": "legall53"},
    "segnet-max-maxunpool": {"down": "max", "up": "maxunpool"},
    "segnet-max-bilinear": {"down": "max", "up": "bilinear"},
    "segnet-soft-bilinear": {"down": "soft", "up": "bilinear"},
    "segnet-lip-bilinear": {"down": "lip", "up": "bilinear"},
    "segnet-max-bilinear+skip": {"down": "max", "up": "bilinear+skip"},
    "segnet-max-maxunpool+skip": {"down": "max", "up": "maxunpool+skip"},
    "deeplabv3plus-bilinear": {**DEEPLAB, "up": "bilinear", "decoder_channels": 16},
    "deeplabv3plus-lift": {**DEEPLAB, "up": "lift", "decoder_channels": 16},
}


def _randomize(model: torch.nn.Module) -> None:
    """Weights a fresh model lacks: non-zero LiftPool predictors, LIP logits, BN statistics
    (so that the export is checked on more than the lazy wavelet and the identity)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LearnedPredictor):
                module.mix_weight.copy_(
                    0.3 * torch.randn(module.mix_weight.shape, generator=generator)
                )
                module.mix_bias.copy_(0.3 * torch.randn(module.mix_bias.shape, generator=generator))
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(
                    0.1 * torch.randn(module.running_mean.shape, generator=generator)
                )
                module.running_var.uniform_(0.5, 1.5, generator=generator)
            elif isinstance(module, torch.nn.InstanceNorm2d) and module.affine:
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))


def make_checkpoint(path, **model):
    """A liftseg checkpoint of a tiny model (``model`` overrides `CONFIG`'s), weights randomised."""
    config = copy.deepcopy(CONFIG)
    if model.get("name") == "deeplabv3plus":
        config["model"] = dict(model)
    else:
        config["model"].update(model)
    torch.manual_seed(0)
    net = build_model(config["model"])
    _randomize(net)
    state = {"model": net.state_dict(), "config": config, "meta": META, "iteration": 1}
    return save_checkpoint(state, path)


def export(*argv) -> tuple[int, str, str]:
    """``tools/export.py`` 's main on ``argv``: (exit code, stdout, stderr)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "tools_export", Path(__file__).resolve().parents[2] / "tools" / "export.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = module.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def verified_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if "max |diff|" in line]


@pytest.fixture(scope="module")
def lift_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.pt")


@pytest.fixture(scope="module")
def shallow_checkpoint(tmp_path_factory):
    """Two stages (stride 4): the failure paths trace it faster."""
    return make_checkpoint(tmp_path_factory.mktemp("shallow") / "last.pt", depth=2)


@pytest.fixture(scope="module")
def lift_onnx(lift_checkpoint, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    code, stdout, stderr = export(lift_checkpoint, "--format", "onnx", "--out", out)
    assert code == 0, stdout + stderr
    return out, stdout


@pytest.fixture(scope="module")
def lift_pt2(lift_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("pt2") / "model.pt2"
    code, stdout, stderr = export(lift_checkpoint, "--out", out, "--size", "40", "24")
    assert code == 0, stdout + stderr
    return out, stdout


def test_onnx_export_is_verified_off_the_stride(lift_onnx):
    out, stdout = lift_onnx
    lines = verified_lines(stdout)
    assert len(lines) == 3 and all(line.endswith("ok") for line in lines), stdout
    # stride 8, example 32x32 (a multiple: the trap's case); checked at sizes that are not
    assert [line.split()[0] for line in lines] == ["1x3x9x11", "1x3x33x37", "2x3x43x49"]
    assert "height >= 9, width >= 9 (stride 8" in stdout
    for line in lines:
        relative = float(line.split("logits up to ")[1].split(": ")[1].split(" of it")[0])
        assert relative < 1e-4


def test_onnx_file_has_dynamic_named_sizes_metadata_and_no_custom_op(lift_onnx):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(lift_onnx[0]))
    dims = lambda value: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]  # noqa: E731
    assert [i.name for i in model.graph.input] == ["image"]
    assert dims(model.graph.input[0]) == ["batch", 3, "height", "width"]
    assert dims(model.graph.output[0]) == ["batch", 4, "height", "width"]
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    assert model.opset_import[0].version >= 18
    meta = json.loads({p.key: p.value for p in model.metadata_props}["liftseg"])
    for key in ("classes", "palette", "mean", "std", "ignore_index"):
        assert meta[key] == META[key], key
    assert meta["input"]["min_size"] == [9, 9] and meta["stride"] == 8
    assert meta["config"]["model"] == CONFIG["model"]


def test_pt2_export_carries_a_sidecar_and_runs_any_batch_and_size(lift_pt2, lift_checkpoint):
    out, stdout = lift_pt2
    assert len(verified_lines(stdout)) == 3 and "(+ model.pt2.json)" in stdout
    sidecar = json.loads(out.with_name("model.pt2.json").read_text())
    assert sidecar["classes"] == META["classes"] and sidecar["input"]["min_size"] == [9, 9]
    program = torch.export.load(str(out)).module()
    state = torch.load(lift_checkpoint, weights_only=True)
    model = build_model(CONFIG["model"])
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad(), reference_ops():
        for shape in [(1, 3, 9, 9), (3, 3, 27, 70)]:
            x = torch.randn(shape)
            torch.testing.assert_close(program(x), model(x), rtol=1e-5, atol=1e-5)


def test_pt2_metadata_comes_from_the_archive_and_a_stale_sidecar_is_refused(lift_pt2, tmp_path):
    """The copy inside the archive belongs to it; a FILE.pt2.json left by another export
    (the .pt2 replaced by a copy) would label the classes wrongly: refused, not used."""
    out = tmp_path / "model.pt2"
    out.write_bytes(lift_pt2[0].read_bytes())
    assert ExportedModel(out).meta["classes"] == META["classes"]  # no sidecar: the archive's
    stale = json.loads(lift_pt2[0].with_name("model.pt2.json").read_text())
    stale["classes"] = ["sky", "road", "car", "person"]
    out.with_name("model.pt2.json").write_text(json.dumps(stale))
    with pytest.raises(ValueError, match=r"model\.pt2\.json disagrees with the metadata inside"):
        ExportedModel(out)


def test_max_unpool_indices_survive_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    checkpoint = make_checkpoint(tmp_path / "last.pt", down="max", up="maxunpool")
    code, stdout, stderr = export(checkpoint, "--out", tmp_path / "m.onnx", "--opset", "18")
    assert code == 0, stdout + stderr
    assert ", opset 18:" in stdout and "height >= 1, width >= 1" in stdout
    assert all(line.endswith("ok") for line in verified_lines(stdout))


def _images(folder, sizes, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index, (height, width) in enumerate(sizes):
        # smooth blobs, not noise: a few regions per image, as in a photograph
        small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
        image.save(folder / f"img{index}.png")


def _infer(load_tool, *argv, capsys):
    code = load_tool("infer").main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("kind", ["onnx", "pt2"])
def test_infer_from_the_export_matches_the_checkpoint(
    kind, request, lift_checkpoint, load_tool, tmp_path, capsys
):
    exported, _ = request.getfixturevalue(f"lift_{kind}")
    images = tmp_path / "images"
    _images(images, [(37, 53), (61, 45), (100, 77), (9, 130)])
    code, _, err = _infer(
        load_tool, lift_checkpoint, images, "--out", tmp_path / "ckpt", "--overlay", capsys=capsys
    )
    assert code == 0, err
    code, out, err = _infer(
        load_tool, exported, images, "--out", tmp_path / kind, "--overlay", capsys=capsys
    )
    assert code == 0, err
    assert f"{exported.name}: {kind}, running on" in out and "wrote 4 label PNG(s)" in out
    for index in range(4):
        ours = Image.open(tmp_path / kind / f"img{index}.png")
        theirs = Image.open(tmp_path / "ckpt" / f"img{index}.png")
        assert ours.mode == "P" and ours.getpalette()[:12] == sum(META["palette"], [])
        agreement = (np.asarray(ours) == np.asarray(theirs)).mean()
        assert agreement >= 0.999, (index, agreement)
        assert (tmp_path / kind / "overlays" / f"img{index}.jpg").is_file()


def test_infer_skips_images_below_the_exported_minimum_and_keeps_its_guards(
    lift_onnx, load_tool, tmp_path, capsys
):
    images = tmp_path / "images"
    _images(images, [(5, 40), (20, 20)])
    code, out, err = _infer(load_tool, lift_onnx[0], images, "--out", tmp_path / "o", capsys=capsys)
    assert code == 1
    assert "img0.png: an input of 5x40 (the image, or the view" in err and "the 9x9 the" in err
    assert "wrote 1 label PNG(s)" in out and (tmp_path / "o" / "img1.png").is_file()
    code, _, err = _infer(load_tool, lift_onnx[0], images, "--out", images, capsys=capsys)
    assert code == 2 and "is the input folder" in err


def test_usage_errors_name_the_fix(lift_checkpoint, tmp_path):
    taken = tmp_path / "taken.onnx"
    taken.write_bytes(b"keep me")
    beside = tmp_path / "alone.pt2.json"  # a .pt2's metadata, the .pt2 itself gone
    beside.write_bytes(b"keep me")
    cases = [
        (("--out", tmp_path / "model.bin"), "name the file .onnx or .pt2"),
        (("--format", "pt2", "--out", tmp_path / "m.onnx"), "name it m.pt2"),
        (("--out", tmp_path / "m.onnx", "--opset", "17"), "18 or later"),
        (("--out", tmp_path / "m.pt2", "--opset", "18"), "only for --format onnx"),
        (("--out", taken), "pass --force to replace it"),
        (("--out", tmp_path / "alone.pt2"), "alone.pt2.json exists; pass --force"),
        (("--out", lift_checkpoint), "is the checkpoint itself"),
        (("--out", tmp_path / "m.pt2", "--size", "8", "40"), "at least twice the network's"),
    ]
    for argv, message in cases:
        code, _, err = export(lift_checkpoint, *argv)
        assert code == 2 and message in err, (argv, err)
        assert err.count("\n") == 1 and err.startswith("error: ")
    assert taken.read_bytes() == beside.read_bytes() == b"keep me"
    code, _, err = export(tmp_path / "missing.pt", "--out", tmp_path / "m.onnx")
    assert code == 1 and "checkpoint not found" in err


def test_a_failed_verification_is_exit_1_and_leaves_nothing(
    shallow_checkpoint, tmp_path, monkeypatch
):
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)  # no difference is small enough
    out = tmp_path / "model.pt2"
    code, stdout, err = export(shallow_checkpoint, "--out", out)
    assert code == 1 and "MISMATCH" in stdout
    assert "differs from the PyTorch model" in err and "nothing was written" in err
    assert list(tmp_path.iterdir()) == []


def test_the_padding_trap_is_an_error_not_a_wrong_file(shallow_checkpoint, tmp_path, monkeypatch):
    def former_pad(x, multiple, mode="replicate"):  # the branch the models had
        pad_h, pad_w = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
        if pad_h == 0 and pad_w == 0:
            return x
        return torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")

    monkeypatch.setattr(segnet_module, "pad_to_multiple", former_pad)
    code, _, err = export(shallow_checkpoint, "--out", tmp_path / "model.onnx")
    assert code == 1 and "only valid for some sizes" in err and "% 4) == 0" in err
    assert list(tmp_path.iterdir()) == []


def test_export_traces_the_reference_ops_whatever_the_environment(monkeypatch):
    from seg.ops.dispatch import interpreter_enabled, triton_kernels

    layer = LiftDownPool2d(4, predictor="learned").eval()
    example = torch.randn(2, 4, 16, 16)
    monkeypatch.setenv("SEG_OPS_BACKEND", "triton")
    assert custom_ops(export_program(layer, example)) == []
    assert os.environ["SEG_OPS_BACKEND"] == "triton"  # restored
    if triton_kernels() is None or not (interpreter_enabled() or torch.cuda.is_available()):
        pytest.skip("no Triton kernels here: nothing the switch could keep out")
    device = "cpu" if interpreter_enabled() else "cuda"
    plain = torch.export.export(layer.to(device), (example.to(device),))
    assert custom_ops(plain) == ["seg.lift_down2d.default"]  # what the switch keeps out


def test_exported_model_refuses_what_it_is_not(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load"):
        ExportedModel(tmp_path / "x.onnx")
    (tmp_path / "x.pt2").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="re-export it"):
        ExportedModel(tmp_path / "x.pt2")
    with pytest.raises(FileNotFoundError):
        ExportedModel(tmp_path / "missing.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "pt2"])
@pytest.mark.parametrize("name", list(MATRIX))
def test_every_model_and_pair_exports(name, kind, tmp_path):
    if kind == "onnx":
        pytest.importorskip("onnxruntime")
    checkpoint = make_checkpoint(tmp_path / "last.pt", **MATRIX[name])
    code, stdout, stderr = export(checkpoint, "--out", tmp_path / f"model.{kind}")
    assert code == 0, stdout + stderr
    lines = verified_lines(stdout)
    assert len(lines) == 3 and all(line.endswith("ok") for line in lines), stdout
    print(name, kind, *lines, sep="\n")
