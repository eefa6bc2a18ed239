"""Training-step time and peak memory of whole models, for every pooling pair.

One training step is the trainer's own `seg.engine.trainer.train_step`, as tools/train.py
runs it each iteration: forward (under the config's autocast on CUDA, cuDNN autotuned), the
config's losses (class weights and ignored pixels included) with the LiftPool regularisers,
the cross-process NaN/signal check, backward, gradient clipping, the optimizer's update. Each case runs in a fresh process
(a clean allocator and a clean peak), on a random batch of the config's batch size and crop:

* SegNet vgg16_bn (CamVid config, 360x480, batch 8) with max/maxunpool (the baseline),
  max/bilinear, avg/bilinear, soft/bilinear, lip/bilinear, lift/bilinear and lift/lift;
* DeepLabV3+ resnet50 (VOC config, 512x512, batch 16) with bilinear (the baseline) and lift.

Time: the median of ``--steps`` timed steps after ``--warmup`` (CUDA synchronised).
Memory: CUDA ``max_memory_allocated`` during the steps; on CPU, the growth of the process's
resident set from before the first step to its peak during the steps (the high-water mark
is reset first): activations, gradients and optimizer state, not the weights and inputs. Ratios are against each model's baseline,
measured in the same run.

    python tools/bench_model.py --out bench_results/         # the configs' sizes (GPU)
    python tools/bench_model.py --quick --out /tmp/bench     # x1/16 SegNet, resnet18, 64x64
    python tools/bench_model.py --device cpu --model segnet --rounds 3 \
        --set model.width=0.25 train.batch_size=8 'data.crop_size=[180,240]'   # the CPU case

``--set KEY=VALUE ...`` overrides every selected case's config (as tools/train.py's
``--set``), after ``--quick``'s; ``--model`` keeps one model's cases. ``--rounds R`` runs the
whole list R times, interleaved (case 1, 2, ..., then again), and reports each case's median
over the rounds: a machine whose speed drifts (shared cores, a VM) shifts every case alike
within a round, so the ratios stay fair.

Writes ``bench_model.json`` and ``bench_model.md`` to ``--out``; with ``--profile``, also
``profile-MODEL-PAIR.txt`` per case: `torch.profiler`'s operator table (every operator,
self time and calls, costliest first) over ``--steps`` further steps of the last round:
where the step's time goes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEGNET = "configs/segnet_vgg16-max-maxunpool_camvid-360x480_10k.yaml"
DEEPLAB = "configs/deeplabv3plus_r50-bilinear_voc12aug-512x512_20k.yaml"
SEGNET_PAIRS = [
    ("max", "maxunpool"),
    ("max", "bilinear"),
    ("avg", "bilinear"),
    ("soft", "bilinear"),
    ("lip", "bilinear"),
    ("lift", "bilinear"),
    ("lift", "lift"),
]
DEEPLAB_UPS = ["bilinear", "lift"]
QUICK = {
    "segnet": ["model.width=0.0625", "train.batch_size=2", "data.crop_size=[64,64]"],
    "deeplabv3plus": ["model.encoder=resnet18", "train.batch_size=2", "data.crop_size=[64,64]"],
}


def cases(quick: bool, extra: list[str] = ()) -> list[dict]:
    """(model, label, config, overrides); the first case of each model is its baseline.
    ``extra``: overrides for every case, applied last."""
    out = []
    for down, up in SEGNET_PAIRS:
        sets = [f"model.down={down}", f"model.up={up}", *(QUICK["segnet"] if quick else [])]
        sets += list(extra)
        out.append({"model": "segnet", "pair": f"{down}/{up}", "config": SEGNET, "set": sets})
    for up in DEEPLAB_UPS:
        sets = [f"model.up={up}", *(QUICK["deeplabv3plus"] if quick else []), *extra]
        out.append({"model": "deeplabv3plus", "pair": up, "config": DEEPLAB, "set": sets})
    return out


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_cpu_peak() -> bool:
    """Restart the resident-set high-water mark (VmHWM) from now (Linux 4.0+)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(
    case: dict, device: str, warmup: int, steps: int, profile_to: str | None = None
) -> dict:
    """One case, in this process: params, median step time, peak memory of the steps.

    The step is the trainer's own `train_step` on a `Run` built as `train()` builds it.
    ``profile_to``: also write `torch.profiler`'s operator table over ``steps`` more steps.
    """
    from dataclasses import replace

    import torch

    from seg.config import load_config
    from seg.engine.distributed import DistInfo
    from seg.engine.losses import build_losses
    from seg.engine.runtime import synchronize
    from seg.engine.trainer import build_run, train_step

    torch.manual_seed(0)
    cfg = load_config(ROOT / case["config"], case["set"])
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    num_classes = cfg.model["num_classes"]
    tcfg = cfg.train
    if tcfg.class_weights == "median_frequency":  # needs the data set; any weights cost the same
        tcfg = replace(tcfg, class_weights=[1.0] * num_classes)
    run = build_run(cfg, DistInfo(device=dev), {}, build_losses(tcfg, num_classes, 255))
    run.net.train()
    crop = cfg.data["crop_size"]
    height, width = (crop, crop) if isinstance(crop, int) else crop
    batch = cfg.train.batch_size
    images = torch.randn(batch, 3, height, width, device=dev)
    target = torch.randint(0, num_classes, (batch, height, width), device=dev)
    target[:, :2] = 255  # ignored pixels, as in real labels

    synchronize(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev) / 2**20
    else:
        before = _status_mib("VmRSS")
        _reset_cpu_peak()
    times = []
    for index in range(warmup + steps):
        synchronize(dev)
        start = time.perf_counter()
        train_step(run, (images, target))
        synchronize(dev)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 - before
    else:
        peak = _status_mib("VmHWM") - before
    if profile_to:
        _profile(lambda: train_step(run, (images, target)), dev, steps, Path(profile_to))
    return {
        **case,
        "batch": batch,
        "crop": [height, width],
        "amp": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype is not None else "none",
        "params": sum(p.numel() for p in run.model.parameters()),
        "step_ms": 1000 * statistics.median(times),
        "peak_mib": peak,
    }


def _profile(step, device, steps: int, path: Path) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=-1)  # every operator
    path.write_text(f"# {steps} training steps, {torch.get_num_threads()} threads\n{table}\n")


def run_isolated(case: dict, args: argparse.Namespace, profile_to: Path | None = None) -> dict:
    command = [
        sys.executable, __file__, "--worker", json.dumps(case), "--device", args.device,
        "--warmup", str(args.warmup), "--steps", str(args.steps),
    ]  # fmt: skip
    if profile_to is not None:
        command += ["--profile-to", str(profile_to)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {**case, "error": error}
    return json.loads(done.stdout.strip().splitlines()[-1])


def combine_rounds(runs: list[dict]) -> dict:
    """One case's result over the rounds: the median step time and peak memory (and every
    round's time); the first error if any round failed."""
    failed = [r for r in runs if "error" in r]
    if failed:
        return failed[0]
    out = dict(runs[0])
    out["step_ms"] = statistics.median(r["step_ms"] for r in runs)
    out["peak_mib"] = statistics.median(r["peak_mib"] for r in runs)
    out["rounds_step_ms"] = [r["step_ms"] for r in runs]
    return out


def add_ratios(results: list[dict]) -> None:
    """Time and memory over the first (baseline) case of the same model. With rounds, the
    time ratio is the median of each round's ratio: within a round both cases ran minutes
    apart, so a drift of the machine's speed cancels (a ratio of the two medians could
    pair one case's slow round with the other's fast one)."""
    baselines: dict[str, dict] = {}
    for result in results:
        base = baselines.setdefault(result["model"], result)
        for key in ("step_ms", "peak_mib"):
            ok = "error" not in result and "error" not in base and base[key] > 0
            result[f"{key}_ratio"] = result[key] / base[key] if ok else None
        mine, theirs = result.get("rounds_step_ms"), base.get("rounds_step_ms")
        if result["step_ms_ratio"] is not None and mine and theirs and len(mine) == len(theirs):
            result["step_ms_ratio"] = statistics.median(a / b for a, b in zip(mine, theirs))
        result["baseline"] = base["pair"]


def _rounds_note(report: dict) -> str:
    rounds = report.get("rounds", 1)
    if rounds < 2:
        return ""
    return (
        f", then the median of {rounds} interleaved rounds (time ratio: the median of the "
        "rounds' ratios)"
    )


def markdown(report: dict) -> str:
    lines = [
        f"# Training step per model and pooling pair ({report['device']})",
        "",
        f"{report['date']}; torch {report.get('torch', '?')}, {report.get('threads', '?')} threads; "
        f"median of {report['steps']} steps after {report['warmup']}"
        f"{_rounds_note(report)}; memory: {report['memory']}.",
        "",
        f"`{report['command']}`" if report.get("command") else "",
        "",
        "| model | pair | batch x crop | amp | params (M) | step (ms) | x baseline "
        "| peak (MiB) | x baseline |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['pair']} | failed: {r['error']} |||||||")
            continue
        time_ratio = "-" if r["step_ms_ratio"] is None else f"{r['step_ms_ratio']:.2f}"
        mem_ratio = "-" if r["peak_mib_ratio"] is None else f"{r['peak_mib_ratio']:.2f}"
        lines.append(
            f"| {r['model']} | {r['pair']} | {r['batch']} x {r['crop'][0]}x{r['crop'][1]} "
            f"| {r['amp']} | {r['params'] / 1e6:.2f} | {r['step_ms']:.1f} | {time_ratio} "
            f"| {r['peak_mib']:.0f} | {mem_ratio} |"
        )
    lines += ["", "Baselines: SegNet max/maxunpool, DeepLabV3+ bilinear."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Training-step time and peak memory per model and pooling pair.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n")[-2],
    )
    parser.add_argument("--quick", action="store_true", help="tiny models and inputs (CPU CI)")
    parser.add_argument("--device", help="default: cuda if available, else cpu")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--only",
        action="extend",
        nargs="+",
        metavar="PAIR",
        help="only these pairs (and baselines)",
    )
    parser.add_argument("--model", choices=["segnet", "deeplabv3plus"], help="only this model")
    parser.add_argument(
        "--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
        help="config overrides for every case, e.g. model.width=0.25 train.batch_size=8",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the case list this many times, interleaved"
    )
    parser.add_argument("--out", help="folder for bench_model.json / bench_model.md")
    parser.add_argument(
        "--profile", action="store_true", help="also write each case's operator profile (--out)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one case, in a child process
    parser.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        case = json.loads(args.worker)
        print(json.dumps(measure(case, args.device, args.warmup, args.steps, args.profile_to)))
        return 0

    import datetime

    import torch

    from seg.engine.runtime import describe_device, reproducing_command

    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.profile and not args.out:
        parser.error("--profile writes its tables to --out: give one")
    selected = cases(args.quick, args.set)
    if args.model:
        selected = [c for c in selected if c["model"] == args.model]
    if args.only:
        unknown = sorted(set(args.only) - {c["pair"] for c in selected})
        if unknown:
            pairs = sorted({c["pair"] for c in selected})
            parser.error(f"--only: unknown pair(s) {unknown}; choose from {pairs}")
        baselines = {"max/maxunpool", "bilinear"}
        selected = [c for c in selected if c["pair"] in {*args.only, *baselines}]
    rounds: list[list[dict]] = [[] for _ in selected]
    for round_index in range(args.rounds):
        for case, runs in zip(selected, rounds, strict=True):
            label = f"{case['model']:>14} {case['pair']:<14}"
            print(f"{label} [{round_index + 1}/{args.rounds}]", end=" ", flush=True)
            profile_to = None
            if args.profile and round_index == args.rounds - 1:
                Path(args.out).mkdir(parents=True, exist_ok=True)
                name = f"profile-{case['model']}-{case['pair'].replace('/', '-')}.txt"
                profile_to = Path(args.out).resolve() / name
            result = run_isolated(case, args, profile_to)
            runs.append(result)
            if "error" in result:
                print("failed:", result["error"], flush=True)
            else:
                print(f"{result['step_ms']:9.1f} ms  {result['peak_mib']:8.0f} MiB", flush=True)
    results = [combine_rounds(runs) for runs in rounds]
    add_ratios(results)
    cuda = args.device.startswith("cuda")
    report = {
        "device": describe_device(args.device),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "warmup": args.warmup,
        "steps": args.steps,
        "rounds": args.rounds,
        "set": args.set,
        "command": reproducing_command(
            shlex.join(["python", "tools/bench_model.py", *(argv or sys.argv[1:])])
        ),
        "threads": torch.get_num_threads(),
        "memory": "CUDA max allocated during the steps"
        if cuda
        else "resident-set growth from before the first step to the peak",
        "quick": args.quick,
        "results": results,
    }
    text = markdown(report)
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_model.json").write_text(json.dumps(report, indent=2))
        (out / "bench_model.md").write_text(text)
    failed = [f"{r['model']} {r['pair']}" for r in results if "error" in r]
    if failed:
        print(f"error: {len(failed)} case(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
