"""ConfusionMatrix against torchmetrics, and Boundary IoU against its definition."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from seg.engine.metrics import BoundaryIoU, ConfusionMatrix, boundary_width, mask_boundary

IGNORE = 255


def _random_pair(generator, num_classes, shape, ignore_fraction=0.1):
    target = torch.randint(0, num_classes, shape, generator=generator)
    target[torch.rand(shape, generator=generator) < ignore_fraction] = IGNORE
    pred = torch.randint(0, num_classes, shape, generator=generator)
    return pred, target


@pytest.mark.parametrize("num_classes", [2, 5, 21])
def test_miou_matches_torchmetrics(num_classes):
    generator = torch.Generator().manual_seed(num_classes)
    cm = ConfusionMatrix(num_classes, IGNORE)
    jaccard = MulticlassJaccardIndex(num_classes, ignore_index=IGNORE, average="macro")
    per_class = MulticlassJaccardIndex(num_classes, ignore_index=IGNORE, average="none")
    accuracy = MulticlassAccuracy(num_classes, ignore_index=IGNORE, average="macro")
    pixel = MulticlassAccuracy(num_classes, ignore_index=IGNORE, average="micro")
    for _ in range(4):
        pred, target = _random_pair(generator, num_classes, (3, 17, 23))
        cm.update(pred, target)
        for metric in (jaccard, per_class, accuracy, pixel):
            metric.update(pred, target)
    result = cm.compute()
    assert result["mIoU"] == pytest.approx(jaccard.compute().item(), abs=1e-6)
    assert result["IoU"] == pytest.approx(per_class.compute().tolist(), abs=1e-6)
    assert result["mAcc"] == pytest.approx(accuracy.compute().item(), abs=1e-6)
    assert result["aAcc"] == pytest.approx(pixel.compute().item(), abs=1e-6)


def test_absent_class_is_excluded_like_torchmetrics():
    # Class 3 appears in neither truth nor prediction: NaN, left out of the mean.
    target = torch.tensor([[0, 1, 2, 2], [0, 1, 1, IGNORE]])
    pred = torch.tensor([[0, 1, 2, 1], [1, 1, 1, 0]])
    cm = ConfusionMatrix(4, IGNORE)
    cm.update(pred, target)
    result = cm.compute()
    assert math.isnan(result["IoU"][3]) and math.isnan(result["Acc"][3])
    reference = MulticlassJaccardIndex(4, ignore_index=IGNORE, average="macro")(pred, target)
    assert result["mIoU"] == pytest.approx(reference.item())
    # By hand (the ignored pixel drops out): class 0: tp 1, truth 2, predicted 1 -> 1/2;
    # class 1: tp 3, truth 3, predicted 5 -> 3/5; class 2: tp 1, truth 2, predicted 1 -> 1/2.
    assert result["IoU"][0] == pytest.approx(1 / 2)
    assert result["IoU"][1] == pytest.approx(3 / 5)
    assert result["IoU"][2] == pytest.approx(1 / 2)


def test_class_absent_from_one_image_still_counts_over_the_data_set():
    # Class 2 only appears in the second image; the first image's pixels still count for it
    # (a false positive there lowers its IoU), unlike an average of per-image scores.
    first_t, first_p = torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 2, 1, 1]])
    second_t, second_p = torch.tensor([[2, 2, 1, 0]]), torch.tensor([[2, 2, 1, 0]])
    cm = ConfusionMatrix(3, IGNORE)
    cm.update(first_p, first_t)
    cm.update(second_p, second_t)
    result = cm.compute()
    assert result["IoU"] == pytest.approx([2 / 3, 1.0, 2 / 3])
    reference = MulticlassJaccardIndex(3, ignore_index=IGNORE, average="none")
    reference.update(first_p, first_t)
    reference.update(second_p, second_t)
    assert result["IoU"] == pytest.approx(reference.compute().tolist())


def test_perfect_prediction_and_all_ignored_image():
    target = torch.tensor([[0, 1], [2, 2]])
    cm = ConfusionMatrix(3, IGNORE)
    cm.update(target.clone(), target)
    cm.update(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), IGNORE))  # adds nothing
    result = cm.compute()
    assert result["mIoU"] == 1.0 and result["mAcc"] == 1.0 and result["aAcc"] == 1.0
    assert int(cm.mat.sum()) == 4


def test_dataset_level_differs_from_per_image_average():
    # A small image scored perfectly and a large one scored badly: the data-set-level IoU
    # weighs pixels, so it is not the mean of the two per-image IoUs.
    small_t = torch.tensor([[0, 1]])
    small_p = small_t.clone()
    large_t = torch.zeros(10, 10, dtype=torch.long)
    large_t[:, 5:] = 1
    large_p = torch.zeros(10, 10, dtype=torch.long)
    cm = ConfusionMatrix(2, IGNORE)
    cm.update(small_p, small_t)
    cm.update(large_p, large_t)
    dataset = cm.compute()["mIoU"]
    per_image = []
    for pred, target in ((small_p, small_t), (large_p, large_t)):
        single = ConfusionMatrix(2, IGNORE)
        single.update(pred, target)
        per_image.append(single.compute()["mIoU"])
    # class 0: tp 51, union 101; class 1: tp 1, union 51
    assert dataset == pytest.approx((51 / 101 + 1 / 51) / 2)
    assert dataset != pytest.approx(sum(per_image) / 2)
    reference = MulticlassJaccardIndex(2, ignore_index=IGNORE)
    reference.update(small_p.flatten()[None], small_t.flatten()[None])
    reference.update(large_p.flatten()[None], large_t.flatten()[None])
    assert dataset == pytest.approx(reference.compute().item())


def test_label_out_of_range_is_an_error():
    cm = ConfusionMatrix(3, IGNORE)
    with pytest.raises(ValueError, match=r"\[7\] are outside 0..2"):
        cm.update(torch.zeros(2, dtype=torch.long), torch.tensor([1, 7]))


def test_prediction_out_of_range_is_an_error_not_another_cell():
    # target 0 / prediction 3 in a 3-class matrix would count as target 1 / prediction 0
    cm = ConfusionMatrix(3, IGNORE)
    with pytest.raises(ValueError, match=r"predicted classes 0..3 are outside 0..2"):
        cm.update(torch.tensor([3, 0]), torch.tensor([0, 1]))
    assert int(cm.mat.sum()) == 0


# ---------------------------------------------------------------- Boundary IoU


def _reference_boundary(mask: np.ndarray, ratio: float = 0.02) -> np.ndarray:
    """The Boundary IoU reference code's mask_to_boundary, with OpenCV."""
    height, width = mask.shape
    dilation = max(1, int(round(ratio * np.sqrt(height**2 + width**2))))
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=dilation)[1:-1, 1:-1]
    return (mask.astype(np.uint8) - eroded).astype(bool)


def test_boundary_width_formula():
    assert boundary_width(100, 100) == round(0.02 * math.hypot(100, 100)) == 3
    assert boundary_width(10, 10) == 1  # never below one pixel
    assert boundary_width(1024, 2048) == 46


@pytest.mark.parametrize("seed", range(3))
def test_mask_boundary_matches_opencv_reference(seed):
    rng = np.random.default_rng(seed)
    mask = np.zeros((60, 90), dtype=bool)
    for _ in range(4):
        top, left = rng.integers(0, 50), rng.integers(0, 80)
        mask[top : top + rng.integers(3, 30), left : left + rng.integers(3, 30)] = True
    width = boundary_width(60, 90)
    ours = mask_boundary(torch.from_numpy(mask), width).numpy()
    np.testing.assert_array_equal(ours, _reference_boundary(mask))


def test_boundary_iou_on_hand_drawn_squares():
    # 50x50 image -> d = round(0.02 * 70.7) = 1: the band is the one-pixel outline.
    target = torch.zeros(50, 50, dtype=torch.long)
    target[10:30, 10:30] = 1  # 20x20 square: outline of 76 pixels
    pred = torch.zeros(50, 50, dtype=torch.long)
    pred[10:30, 11:31] = 1  # the same square shifted right by one pixel
    metric = BoundaryIoU(2, IGNORE)
    metric.update(pred, target)
    result = metric.compute()
    # Class 1: outlines of two 20x20 squares offset by one column. Shared: the top and
    # bottom rows over columns 11..29 (2 * 19 = 38 pixels); each outline has 76 pixels.
    assert result["BIoU"][1] == pytest.approx(38 / (76 + 76 - 38))
    # Class 0 (the background around the square): compare with the OpenCV reference bands.
    gt_band = _reference_boundary((target == 0).numpy())
    pred_band = _reference_boundary((pred == 0).numpy())
    expected = (gt_band & pred_band).sum() / (gt_band | pred_band).sum()
    assert result["BIoU"][0] == pytest.approx(expected)
    perfect = BoundaryIoU(2, IGNORE)
    perfect.update(target, target)
    assert perfect.compute()["mBIoU"] == 1.0


def test_boundary_iou_ignores_void_and_skips_absent_classes():
    target = torch.zeros(40, 40, dtype=torch.long)
    target[:, 20:] = IGNORE
    pred = torch.zeros(40, 40, dtype=torch.long)
    pred[:, 20:] = 1  # wrong only where the truth is ignored
    metric = BoundaryIoU(3, IGNORE)
    metric.update(pred, target)
    result = metric.compute()
    assert result["BIoU"][0] == 1.0
    assert math.isnan(result["BIoU"][2])  # absent from both
    assert math.isnan(result["BIoU"][1])  # predicted only on ignored pixels
    assert result["mBIoU"] == 1.0
