"""Predict label maps for images with a checkpoint; nothing else is needed.

    python tools/infer.py work_dirs/RUN/best.pt photo.jpg --out preds/
    python tools/infer.py work_dirs/RUN/best.pt images/ --out preds/ --overlay
    python tools/infer.py work_dirs/RUN/best.pt "shots/*.png" --tta flip --mode slide

For each image NAME.ext it writes OUT/NAME.png, a palette PNG whose pixel values are class
indices at the image's own size (colours: the data set's palette), and with --overlay
OUT/overlays/NAME.jpg, the image blended with the colourised prediction. An unreadable
image is reported by name and skipped; the exit code is 1 if any image failed.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seg.config import ConfigError
from seg.data import build_val_transform
from seg.data.base import IMAGE_EXTENSIONS, read_image
from seg.engine import load_for_inference, predict
from seg.engine.visualize import overlay, save_label_png


def find_images(spec: str) -> list[Path]:
    """An image file, every image in a folder (sorted), or the images a glob matches."""
    path = Path(spec)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if path.is_file():
        return [path]
    matches = sorted(Path(p) for p in glob.glob(spec, recursive=True))
    return [p for p in matches if p.is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Predict label maps with a segmentation checkpoint.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("checkpoint")
    parser.add_argument("input", help="an image, a folder of images, or a glob (quote it)")
    parser.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    parser.add_argument("--overlay", action="store_true", help="also write colour overlays")
    parser.add_argument("--mode", choices=("whole", "slide"), help="default: the config's")
    parser.add_argument("--tta", choices=("none", "flip", "ms"), help="default: the config's")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    overrides = list(args.set)
    for key, value in (("mode", args.mode), ("tta", args.tta)):
        if value is not None:
            overrides.append(f"eval.{key}={value}")
    try:
        model, cfg, meta = load_for_inference(args.checkpoint, tuple(overrides), device)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    paths = find_images(args.input)
    if not paths:
        print(f"error: no images found at {args.input!r}", file=sys.stderr)
        return 1
    transform = build_val_transform(meta["mean"], meta["std"])
    palette = np.asarray(meta["palette"], dtype=np.uint8)
    out = Path(args.out)
    failed: list[str] = []
    written = 0

    def run(batch: list[tuple[Path, np.ndarray]]) -> None:
        nonlocal written
        images = torch.stack([transform(image=image)["image"] for _, image in batch]).to(device)
        probs = predict(
            model,
            images,
            mode=cfg.eval.mode,
            crop_size=cfg.eval.crop_size,
            stride=cfg.eval.stride,
            tta=cfg.eval.tta,
            scales=cfg.eval.scales,
            resize=cfg.data.get("resize"),
        )
        labels = probs.argmax(dim=1).cpu().numpy()
        for (path, image), label in zip(batch, labels):
            save_label_png(out / f"{path.stem}.png", label, palette)
            if args.overlay:
                (out / "overlays").mkdir(parents=True, exist_ok=True)
                blend = overlay(image, label, palette)
                Image.fromarray(blend).save(out / "overlays" / f"{path.stem}.jpg", quality=92)
            written += 1

    batch: list[tuple[Path, np.ndarray]] = []
    for path in paths:
        try:
            image = read_image(path)
        except ValueError as error:
            print(f"skipped {path}: {error}", file=sys.stderr)
            failed.append(str(path))
            continue
        if batch and (len(batch) == args.batch_size or batch[0][1].shape != image.shape):
            run(batch)
            batch = []
        batch.append((path, image))
    if batch:
        run(batch)
    print(f"wrote {written} label PNG(s) to {out}" + (" (+ overlays/)" if args.overlay else ""))
    if failed:
        print(f"{len(failed)} image(s) could not be read: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
