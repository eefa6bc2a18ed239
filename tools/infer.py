"""Predict label maps for images with a checkpoint or an exported model; nothing else is needed.

    python tools/infer.py work_dirs/RUN/best.pt photo.jpg --out preds/
    python tools/infer.py work_dirs/RUN/best.pt images/ --out preds/ --overlay
    python tools/infer.py work_dirs/RUN/best.pt "shots/*.png" --tta flip --mode slide
    python tools/infer.py model.onnx images/ --out preds/ --overlay     # tools/export.py's

For each image it writes OUT/NAME.png, a palette PNG whose pixel values are class indices at
the image's own size (colours: the data set's palette), and with --overlay
OUT/overlays/NAME.jpg, the image blended with the colourised prediction. NAME is the image's
path relative to the input folder (or to the common folder of a glob's matches), so images
of the same name in different folders stay apart; x.jpg beside x.png become x_jpg / x_png.
An output folder that would write over an input image (or is the input folder) is refused,
and so are inputs whose names would give two of them one output.
Images are read as a viewer shows them (EXIF orientation applied, 16-bit and float images
scaled, not clipped). An unreadable image is reported by name and skipped; the exit code is
1 if any image failed, 2 for a usage error.

MODEL.onnx / MODEL.pt2 (written by tools/export.py) predict like the checkpoint they came
from: class names, palette, normalisation and eval settings come from the file's metadata.
ONNX files run in ONNX Runtime (its CUDA provider when it has one and --device is not cpu,
else the CPU); .pt2 programs on --device (default cpu). Images smaller than the minimum size
the file was verified for are reported and skipped.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seg.config import ConfigError, config_from_dict
from seg.data import build_val_transform
from seg.data.base import IMAGE_EXTENSIONS, read_image
from seg.engine import load_for_inference, predict
from seg.engine.cli import EXPECTED_ERRORS, fail
from seg.engine.export import ExportedModel, SizeError
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


def input_folder(paths: list[Path], spec: str) -> Path:
    """The folder given, or the folder the inputs share (a single image's own folder)."""
    if Path(spec).is_dir():
        return Path(spec)
    return Path(os.path.commonpath([p.parent for p in paths]))


def plan_outputs(paths: list[Path], spec: str, out: Path) -> dict[Path, Path]:
    """Each input's output stem under ``out``: its path relative to the input folder (or to
    the inputs' common folder), so ``a/x.png`` and ``b/x.png`` stay apart; inputs that still
    share a stem (``x.jpg``, ``x.png``) keep their extension in the name (``x_jpg``)."""
    base = input_folder(paths, spec)
    stems = [p.relative_to(base).with_suffix("") for p in paths]
    counts = Counter(stems)
    return {
        path: out
        / (stem if counts[stem] == 1 else stem.with_name(f"{stem.name}_{path.suffix[1:]}"))
        for path, stem in zip(paths, stems)
    }


def label_path(stem: Path) -> Path:
    return stem.parent / f"{stem.name}.png"  # not with_suffix: "img.v2" keeps its ".v2"


def overlay_path(stem: Path, out: Path) -> Path:
    return out / "overlays" / stem.relative_to(out).parent / f"{stem.name}.jpg"


def check_outputs(plan: dict[Path, Path], spec: str, out: Path, overlays: bool) -> None:
    """Refuse an output folder that would write over an input or mix results with them,
    and inputs whose names would give two of them one output."""
    inputs = {p.resolve() for p in plan}
    if out.resolve() == input_folder(list(plan), spec).resolve():
        raise ConfigError(
            f"--out {out} is the input folder: label PNGs would mix with (or replace) the "
            "images there; choose another --out"
        )
    first: dict[Path, Path] = {}
    for path, stem in plan.items():
        other = first.setdefault(label_path(stem), path)
        if other != path:
            raise ConfigError(
                f"{other} and {path} would both be written to {label_path(stem)}; rename "
                "one of them or predict them with separate commands"
            )
    for stem in plan.values():
        targets = [label_path(stem)]
        if overlays:
            targets.append(overlay_path(stem, out))
        clash = [t for t in targets if t.resolve() in inputs]
        if clash:
            raise ConfigError(
                f"writing {clash[0]} would overwrite an input image; choose another --out"
            )


EXPORTED = (".onnx", ".pt2")


def pick_device(path: str, name: str | None) -> torch.device:
    """--device, else cuda when available (a .pt2 program: the CPU it was exported on)."""
    if name is not None:
        return torch.device(name)
    if Path(path).suffix.lower() == ".pt2" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def load_model(path: str, overrides: tuple[str, ...], device: torch.device):
    """``(model, cfg, meta)`` of a checkpoint or of a file tools/export.py wrote (an
    `ExportedModel`, whose metadata holds what the checkpoint's config and meta would)."""
    if Path(path).suffix.lower() in EXPORTED:
        model = ExportedModel(path, device)
        cfg = config_from_dict(model.meta["config"], overrides)
        print(f"{model.path.name}: {model.format}, running on {', '.join(model.providers)}")
        return model, cfg, model.meta
    return load_for_inference(path, overrides, device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Predict label maps with a segmentation checkpoint or exported model.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("checkpoint", help="a checkpoint, or a MODEL.onnx / MODEL.pt2")
    parser.add_argument("input", help="an image, a folder of images, or a glob (quote it)")
    parser.add_argument("--out", default="predictions", help="output folder (default: predictions)")
    parser.add_argument("--overlay", action="store_true", help="also write colour overlays")
    parser.add_argument("--mode", choices=("whole", "slide"), help="default: the config's")
    parser.add_argument("--tta", choices=("none", "flip", "ms"), help="default: the config's")
    parser.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    args = parser.parse_args(argv)
    overrides = list(args.set)
    for key, value in (("mode", args.mode), ("tta", args.tta)):
        if value is not None:
            overrides.append(f"eval.{key}={value}")
    out = Path(args.out)
    try:
        paths = find_images(args.input)
        if not paths:
            raise FileNotFoundError(f"no images found at {args.input!r}")
        plan = plan_outputs(paths, args.input, out)
        check_outputs(plan, args.input, out, args.overlay)
        device = pick_device(args.checkpoint, args.device)
        model, cfg, meta = load_model(args.checkpoint, tuple(overrides), device)
    except EXPECTED_ERRORS as error:
        return fail(error)
    transform = build_val_transform(meta["mean"], meta["std"])
    palette = np.asarray(meta["palette"], dtype=np.uint8)
    failed: list[str] = []
    written: set[Path] = set()

    def run(batch: list[tuple[Path, np.ndarray]]) -> None:
        images = torch.stack([transform(image=image)["image"] for _, image in batch])
        try:
            probs = predict(
                model,
                images.to(device),
                mode=cfg.eval.mode,
                crop_size=cfg.eval.crop_size,
                stride=cfg.eval.stride,
                tta=cfg.eval.tta,
                scales=cfg.eval.scales,
                resize=cfg.data.get("resize"),
            )
        except SizeError as error:  # an exported model's minimum size (batches share a size)
            for path, _ in batch:
                print(f"skipped {path}: {' '.join(str(error).split())}", file=sys.stderr)
                failed.append(str(path))
            return
        labels = probs.argmax(dim=1).cpu().numpy()
        for (path, image), label in zip(batch, labels):
            target = label_path(plan[path])
            save_label_png(target, label, palette)
            written.add(target)
            if args.overlay:
                blend_path = overlay_path(plan[path], out)
                blend_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(overlay(image, label, palette)).save(blend_path, quality=92)

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
    print(
        f"wrote {len(written)} label PNG(s) to {out}" + (" (+ overlays/)" if args.overlay else "")
    )
    if failed:
        print(
            f"{len(failed)} image(s) could not be predicted: {', '.join(failed)}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
