"""LiftPool against independent truths: its exact inverse, PyWavelets, the paper's formulas."""

import numpy as np
import pytest
import pywt
import torch
from torch import nn

import seg.ops as ops


def randomise(module: nn.Module, std: float = 0.5) -> nn.Module:
    """Non-trivial learned P/U (a fresh layer is the lazy wavelet, which hides bugs)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def naive_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape[-1] % 2:
        x = torch.cat([x, x[..., -1:]], -1)
    return x[..., 0::2], x[..., 1::2]


SIZES_2D = [(8, 8), (7, 9), (6, 11), (2, 2), (1, 6), (6, 1), (1, 1), (33, 20)]


@pytest.mark.parametrize("size", SIZES_2D)
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_2d_inverse_is_exact_for_random_learned_predictors(size, kernel_size):
    down = randomise(ops.LiftDownPool2d(5, kernel_size=kernel_size)).double()
    up = ops.LiftUpPool2d(down)
    x = torch.randn(2, 5, *size, dtype=torch.float64)
    bands = down.decompose(x)
    assert bands.size == size
    assert bands.ll.shape == (2, 5, (size[0] + 1) // 2, (size[1] + 1) // 2)
    torch.testing.assert_close(up(bands.ll, bands), x, atol=1e-9, rtol=0)


@pytest.mark.parametrize("length", [1, 2, 3, 8, 17])
def test_1d_inverse_is_exact_for_random_learned_predictors(length):
    down = randomise(ops.LiftDownPool1d(4)).double()
    up = ops.LiftUpPool1d(down)
    x = torch.randn(3, 4, length, dtype=torch.float64)
    bands = down.decompose(x)
    assert bands.s.shape == (3, 4, (length + 1) // 2) and bands.size == length
    torch.testing.assert_close(up(bands.s, bands), x, atol=1e-9, rtol=0)


@pytest.mark.parametrize("predictor", ["haar", "legall53"])
@pytest.mark.parametrize("size", [(8, 8), (5, 7), (1, 4)])
def test_fixed_predictors_invert_exactly(predictor, size):
    down = ops.LiftDownPool2d(predictor=predictor).double()
    x = torch.randn(1, 2, *size, dtype=torch.float64)
    bands = down.decompose(x)
    torch.testing.assert_close(ops.LiftUpPool2d(down)(bands.ll, bands), x, atol=1e-12, rtol=0)


def test_1d_step_follows_the_lifting_equations():
    """d = x_o - P(x_e), s = x_e + U(d), with P and U applied by hand."""
    down = randomise(ops.LiftDownPool1d(3, kernel_size=3)).double()
    x = torch.randn(2, 3, 11, dtype=torch.float64)
    x_e, x_o = naive_split(x)
    d = x_o - down.predict(x_e)
    s = x_e + down.update(d)
    bands = down.decompose(x)
    torch.testing.assert_close(bands.d, d)
    torch.testing.assert_close(bands.s, s)


def test_learned_predictor_matches_conv_relu_conv_tanh():
    """P(t) = tanh(W2 * relu(depthwise(t, reflect)) + b2), written with nn layers."""
    predictor = randomise(ops.LearnedPredictor(4, kernel_size=3)).double()
    t = torch.randn(2, 4, 9, dtype=torch.float64)
    depthwise = nn.Conv1d(4, 4, 3, padding=1, padding_mode="reflect", groups=4).double()
    mix = nn.Conv1d(4, 4, 1).double()
    with torch.no_grad():
        depthwise.weight.copy_(predictor.depthwise_weight)
        depthwise.bias.copy_(predictor.depthwise_bias)
        mix.weight.copy_(predictor.mix_weight.unsqueeze(-1))
        mix.bias.copy_(predictor.mix_bias)
    expected = torch.tanh(mix(torch.relu(depthwise(t))))
    torch.testing.assert_close(predictor(t), expected)


def test_fresh_layer_is_the_lazy_wavelet():
    x = torch.randn(2, 3, 10, 14)
    y = ops.LiftDownPool2d(3)(x)
    torch.testing.assert_close(y, x[:, :, 0::2, 0::2])


def test_output_sum_adds_the_four_bands():
    down = randomise(ops.LiftDownPool2d(2, output="sum"))
    x = torch.randn(1, 2, 6, 6)
    b = down.decompose(x)
    torch.testing.assert_close(down(x), b.ll + b.lh + b.hl + b.hh)


@pytest.mark.parametrize("size", [(8, 10), (7, 9), (1, 5)])
def test_haar_equals_pywavelets(size):
    x = torch.randn(1, 1, *size, dtype=torch.float64)
    bands = ops.lift_down2d(x, ops.haar_predict, ops.haar_update)
    ca, (ch, cv, cd) = pywt.dwt2(x[0, 0].numpy(), "haar", mode="periodization")
    band = {k: getattr(bands, k)[0, 0].numpy() for k in ("ll", "lh", "hl", "hh")}
    np.testing.assert_allclose(ca, 2 * band["ll"], atol=1e-12)
    np.testing.assert_allclose(ch, -band["lh"], atol=1e-12)
    np.testing.assert_allclose(cv, -band["hl"], atol=1e-12)
    np.testing.assert_allclose(cd, band["hh"] / 2, atol=1e-12)


def test_legall53_equals_pywavelets_bior22_away_from_the_boundary():
    x = torch.randn(1, 1, 32, 40, dtype=torch.float64)
    bands = ops.lift_down2d(x, ops.legall53_predict, ops.legall53_update)
    ca, (ch, cv, cd) = pywt.dwt2(x[0, 0].numpy(), "bior2.2", mode="periodization")
    inner = (slice(2, -2), slice(2, -2))
    # per axis: cA = sqrt(2) s, cD = -d / sqrt(2)
    np.testing.assert_allclose(ca[inner], 2 * bands.ll[0, 0].numpy()[inner], atol=1e-12)
    np.testing.assert_allclose(ch[inner], -bands.lh[0, 0].numpy()[inner], atol=1e-12)
    np.testing.assert_allclose(cv[inner], -bands.hl[0, 0].numpy()[inner], atol=1e-12)
    np.testing.assert_allclose(cd[inner], bands.hh[0, 0].numpy()[inner] / 2, atol=1e-12)


def test_legall53_1d_equals_pywavelets_bior22():
    x = torch.randn(1, 1, 64, dtype=torch.float64)
    bands = ops.lift_down1d(x, ops.legall53_predict, ops.legall53_update)
    ca, cd = pywt.dwt(x[0, 0].numpy(), "bior2.2", mode="periodization")
    np.testing.assert_allclose(ca[2:-2], np.sqrt(2) * bands.s[0, 0].numpy()[2:-2], atol=1e-12)
    np.testing.assert_allclose(cd[2:-2], -bands.d[0, 0].numpy()[2:-2] / np.sqrt(2), atol=1e-12)


def test_functional_forms_accept_any_callables_and_axis_pairs():
    x = torch.randn(1, 2, 6, 8, dtype=torch.float64)

    def scale_predict(t):
        return 0.3 * t

    def scale_update(d):
        return 0.1 * d

    predict = (scale_predict, ops.haar_predict)
    update = (scale_update, ops.haar_update)
    bands = ops.lift_down2d(x, predict, update)
    torch.testing.assert_close(ops.lift_up2d(bands, predict, update), x)
    # Horizontal step by hand: d = x_o - 0.3 x_e, s = x_e + 0.1 d; then Haar along H.
    x_e, x_o = x[..., 0::2], x[..., 1::2]
    d = x_o - 0.3 * x_e
    s = x_e + 0.1 * d
    torch.testing.assert_close(bands.ll, (s[..., 0::2, :] + s[..., 1::2, :]) / 2)
    torch.testing.assert_close(bands.hh, d[..., 1::2, :] - d[..., 0::2, :])


def test_decoder_feature_replaces_ll_and_details_matter():
    down = randomise(ops.LiftDownPool2d(3)).double()
    up = ops.LiftUpPool2d(down)
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    bands = down.decompose(x)
    feature = torch.randn_like(bands.ll)
    out = up(feature, bands)
    assert out.shape == x.shape
    # the result is the exact inverse with the feature as LL
    torch.testing.assert_close(down.decompose(out).ll, feature)
    changed = up(feature, bands._replace(hh=bands.hh + 1.0))
    assert (changed - out).abs().max() > 1e-3


def test_regularisers_follow_the_paper_and_are_recorded():
    down1 = randomise(ops.LiftDownPool1d(3)).double()
    ops.set_lift_regularization(down1, 1.0, 0.5)
    x = torch.randn(2, 3, 10, dtype=torch.float64)
    with ops.record_lift_regularization() as record:
        bands = down1.decompose(x)
    _, x_o = naive_split(x)
    c_u, c_p = (bands.s - x_o).pow(2).mean(), bands.d.pow(2).mean()
    torch.testing.assert_close(record.c_u, c_u.detach())
    torch.testing.assert_close(record.c_p, c_p.detach())
    torch.testing.assert_close(record.loss, (c_u + 0.5 * c_p).detach())
    down1.eval()
    with ops.record_lift_regularization() as record:
        down1(x)
    assert record.calls == 0


def test_2d_regulariser_sums_the_three_steps():
    down = randomise(ops.LiftDownPool2d(2)).double()
    ops.set_lift_regularization(down, 1.0, 1.0)
    x = torch.randn(1, 2, 6, 8, dtype=torch.float64)
    with ops.record_lift_regularization() as record:
        down.decompose(x)
    (pw, ph), (uw, uh) = down.predictors
    # horizontal step
    x_e, x_o = naive_split(x)
    d = x_o - pw(x_e)
    s = x_e + uw(d)
    c_u, c_p = (s - x_o).pow(2).mean(), d.pow(2).mean()
    for band in (s, d):
        t_e, t_o = naive_split(band.transpose(-1, -2))
        dd = t_o - ph(t_e)
        ss = t_e + uh(dd)
        c_u, c_p = c_u + (ss - t_o).pow(2).mean(), c_p + dd.pow(2).mean()
    torch.testing.assert_close(record.c_u, c_u.detach())
    torch.testing.assert_close(record.c_p, c_p.detach())


def test_gradcheck_down_and_up_with_learned_predictors():
    down = randomise(ops.LiftDownPool2d(2, kernel_size=3)).double()
    up = ops.LiftUpPool2d(down)
    params = tuple(down.parameters())  # perturbed in place by gradcheck, so the module sees it
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, *ps: tuple(down.decompose(x)[:4]), (x, *params), fast_mode=True
    )
    with torch.no_grad():  # fixed bands: the check below differentiates the up step alone
        bands = down.decompose(x)
    feature = torch.randn_like(bands.ll, requires_grad=True)
    lh = bands.lh.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda f, lh, *ps: up(f, bands._replace(lh=lh)), (feature, lh, *params), fast_mode=True
    )


def test_gradcheck_1d():
    down = randomise(ops.LiftDownPool1d(2)).double()
    up = ops.LiftUpPool1d(down)
    x = torch.randn(1, 2, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: tuple(down.decompose(x)[:2]), (x,))
    with torch.no_grad():
        bands = down.decompose(x)
    s = torch.randn_like(bands.s, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: up(s, bands), (s,))


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="predictor"):
        ops.LiftDownPool2d(3, predictor="db4")
    with pytest.raises(ValueError, match="output"):
        ops.LiftDownPool2d(3, output="LH")
    with pytest.raises(ValueError, match="channels"):
        ops.LiftDownPool2d(3)(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="4d tensor"):
        ops.LiftDownPool2d(3)(torch.randn(3, 8, 8))
    down = ops.LiftDownPool2d(3)
    bands = down.decompose(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="does not match"):
        ops.LiftUpPool2d(down)(torch.randn(1, 3, 2, 2), bands)
    with pytest.raises(TypeError):
        ops.LiftUpPool2d(nn.MaxPool2d(2))


def test_up_shares_parameters_with_down_and_state_dict_round_trips():
    down = randomise(ops.LiftDownPool2d(3))
    model = nn.ModuleDict({"down": down, "up": ops.LiftUpPool2d(down)})
    n_unique = sum(p.numel() for p in model.parameters())
    assert n_unique == sum(p.numel() for p in down.parameters())
    fresh_down = ops.LiftDownPool2d(3)
    fresh = nn.ModuleDict({"down": fresh_down, "up": ops.LiftUpPool2d(fresh_down)})
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(fresh["down"](x), down(x))
