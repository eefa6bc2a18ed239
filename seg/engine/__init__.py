"""Training, evaluation and inference on top of `seg.models` and `seg.data`.

``ops <- models <- engine <- tools``; ``data <- engine``. Each module has one concern:
`distributed` (process groups), `metrics` (confusion matrix, Boundary IoU), `checkpoint`
(atomic save, safe load), `inference` (whole / sliding window / TTA), `evaluator` (a model
over a data set into metrics), `visualize` (palette PNGs, overlays), `runtime` (device name, autocast, peak memory),
`trainer` (the loop; imported on first use, so evaluation and inference never load it).
"""

from seg.engine.checkpoint import (
    find_latest,
    load_checkpoint,
    load_for_inference,
    save_checkpoint,
)
from seg.engine.evaluator import EvalResult, evaluate, format_table
from seg.engine.inference import predict, slide_logits
from seg.engine.metrics import BoundaryIoU, ConfusionMatrix, mask_boundary

__all__ = [
    "BoundaryIoU",
    "ConfusionMatrix",
    "EvalResult",
    "TrainingDiverged",
    "evaluate",
    "find_latest",
    "format_table",
    "load_checkpoint",
    "load_for_inference",
    "mask_boundary",
    "predict",
    "save_checkpoint",
    "slide_logits",
    "train",
]


def __getattr__(name: str):
    # The trainer (and what it imports) loads only when something asks for it.
    if name in ("TrainingDiverged", "train"):
        from seg.engine import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'seg.engine' has no attribute {name!r}")
