"""Export a checkpoint's model to ONNX or a torch.export program, verified before it is kept.

    python tools/export.py work_dirs/RUN/best.pt --out model.onnx
    python tools/export.py work_dirs/RUN/best.pt --format pt2 --out model.pt2 --size 512 512
    python tools/export.py CKPT --out model.onnx --opset 20 --force

The model is traced on the CPU through the PyTorch reference operators (no custom op in the
file: a checkpoint trained on a GPU exports the same), with batch, height and width dynamic.
ONNX goes through torch.onnx.export(dynamo=True); pt2 is the torch.export program itself.
--size is the example traced (default: the training crop; at least twice the network's
stride); the file works at any size from the minimum it prints. Before the file is kept it is
run (ONNX Runtime on the CPU / the loaded program) against the PyTorch model at three sizes;
a difference above 1e-4 of the largest |logit| at any of them is an error and leaves nothing
at --out. Class names, palette, mean/std, ignore index and the checkpoint's config travel in
the file (ONNX metadata_props["liftseg"] as JSON; FILE.pt2.json beside a pt2 file). Predict
with it: python tools/infer.py model.onnx images/ --out preds/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from seg.config import ConfigError
from seg.engine import load_for_inference
from seg.engine.cli import EXPECTED_ERRORS, fail
from seg.engine.export import (
    FORMATS,
    MIN_OPSET,
    SUFFIXES,
    ExportError,
    export_metadata,
    export_model,
    network_stride,
    sidecar,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Export a segmentation checkpoint to ONNX or a torch.export program.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("checkpoint", help="a last.pt / best.pt written by tools/train.py")
    parser.add_argument("--format", choices=FORMATS, help="default: from --out's suffix")
    parser.add_argument("--out", required=True, help="the file to write (.onnx or .pt2)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="example size")
    parser.add_argument("--opset", type=int, help=f"ONNX opset (>= {MIN_OPSET}; default torch's)")
    parser.add_argument("--config", help="the config of a bare state_dict checkpoint")
    parser.add_argument(
        "--force", action="store_true", help="replace an existing --out (and its .pt2.json)"
    )
    return parser.parse_args(argv)


def check_arguments(args: argparse.Namespace) -> str:
    """The export format; ConfigError for arguments that contradict each other."""
    out = Path(args.out)
    if out.resolve() == Path(args.checkpoint).resolve():
        raise ConfigError(f"--out {out} is the checkpoint itself; choose another file")
    by_suffix = {suffix: fmt for fmt, suffix in SUFFIXES.items()}.get(out.suffix.lower())
    fmt = args.format or by_suffix
    if fmt is None:
        raise ConfigError(
            f"--out {out}: name the file .onnx or .pt2 (tools/infer.py tells the formats apart "
            "by the suffix), or give --format"
        )
    if by_suffix != fmt:
        raise ConfigError(
            f"--format {fmt} but --out {out} does not end in {SUFFIXES[fmt]}: tools/infer.py "
            f"would not recognise it; name it {out.with_suffix(SUFFIXES[fmt]).name}"
        )
    if args.opset is not None and (fmt != "onnx" or args.opset < MIN_OPSET):
        raise ConfigError(
            f"--opset {args.opset}: only for --format onnx, and {MIN_OPSET} or later (the "
            "opsets torch.onnx's exporter writes)"
        )
    if args.size is not None and min(args.size) < 1:
        raise ConfigError(f"--size needs two positive numbers, got {args.size}")
    written = [out, sidecar(out)] if fmt == "pt2" else [out]
    taken = [path for path in written if path.exists()]
    if taken and not args.force:
        names = " and ".join(str(path) for path in taken)
        raise ConfigError(
            f"--out {out}: {names} exist{'s' if len(taken) == 1 else ''}; pass --force to "
            "replace it, or choose another"
        )
    return fmt


def example_size(args: argparse.Namespace, cfg, stride: int) -> tuple[int, int]:
    """--size, else the training crop (or eval crop), else 4 strides; at least 2 strides."""
    size = args.size
    if size is None:
        crop = cfg.data.get("crop_size") or cfg.eval.crop_size or 4 * stride
        size = [crop, crop] if isinstance(crop, int) else list(crop)
    height, width = (int(v) for v in size)
    if min(height, width) < 2 * stride:
        raise ConfigError(
            f"--size {height} {width}: the example must be at least twice the network's "
            f"stride ({stride}) each way, e.g. --size {max(height, 2 * stride)} "
            f"{max(width, 2 * stride)} (the file works at smaller sizes too)"
        )
    return height, width


def describe(model_cfg: dict) -> str:
    keys = ("down", "up", "encoder", "predictor")
    options = ", ".join(f"{k}={model_cfg[k]}" for k in keys if k in model_cfg)
    return f"{model_cfg.get('name', 'model')} ({options})" if options else model_cfg.get("name")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        fmt = check_arguments(args)
        model, cfg, meta = load_for_inference(args.checkpoint, device="cpu", config=args.config)
        stride = network_stride(model)
        size = example_size(args, cfg, stride)
        config = cfg.to_dict()
        metadata = export_metadata(meta, config, Path(args.checkpoint).name)
        print(
            f"exporting {describe(cfg.model)} from {args.checkpoint} as {fmt}, example "
            f"2x{cfg.model.get('in_channels', 3)}x{size[0]}x{size[1]}, reference ops, CPU"
        )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        report = export_model(
            model, fmt, args.out, metadata, size, args.opset, cfg.model.get("in_channels", 3)
        )
    except EXPECTED_ERRORS as error:
        return fail(error)
    opset = f", opset {report.opset}" if report.opset else ""
    print(
        f"traced in {report.seconds:.1f} s{opset}: any batch, height >= {report.minimum[0]}, "
        f"width >= {report.minimum[1]} (stride {report.stride}; {report.guards} guards hold "
        "at every size from there)"
    )
    tolerance = report.checks[0].tolerance
    print(f"verified against the PyTorch model (tolerance {tolerance:g} of the largest |logit|):")
    for check in report.checks:
        print(check.line())
    if not report.ok:
        bad = ", ".join("x".join(map(str, c.shape)) for c in report.checks if not c.ok)
        return fail(
            ExportError(
                f"the exported file differs from the PyTorch model beyond {tolerance:g} of the "
                f"logits' scale at {bad}; nothing was written to {args.out}. This is a bug in "
                "the model's export path: report it with the lines above"
            )
        )
    size_mb = Path(args.out).stat().st_size / 2**20
    extra = f" (+ {Path(args.out).name}.json)" if fmt == "pt2" else ""
    print(f"wrote {args.out}{extra}, {size_mb:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
