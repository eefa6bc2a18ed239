"""Convert SBD (benchmark.tgz) into VOC 2012's SegmentationClassAug and trainaug.txt.

    python tools/convert_sbd.py data/benchmark_RELEASE data/VOCdevkit/VOC2012

SBD_ROOT is the unpacked ``benchmark_RELEASE`` (or its ``dataset`` folder); VOC_ROOT is
``VOCdevkit/VOC2012`` or a folder above it. Afterwards use ``split="trainaug"`` (10,582
images). See data/README.md.
"""

from __future__ import annotations

import argparse

from seg.data.sbd import convert_sbd
from seg.engine.cli import EXPECTED_ERRORS, fail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sbd_root", help="unpacked benchmark_RELEASE (or its dataset/ folder)")
    parser.add_argument("voc_root", help="VOCdevkit/VOC2012, or a folder containing VOCdevkit")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the masks of an existing SegmentationClassAug and its trainaug.txt",
    )
    args = parser.parse_args(argv)
    try:
        convert_sbd(args.sbd_root, args.voc_root, force=args.force)
    except EXPECTED_ERRORS as error:
        return fail(error)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
