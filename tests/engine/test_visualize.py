"""seg.engine.visualize: the one "image | truth | prediction" drawing and its layouts."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from seg.data import colorize, denormalize
from seg.engine.visualize import (
    GAP,
    comparison_row,
    one_above_another,
    panel,
    save_titled,
    side_by_side,
)

PALETTE = np.array([[0, 0, 0], [200, 0, 0], [0, 200, 0]], dtype=np.uint8)


def _labels(height: int = 6, width: int = 5) -> torch.Tensor:
    labels = torch.randint(0, 3, (height, width))
    labels[0, 0] = 255
    return labels


def test_comparison_row_is_image_truth_and_each_prediction_a_gap_apart():
    image = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    truth, first, second = _labels(), _labels(), _labels().numpy()
    row = comparison_row(image, truth, [first, second], PALETTE)
    assert row.shape == (6, 4 * 5 + 3 * GAP, 3) and row.dtype == np.uint8
    step = 5 + GAP
    assert np.array_equal(row[:, :5], image)
    assert np.array_equal(row[:, step : step + 5], colorize(truth.numpy(), PALETTE))
    assert np.array_equal(row[:, 2 * step : 2 * step + 5], colorize(first.numpy(), PALETTE))
    assert np.array_equal(row[:, 3 * step :], colorize(second, PALETTE))
    assert (row[:, 5:step] == 255).all()  # the gaps are white
    assert (row[0, step] == 255).all()  # ignored pixels too


def test_panel_draws_the_denormalised_image_beside_truth_and_prediction():
    image, truth, prediction = torch.randn(3, 6, 5), _labels(), _labels()
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    picture = panel(image, truth, prediction, PALETTE, mean, std, ignore_index=255)
    expected = comparison_row(denormalize(image, mean, std), truth, [prediction], PALETTE)
    assert picture.shape == (6, 3 * 5 + 2 * GAP, 3)
    assert np.array_equal(picture, expected)


def test_rows_stack_a_gap_apart():
    rows = [np.zeros((3, 7, 3), np.uint8), np.ones((2, 7, 3), np.uint8)]
    grid = one_above_another(rows)
    assert grid.shape == (3 + GAP + 2, 7, 3)
    assert (grid[3 : 3 + GAP] == 255).all() and (grid[-2:] == 1).all()
    assert np.array_equal(side_by_side([rows[0]]), rows[0])


def test_save_titled_writes_an_enlarged_png(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    row = comparison_row(image, _labels(8, 8), [_labels(8, 8)], PALETTE)
    save_titled(tmp_path / "grid.png", one_above_another([row, row]), ["image", "truth", "a"])
    saved = Image.open(tmp_path / "grid.png")
    assert saved.format == "PNG" and saved.width > 3 * 100  # each column ~2.9 in at 100 dpi
    assert saved.width > 1.2 * saved.height
