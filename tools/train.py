"""Train a segmentation model from a config, on one process or many (torchrun).

    python tools/train.py configs/segnet_vgg16x0.25-lift-lift_synthetic-128x128_2k.yaml
    python tools/train.py CONFIG --set train.lr=0.02 model.up=bilinear data.root=/data/voc
    python tools/train.py CONFIG --work-dir work_dirs/try1 --resume         # latest last.pt
    python tools/train.py CONFIG --resume work_dirs/try1/last.pt            # continues try1
    python tools/train.py CONFIG --load-from work_dirs/voc/best.pt          # fine-tune
    torchrun --nproc_per_node 4 tools/train.py CONFIG                       # DDP (NCCL/gloo)

Writes to the work dir (default work_dirs/<config name>): config.yaml (the resolved
config), train.log, tb/ (TensorBoard), last.pt, best.pt, metrics.json and metrics.md.
Ctrl-C or SIGTERM finishes the step, saves last.pt and exits with 128 + the signal number.
A work dir that already holds a run is refused: continue it with --resume, or replace it
with --force (which deletes nothing until the new run has built its data and model).
--resume CKPT continues in CKPT's folder unless --work-dir names another, which must not
hold another run and receives the run's best.pt too. --load-from (train.load_from)
starts a new run from the weights of a checkpoint, a state_dict or a .safetensors file
(weights only: optimizer, schedule and iteration start afresh); tensors whose name or shape
differ, such as a head for another number of classes, keep their initialisation and are
listed by name, and --strict refuses them instead. A resume restores its own weights and does not load them again.
A config error (one line naming the key) exits with 2, missing data or divergence with 1
(SEG_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seg.config import load_config
from seg.engine import train
from seg.engine.cli import EXPECTED_ERRORS, fail
from seg.engine.distributed import cleanup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train a segmentation model from a YAML config.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[1],
    )
    parser.add_argument("config", help="YAML config (see configs/)")
    parser.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, nested with dots; values are YAML (train.lr=0.02)",
    )
    parser.add_argument("--work-dir", help="output folder (default: output.work_dir)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CKPT",
        help="continue from CKPT (in its folder unless --work-dir is given), or without a "
        "value from WORK_DIR/last.pt",
    )
    parser.add_argument(
        "--load-from",
        metavar="CKPT",
        help="fine-tune: start from these weights (checkpoint, state_dict or .safetensors); "
        "sets train.load_from",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="with --load-from: refuse weights that don't fit the model instead of skipping "
        "them (train.load_strict)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="start a new run in a work dir that holds one, replacing its checkpoints/metrics",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    args = parser.parse_args(argv)
    overrides = list(args.set)
    work_dir_set = any(item.startswith("output.work_dir=") for item in args.set)
    if isinstance(args.resume, str) and not (args.work_dir or work_dir_set):
        args.work_dir = str(Path(args.resume).parent)  # the run continues where it was
    if args.work_dir:
        overrides.append(f"output.work_dir={args.work_dir}")
    if args.load_from is not None:  # quoted: a path is a string whatever it looks like
        overrides.append(f"train.load_from={json.dumps(args.load_from)}")
    if args.strict:
        overrides.append("train.load_strict=true")
    try:
        cfg = load_config(args.config, overrides)
        result = train(cfg, resume=args.resume, device=args.device, force=args.force)
    except KeyboardInterrupt as error:  # a second Ctrl-C/SIGTERM: the last checkpoint stays
        print(
            f"aborted ({error or 'interrupt'}); the last checkpoint on disk stays", file=sys.stderr
        )
        return 130
    except EXPECTED_ERRORS as error:
        return fail(error)
    finally:
        cleanup()
    if "interrupted" in result:
        return 128 + max(result["interrupted"], 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
