"""The whole workflow in minutes on a CPU: compare, evaluate, predict (``make demo``).

    python tools/demo.py                       # outputs under outputs/demo
    python tools/demo.py --iters 100 --out /tmp/demo

Trains SegNet with LiftDownPool / LiftUpPool, with max pooling / MaxUnpool and with max
pooling / bilinear upsampling on the built-in synthetic scenes (seed 0 of the synthetic
study, studies/synthetic.yaml: the same protocol, one seed) and prints the comparison; then
evaluates the lift/lift model on the test split, writes a few test scenes as image files and
predicts them. Each step runs the real command line, which it prints first, so the demo
doubles as a copy-paste tutorial. Run it again and it reuses what finished.

Writes OUT/compare (results.md/json/png, predictions.png, and runs/VARIANT/seed0 with each
model's checkpoints, train.log and TensorBoard events), OUT/eval (metrics.json, metrics.md),
OUT/images, OUT/predictions (palette PNGs and overlays) and OUT/demo_predictions.png
(image | truth | prediction | overlay for each scene).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from seg.data import build_dataset
from seg.engine.checkpoint import load_for_inference
from seg.engine.visualize import comparison_row, one_above_another, side_by_side

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "synthetic.yaml"
VARIANTS = ["lift/lift", "max/maxunpool", "max/bilinear"]


def run(*args: object) -> None:
    """Run a tool from the repository root, as printed: as a user would type it (paths
    inside the repository relative to it, so the tables' recorded command is too)."""
    shown = [
        str(a.relative_to(ROOT)) if isinstance(a, Path) and a.is_relative_to(ROOT) else str(a)
        for a in args
    ]
    print(f"\n$ python {shlex.join(shown)}", flush=True)
    code = subprocess.run([sys.executable, *shown], cwd=ROOT).returncode
    if code != 0:
        raise StepFailed(f"`python {shlex.join(shown)}` exited {code} (its output is above)", code)


class StepFailed(RuntimeError):
    """A step of the demo failed; it printed why."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Compare LiftPool with MaxUnpool and bilinear on synthetic scenes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--out", default="outputs/demo", help="output folder")
    parser.add_argument("--iters", type=int, help="training iterations (default: the study's)")
    parser.add_argument("--images", type=int, default=4, help="test scenes to predict")
    parser.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="more config overrides",
    )
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    overrides = [*([f"train.iters={args.iters}"] if args.iters else []), *args.set]
    run(
        "tools/compare.py", "--study", STUDY, "--only", *VARIANTS, "--seeds", "0",
        "--out", out / "compare", *(["--set", *overrides] if overrides else []),
    )  # fmt: skip
    checkpoint = out / "compare" / "runs" / "lift-lift" / "seed0" / "last.pt"
    run("tools/eval.py", checkpoint, "--split", "test", "--out", out / "eval")

    # A few test scenes as ordinary image files, predicted like any user's pictures.
    cfg = load_for_inference(checkpoint)[1]
    test_set = build_dataset(cfg.data, "test")
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    scenes = []
    for index in range(min(args.images, len(test_set))):
        image, truth, name = test_set.load_raw(index)
        Image.fromarray(image).save(image_dir / f"{name}.png")
        scenes.append((name, image, truth))
    run("tools/infer.py", checkpoint, image_dir, "--out", out / "predictions", "--overlay")

    rows = []
    for name, image, truth in scenes:
        prediction = np.asarray(Image.open(out / "predictions" / f"{name}.png"))
        blend = np.asarray(Image.open(out / "predictions" / "overlays" / f"{name}.jpg"))
        row = comparison_row(image, truth, [prediction], test_set.palette, test_set.ignore_index)
        rows.append(side_by_side([row, blend]))
    Image.fromarray(one_above_another(rows)).save(out / "demo_predictions.png")

    print("\nComparison (validation split, seed 0):")
    print((out / "compare" / "results.md").read_text())
    print("Test-split metrics of lift/lift,", checkpoint)
    print((out / "eval" / "metrics.md").read_text())
    print(f"comparison:       {out / 'compare'}/results.{{md,json,png}}, predictions.png")
    print(f"checkpoints:      {out / 'compare' / 'runs'}/VARIANT/seed0/{{last,best}}.pt")
    print(f"TensorBoard:      tensorboard --logdir {out / 'compare' / 'runs'}")
    print(f"metrics:          {out / 'eval' / 'metrics.json'}")
    print(f"predictions:      {out / 'predictions'} (palette PNGs, overlays/)")
    print(
        f"picture:          {out / 'demo_predictions.png'} (image | truth | prediction | overlay)"
    )
    return 0


def _main() -> int:
    try:
        return main()
    except StepFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code


if __name__ == "__main__":
    raise SystemExit(_main())
