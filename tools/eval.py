"""Evaluate a checkpoint: data-set-level mIoU, Boundary IoU and accuracies, per class.

    python tools/eval.py work_dirs/RUN/best.pt
    python tools/eval.py work_dirs/RUN/best.pt --split test --tta flip --out results/
    python tools/eval.py CKPT --mode slide --set eval.crop_size=[512,512] data.root=/data/voc
    torchrun --nproc_per_node 2 tools/eval.py CKPT       # images sharded, each counted once

The checkpoint holds its config; --config replaces it for data and eval settings (the model
is always built as the checkpoint was trained) and --set changes single keys. Writes
OUT/metrics.json (fractions, null for a class absent from both truth and prediction),
OUT/metrics.md, OUT/confusion_matrix.png (each true class's row as fractions of its pixels)
and OUT/per_class.png (IoU and Boundary IoU bars per class), and prints the table. OUT
defaults to CKPT_DIR/eval_<split>_<checkpoint name> (eval_val_best, eval_test_last);
metrics.json names the checkpoint, the split and the prediction settings (mode, window,
TTA and its scales, resize), and an earlier evaluation of anything else there is replaced
only with --force (the same evaluation again just writes its files anew).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from seg.config import ConfigError
from seg.data import build_dataset, build_val_transform
from seg.engine import evaluate, format_table, load_for_inference
from seg.engine.checkpoint import write_text_atomic
from seg.engine.cli import EXPECTED_ERRORS, fail
from seg.engine.distributed import cleanup, init_distributed, on_main_process
from seg.engine.evaluator import json_ready
from seg.engine.runtime import autocast_dtype
from seg.engine.visualize import draw_confusion_matrix, draw_per_class


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Evaluate a segmentation checkpoint.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("checkpoint", help="a last.pt / best.pt written by tools/train.py")
    parser.add_argument("--config", help="use this YAML config instead of the checkpoint's")
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--split", help="data split (default: eval.split, usually val)")
    parser.add_argument("--mode", choices=("whole", "slide"), help="default: eval.mode")
    parser.add_argument("--tta", choices=("none", "flip", "ms"), help="default: eval.tta")
    parser.add_argument(
        "--out", help="output folder (default: CKPT_DIR/eval_<split>_<checkpoint name>)"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an earlier evaluation's metrics in --out"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    args = parser.parse_args(argv)
    overrides = list(args.set)
    for key, value in (("split", args.split), ("mode", args.mode), ("tta", args.tta)):
        if value is not None:
            overrides.append(f"eval.{key}={value}")
    dist_info = None
    try:
        dist_info = init_distributed(args.device)
        model, cfg, meta = load_for_inference(
            args.checkpoint, tuple(overrides), dist_info.device, config=args.config
        )
        checkpoint = Path(args.checkpoint)
        out = Path(args.out or checkpoint.parent / f"eval_{cfg.eval.split}_{checkpoint.stem}")
        what = {
            "checkpoint": str(args.checkpoint),
            "split": cfg.eval.split,
            "settings": prediction_settings(cfg),
        }

        def check_out() -> None:  # before the work, not after it
            if not args.force:
                check_not_done(out, what)
            check_writable(out)

        on_main_process(check_out, dist_info, errors=(ConfigError, OSError))
        transform = build_val_transform(meta["mean"], meta["std"])
        dataset = build_dataset(cfg.data, cfg.eval.split, transform=transform)
        check_agreement(model, meta, dataset, cfg)
        result = evaluate(
            model,
            dataset,
            model.num_classes,  # the checkpoint's (--set model.num_classes changes no model)
            meta["classes"],
            cfg.eval,
            dist_info,
            ignore_index=dataset.ignore_index,
            resize=cfg.data.get("resize"),
            amp_dtype=autocast_dtype(cfg.train, dist_info.device),
            progress=True,
        )
    except EXPECTED_ERRORS as error:
        return fail(error)
    finally:
        cleanup()
    if not dist_info.is_main:
        return 0
    table = format_table(result.metrics)
    print(table)
    try:
        out.mkdir(parents=True, exist_ok=True)
        metrics = {**what, **result.metrics}
        write_text_atomic(out / "metrics.json", json.dumps(json_ready(metrics), indent=2))
        write_text_atomic(out / "metrics.md", table + "\n")
        draw_pictures(out, result.metrics, f"{Path(args.checkpoint).name}, {cfg.eval.split}")
    except (OSError, ValueError) as error:
        return fail(error)
    print(f"\nwrote {', '.join(str(out / name) for name in (*WRITTEN, *PICTURES))}")
    return 0


WRITTEN = ("metrics.json", "metrics.md")
PICTURES = ("confusion_matrix.png", "per_class.png")


def draw_pictures(out: Path, metrics: dict, what: str) -> None:
    """``confusion_matrix.png`` (row-normalised) and ``per_class.png`` (IoU, BIoU) in ``out``."""
    classes = metrics["classes"]
    draw_confusion_matrix(
        out / PICTURES[0], metrics["confusion_matrix"], classes, f"confusion matrix: {what}"
    )
    title = f"per-class IoU and Boundary IoU: {what}"
    draw_per_class(out / PICTURES[1], classes, metrics["IoU"], metrics["BIoU"], title)


def prediction_settings(cfg) -> dict:
    """How the scored predictions were made: what a reader needs to compare two files."""
    keys = ("mode", "crop_size", "stride", "tta", "scales")
    settings = {key: getattr(cfg.eval, key) for key in keys}
    if cfg.eval.mode != "slide":
        del settings["crop_size"], settings["stride"]
    if cfg.eval.tta != "ms":
        del settings["scales"]
    return {**settings, "resize": cfg.data.get("resize")}


def check_not_done(folder: Path, what: dict) -> None:
    """ConfigError where ``folder`` holds the metrics of an evaluation of something other
    than ``what`` (checkpoint, split, settings): they are not replaced unasked."""
    path = folder / WRITTEN[0]
    if not path.is_file():
        return
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        earlier = {}
    earlier = earlier if isinstance(earlier, dict) else {}
    # An older eval.py recorded no settings: its checkpoint and split still count.
    differs = [
        f"{key} {earlier.get(key)} there, {value} now"
        for key, value in what.items()
        if (key in earlier or key != "settings") and not _same(key, earlier.get(key), value)
    ]
    if differs:
        raise ConfigError(
            f"{path} holds an earlier evaluation ({'; '.join(differs)}): pass --force to "
            "replace it, or --out another folder"
        )


def _same(key: str, earlier, now) -> bool:
    if key == "checkpoint" and isinstance(earlier, str):  # ./R/best.pt is R/best.pt
        return Path(earlier).resolve() == Path(now).resolve()
    return earlier == now


def check_writable(folder: Path) -> None:
    """Create ``folder`` and prove a file can be written there (OSError naming it if not)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise OSError(
            f"cannot write the results to {folder} ({error.strerror or error}): "
            "choose another --out"
        ) from error


def check_agreement(model, meta: dict, dataset, cfg) -> None:
    """The checkpoint's model, its class names and the data set agree on what they score."""
    outputs = model.num_classes
    if not (dataset.num_classes == len(meta["classes"]) == outputs):
        raise ConfigError(
            f"the checkpoint's model predicts {outputs} classes ({len(meta['classes'])} "
            f"names), but the '{cfg.data.get('name')}' data set has {dataset.num_classes}: "
            "evaluate it on the data set it was trained for (--config with that data)"
        )
    if dataset.ignore_index != meta["ignore_index"]:
        raise ConfigError(
            f"the data set ignores label {dataset.ignore_index}, the checkpoint's "
            f"{meta['ignore_index']}: use the same data.ignore_index"
        )


if __name__ == "__main__":
    raise SystemExit(main())
