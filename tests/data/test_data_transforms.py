"""Train/val transforms: image and mask stay aligned; padding, dtypes, resizing."""

import cv2
import numpy as np
import pytest
import torch

from seg.data import build_train_transform, build_val_transform

HEIGHT, WIDTH = 150, 300


def _coordinate_image() -> tuple[np.ndarray, np.ndarray]:
    """Pixel (x, y) holds R = x % 256, G = y % 256, B = 64 + x // 256 + 4 * (y // 256).

    B is never 0, so padding (filled with 0) is recognisable. The mask is a function of
    the same coordinates, with an ignore block."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    image = np.stack([xs % 256, ys % 256, 64 + xs // 256 + 4 * (ys // 256)], axis=-1)
    return image.astype(np.uint8), _mask_of(xs, ys)


def _mask_of(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    mask = (xs // 3 + 2 * (ys // 5)) % 20
    mask[(ys > 100) & (ys < 110) & (xs > 40) & (xs < 60)] = 255
    return mask.astype(np.uint8)


@pytest.mark.parametrize("crop_size", [(96, 128), (200, 200)])
def test_train_transform_keeps_image_and_mask_aligned(crop_size):
    image, mask = _coordinate_image()
    flips, scales = set(), set()
    for seed in range(25):
        transform = build_train_transform(
            crop_size,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            photometric=False,
            interpolation=cv2.INTER_NEAREST,
            seed=seed,
        )
        out = transform(image=image, mask=mask)
        out_image, out_mask = out["image"], out["mask"]
        assert out_image.dtype == torch.float32 and out_image.shape == (3, *crop_size)
        assert out_mask.dtype == torch.int64 and out_mask.shape == crop_size
        codes = np.round(out_image.numpy() * 255).astype(int)
        red, green, blue = codes
        labels = out_mask.numpy()
        padded = blue == 0
        assert (labels[padded] == 255).all(), "padding must be ignored in the mask"
        xs = red + 256 * ((blue - 64) % 4)
        ys = green + 256 * ((blue - 64) // 4)
        real = ~padded
        np.testing.assert_array_equal(labels[real], _mask_of(xs[real], ys[real]))
        row = xs[real.all(axis=1)][:1]
        if row.size and row.shape[1] > 1:
            flips.add(bool(row[0, 1] < row[0, 0]))
        scales.add(int(xs[real].max() - xs[real].min()))  # source width covered
    assert flips == {True, False}, "horizontal flip never (or always) happened"
    assert len(scales) > 5, "scale did not vary"


def test_padding_uses_mean_so_normalised_pad_is_zero():
    image = np.full((20, 20, 3), 200, np.uint8)
    mask = np.ones((20, 20), np.uint8)
    transform = build_train_transform(64, scale=(1.0, 1.0), photometric=False, seed=0)
    out = transform(image=image, mask=mask)
    labels = out["mask"].numpy()
    assert (labels == 255).sum() == 64 * 64 - 20 * 20
    pad = np.broadcast_to(labels == 255, out["image"].shape[1:])
    assert np.abs(out["image"].numpy()[:, pad]).max() < 0.02


def test_photometric_jitter_changes_only_the_image():
    image, mask = _coordinate_image()
    plain = build_train_transform(64, photometric=False, seed=3)(image=image, mask=mask)
    jittered = build_train_transform(64, photometric=True, seed=3)(image=image, mask=mask)
    np.testing.assert_array_equal(plain["mask"].numpy(), jittered["mask"].numpy())


def test_val_transform_normalises_and_resizes_mask_nearest():
    image, mask = _coordinate_image()
    out = build_val_transform()(image=image, mask=mask)
    assert out["image"].shape == (3, HEIGHT, WIDTH) and out["mask"].dtype == torch.int64
    np.testing.assert_array_equal(out["mask"].numpy(), mask)
    expected = (image[7, 9] / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array(
        [0.229, 0.224, 0.225]
    )
    np.testing.assert_allclose(out["image"][:, 7, 9].numpy(), expected, atol=1e-5)

    resized = build_val_transform(resize=(64, 80))(image=image, mask=mask)
    assert resized["image"].shape == (3, 64, 80) and resized["mask"].shape == (64, 80)
    assert set(np.unique(resized["mask"].numpy())) <= set(np.unique(mask))


def test_bad_scale():
    with pytest.raises(ValueError, match="scale"):
        build_train_transform(64, scale=(2.0, 0.5))
