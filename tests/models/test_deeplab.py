"""DeepLabV3+: the bilinear variant is smp's DeepLabV3+, the lift variant decodes with the
encoder's detail bands; any input size, output strides 8 and 16 (resnet18 for speed)."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
from model_helpers import parameter_count, randomize_batch_norm_stats, randomize_lift_predictors

from seg.models import DeepLabV3Plus
from seg.ops import record_lift_regularization, set_lift_regularization

NUM_CLASSES = 4
ENCODER = "resnet18"


@pytest.mark.parametrize("output_stride", [16, 8])
def test_bilinear_is_smp_deeplabv3plus(output_stride):
    ours = DeepLabV3Plus(NUM_CLASSES, encoder=ENCODER, output_stride=output_stride)
    theirs = smp.DeepLabV3Plus(
        encoder_name=ENCODER,
        encoder_weights=None,
        classes=NUM_CLASSES,
        encoder_output_stride=output_stride,
        decoder_atrous_rates=ours.aspp_rates,
    )
    assert parameter_count(ours) == parameter_count(theirs)

    # Same modules in the same order: smp's weights map one to one onto ours and give
    # the same logits.
    randomize_batch_norm_stats(theirs)
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert [v.shape for v in ours_state.values()] == [v.shape for v in theirs_state.values()]
    ours.load_state_dict(dict(zip(ours_state, theirs_state.values())))
    ours.eval(), theirs.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("up", ["lift", "bilinear"])
def test_forward_backward_odd_size(up, output_stride):
    model = DeepLabV3Plus(
        NUM_CLASSES, encoder=ENCODER, output_stride=output_stride, up=up, decoder_channels=32
    )
    x = torch.randn(2, 3, 67, 93)
    layers = set_lift_regularization(model)
    with record_lift_regularization() as record:
        logits = model(x)
    assert logits.shape == (2, NUM_CLASSES, 67, 93)
    logits.square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    zero = [
        name
        for name, p in model.named_parameters()
        if p.grad.abs().sum() == 0 and not name.startswith("lift_pairs.")
    ]
    assert not zero, f"zero gradient for {zero}"
    if up == "lift":
        assert len(model.lift_pairs) == (2 if output_stride == 16 else 1)
        assert layers == record.calls == len(model.lift_pairs)  # the side branches' calls
    else:
        assert layers == record.calls == 0


def test_lift_adds_only_its_branches():
    bilinear = DeepLabV3Plus(NUM_CLASSES, encoder=ENCODER)
    lift = DeepLabV3Plus(NUM_CLASSES, encoder=ENCODER, up="lift")
    extra = sum(parameter_count(m) for m in (lift.lift_projections, lift.lift_pairs))
    assert parameter_count(lift) == parameter_count(bilinear) + extra


def test_lift_decoder_uses_the_encoder_details():
    model = DeepLabV3Plus(NUM_CLASSES, encoder=ENCODER, up="lift", decoder_channels=16).eval()
    randomize_lift_predictors(model)
    randomize_batch_norm_stats(model)
    x = torch.randn(1, 3, 48, 64)

    def perturb(module, inputs, output):
        y, bands = output
        return y, bands._replace(hl=bands.hl * 2.0 + 0.5)

    def run(hook=None):
        handle = model.lift_pairs[0].pool.register_forward_hook(hook) if hook else None
        try:
            with torch.no_grad():
                return model(x)
        finally:
            if handle:
                handle.remove()

    assert not torch.allclose(run(perturb), run())


def test_invalid_arguments_name_the_fix():
    with pytest.raises(ValueError, match="8 or 16"):
        DeepLabV3Plus(3, encoder=ENCODER, output_stride=32)
    with pytest.raises(ValueError, match="bilinear"):
        DeepLabV3Plus(3, encoder=ENCODER, up="nearest")
    with pytest.raises(ValueError, match="only apply to up='lift'"):
        DeepLabV3Plus(3, encoder=ENCODER, predictor="haar")
    # Its low-level skip already is the skip control: no '+skip' variant (module docstring).
    with pytest.raises(ValueError, match=r"no '\+skip' variant.*up='bilinear' is the skip"):
        DeepLabV3Plus(3, encoder=ENCODER, up="bilinear+skip")
    # smp's KeyError would escape the tools' error handling as a traceback
    with pytest.raises(ValueError, match=r"encoder 'resnet5'; did you mean 'resnet50'.*Wrong"):
        DeepLabV3Plus(3, encoder="resnet5")


def test_encoder_weights_from_torchvision_file(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(3)
    state_dict = torchvision.models.resnet18().state_dict()  # random init: no download
    path = tmp_path / "resnet18.pth"
    torch.save(state_dict, path)
    model = DeepLabV3Plus(NUM_CLASSES, encoder=ENCODER, encoder_weights=str(path))
    torch.testing.assert_close(model.encoder.conv1.weight, state_dict["conv1.weight"])
    torch.testing.assert_close(
        model.encoder.layer4[1].bn2.running_var, state_dict["layer4.1.bn2.running_var"]
    )


def test_hub_weights_offline_fail_clearly(monkeypatch):
    def no_internet(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(smp.encoders, "get_encoder", no_internet)
    with pytest.raises(RuntimeError, match="encoder_weights=<path>"):
        DeepLabV3Plus(NUM_CLASSES, encoder=ENCODER, encoder_weights="imagenet")


def test_unreachable_hub_fails_fast_from_the_cache_only(monkeypatch):
    from huggingface_hub import constants

    import seg.models.deeplab as deeplab

    seen = {}
    before = constants.HF_HUB_OFFLINE

    def get_encoder(*args, **kwargs):
        seen["offline"] = constants.HF_HUB_OFFLINE  # no retries against an absent hub
        raise OSError("not in the local cache")

    monkeypatch.setattr(deeplab, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(smp.encoders, "get_encoder", get_encoder)
    with pytest.raises(RuntimeError, match="could not download 'imagenet' weights"):
        DeepLabV3Plus(NUM_CLASSES, encoder=ENCODER, encoder_weights="imagenet")
    assert seen["offline"] is True
    assert constants.HF_HUB_OFFLINE == before  # restored


def test_hub_reachability_asks_the_configured_endpoint_through_the_hub_session(monkeypatch):
    """HF_ENDPOINT (a mirror) and the hub's own HTTP session (which honours HTTPS_PROXY) are
    what counts, not a raw socket to huggingface.co; HF_HUB_OFFLINE means offline."""
    import http.server
    import threading

    from huggingface_hub import constants

    import seg.models.deeplab as deeplab

    class Mirror(http.server.BaseHTTPRequestHandler):
        asked = []

        def do_HEAD(self):
            Mirror.asked.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Mirror)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.delenv("HTTP_PROXY", raising=False)
        monkeypatch.delenv("http_proxy", raising=False)
        assert deeplab.hub_reachable() and Mirror.asked == ["/"]
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        assert not deeplab.hub_reachable() and len(Mirror.asked) == 1
    finally:
        server.shutdown()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert not deeplab.hub_reachable(timeout=0.5)  # the mirror is gone
