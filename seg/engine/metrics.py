"""Data-set-level segmentation metrics: a confusion matrix and Boundary IoU.

Both accumulate integer counts over every image of a data set (and over processes with
`all_reduce`) and divide only at the end, so an image's weight is its pixel count, as in
the torchvision references and mmsegmentation, never a per-image or per-batch average.

A class absent from both the ground truth and the predictions of the whole data set has
no IoU (NaN, ``None`` in JSON) and is left out of the means.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from seg.engine.distributed import all_reduce_sum


class ConfusionMatrix:
    """``num_classes`` x ``num_classes`` pixel counts: rows are ground truth, columns predictions."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device=None) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add ``pred`` and ``target``: integer label maps of the same shape (any batch shape).

        Target pixels equal to ``ignore_index`` are skipped; other targets, and the
        predictions, must be class ids (ValueError otherwise).
        """
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} != target {tuple(target.shape)}"
            )
        target = target.to(self.mat.device).reshape(-1).long()
        pred = pred.to(self.mat.device).reshape(-1).long()
        keep = target != self.ignore_index
        target, pred = target[keep], pred[keep]
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= self.num_classes):
            bad = torch.unique(target[(target < 0) | (target >= self.num_classes)])[:10].tolist()
            raise ValueError(
                f"target labels {bad} are outside 0..{self.num_classes - 1} "
                f"(and are not the ignore index {self.ignore_index})"
            )
        if pred.numel() and (int(pred.min()) < 0 or int(pred.max()) >= self.num_classes):
            raise ValueError(
                f"predicted classes {pred.min().item()}..{pred.max().item()} are outside "
                f"0..{self.num_classes - 1}: the model and the metric disagree on the classes"
            )
        index = target * self.num_classes + pred
        self.mat += torch.bincount(index, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def all_reduce(self) -> None:
        all_reduce_sum(self.mat)

    def compute(self) -> dict[str, object]:
        """``{"mIoU", "mAcc", "aAcc", "IoU": [...], "Acc": [...]}``; fractions, NaN = excluded."""
        mat = self.mat.double().cpu()
        true_pos = mat.diag()
        gt_count = mat.sum(1)
        pred_count = mat.sum(0)
        union = gt_count + pred_count - true_pos
        iou = torch.where(union > 0, true_pos / union.clamp(min=1), torch.nan)
        acc = torch.where(gt_count > 0, true_pos / gt_count.clamp(min=1), torch.nan)
        total = mat.sum()
        return {
            "mIoU": _nanmean(iou),
            "mAcc": _nanmean(acc),
            "aAcc": float(true_pos.sum() / total) if total > 0 else math.nan,
            "IoU": iou.tolist(),
            "Acc": acc.tolist(),
        }


def boundary_width(height: int, width: int, ratio: float = 0.02) -> int:
    """Boundary IoU's band width: ``max(1, round(ratio * image diagonal))`` pixels."""
    return max(1, int(round(ratio * math.hypot(height, width))))


def mask_boundary(masks: torch.Tensor, width: int) -> torch.Tensor:
    """The inner boundary band of binary masks: pixels of a mask within ``width`` of its edge.

    ``masks``: bool ``[..., H, W]``. A pixel is in the band when it is in the mask and the
    mask eroded by a ``(2 width + 1)`` square (``width`` 3x3 erosions) does not hold it;
    outside the image counts as background, as in the Boundary IoU reference code. The
    erosion is a box count of background pixels (integral image), so its cost does not
    grow with ``width``.
    """
    shape = masks.shape
    flat = masks.reshape(-1, *shape[-2:])
    # One ring of background around the image (the reference pads with zeros); beyond the
    # ring nothing erodes.
    background = F.pad((~flat).to(torch.int32), (1, 1, 1, 1), value=1)
    eroded = _box_sum(background, width)[..., 1:-1, 1:-1] == 0
    return (flat & ~eroded).reshape(shape)


def _box_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Sum of ``x`` [B, H, W] over the ``(2 radius + 1)``-square around each pixel, the
    window clipped to the image: an integral image of ``x`` zero-padded by ``radius``
    (plus a leading zero row and column), then four shifted views."""
    k = 2 * radius + 1
    padded = F.pad(x, (radius + 1, radius, radius + 1, radius))
    integral = padded.cumsum(-1, dtype=torch.int32).cumsum(-2, dtype=torch.int32)
    return (
        integral[..., k:, k:]
        - integral[..., :-k, k:]
        - integral[..., k:, :-k]
        + integral[..., :-k, :-k]
    )


class BoundaryIoU:
    """Boundary IoU per class (Cheng et al., 2021), summed over a data set.

    For each class c and image: G = ground-truth mask of c, P = predicted mask of c,
    G_d and P_d their inner boundary bands of width d (`boundary_width`); intersection
    ``|G_d & P_d|`` and union ``|G_d | P_d|`` are added up over images (ignored pixels
    removed from both), and IoU is taken at the end.
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, ratio: float = 0.02, device=None
    ) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.ratio = ratio
        self.counts = torch.zeros(2, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """``pred``, ``target``: ``[H, W]`` or ``[N, H, W]`` label maps (one image size)."""
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} != target {tuple(target.shape)}"
            )
        pred = pred.to(self.counts.device)
        target = target.to(self.counts.device)
        if target.dim() == 2:
            pred, target = pred[None], target[None]
        width = boundary_width(target.shape[-2], target.shape[-1], self.ratio)
        valid = (target != self.ignore_index)[:, None]
        classes = torch.arange(self.num_classes, device=target.device)[None, :, None, None]
        gt_band = mask_boundary(target[:, None] == classes, width) & valid
        pred_band = mask_boundary(pred[:, None] == classes, width) & valid
        self.counts[0] += (gt_band & pred_band).sum(dim=(0, 2, 3))
        self.counts[1] += (gt_band | pred_band).sum(dim=(0, 2, 3))

    def all_reduce(self) -> None:
        all_reduce_sum(self.counts)

    def compute(self) -> dict[str, object]:
        """``{"mBIoU", "BIoU": [...]}``; a class with an empty union is NaN and excluded."""
        inter, union = self.counts.double().cpu()
        biou = torch.where(union > 0, inter / union.clamp(min=1), torch.nan)
        return {"mBIoU": _nanmean(biou), "BIoU": biou.tolist()}


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~values.isnan()]
    return float(kept.mean()) if kept.numel() else math.nan
