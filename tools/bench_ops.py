"""Speed, bandwidth and peak memory of the pooling operators against the baselines.

For each operator and SegNet stage shape, forward and forward+backward:

* median time: ``triton.testing.do_bench`` on CUDA, a timed loop's median on CPU;
* achieved bandwidth: ideal bytes moved / time, where forward moves its inputs
  once and its outputs once, and the backward reads the output gradients and
  the inputs and writes the input gradients once; shown next to the device's
  measured copy bandwidth (``y.copy_(x)`` on a large tensor);
* peak memory above the inputs: ``torch.cuda.max_memory_allocated`` on CUDA,
  "n/a" on CPU.

Implementations: ``triton`` (the kernels, CUDA only), ``fused`` (LiftPool's fused eager
path, `seg.ops.lifting_fused`, CPU only: what CPU tensors get by default), ``reference``
(eager PyTorch), ``compiled`` (``torch.compile`` of the reference, with ``--compile``),
and the baselines ``max_pool2d(return_indices=True)``, ``max_unpool2d``,
``F.interpolate(bilinear)``, ``avg_pool2d`` on the same input.

    python tools/bench_ops.py --out bench/           # GPU: SegNet shapes, fp32 and bf16
    python tools/bench_ops.py --device cpu --out bench-cpu/   # CPU: 16x64x128^2 + SegNet x1/4
    python tools/bench_ops.py --quick --device cpu --out /tmp/bench   # tiny shapes

Writes ``bench_ops.json`` and ``bench_ops.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from seg.engine.runtime import describe_device, reproducing_command
from seg.ops import LiftDownPool2d, LiftUpPool2d, lip2d, soft_pool2d

SEGNET_SHAPES = [(16, 64, 256, 256), (16, 128, 128, 128), (16, 256, 64, 64), (16, 512, 32, 32)]
# CPU: the operator shape of the CPU fast-path targets, then SegNet x1/4 stages at 180x240.
CPU_SHAPES = [(16, 64, 128, 128), (8, 16, 180, 240), (8, 64, 45, 60)]
QUICK_SHAPES = [(2, 8, 16, 16), (2, 16, 8, 8)]
FUSED_OPS = ("lift_down2d", "lift_up2d", "soft_pool2d", "lip2d")  # with a fused eager path
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# --------------------------------------------------------------------------- cases


class Case:
    """One operator implementation on one input: ``run()`` returns its output tensors."""

    def __init__(self, op: str, impl: str, run: Callable, inputs: list, backend: str | None):
        self.op, self.impl, self.run, self.inputs, self.backend = op, impl, run, inputs, backend


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _with_backend(fn: Callable, backend: str) -> Callable:
    def run():
        os.environ["SEG_OPS_BACKEND"] = backend
        return fn()

    return run


def _outputs(value) -> tuple:
    if isinstance(value, torch.Tensor):
        return (value,)
    return tuple(v for v in value if isinstance(v, torch.Tensor) and v.is_floating_point())


def build_cases(shape, dtype, device, impls: list[str]) -> list[Case]:
    n, c, h, w = shape
    x = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    logit = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    down = LiftDownPool2d(c).to(device).eval()
    up = LiftUpPool2d(down)
    with torch.no_grad():
        for p in down.parameters():
            p.normal_(0, 0.3)
        os.environ["SEG_OPS_BACKEND"] = "reference"
        bands = down.decompose(x)
        pooled, indices = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
    bands = bands._replace(
        **{k: getattr(bands, k).detach().requires_grad_() for k in ("ll", "lh", "hl", "hh")}
    )
    pooled = pooled.detach().requires_grad_()
    ours = {
        "lift_down2d": (lambda: tuple(down.decompose(x)[:4]), [x, *down.parameters()]),
        "lift_up2d": (lambda: up(bands.ll, bands), [*bands[:4], *down.parameters()]),
        "soft_pool2d": (lambda: soft_pool2d(x, 2), [x]),
        "lip2d": (lambda: lip2d(x, logit, 3, 2, 1), [x, logit]),
    }
    cases = []
    for op, (fn, inputs) in ours.items():
        for impl in impls:
            if impl == "fused" and op not in FUSED_OPS:
                continue
            backend = impl if impl in ("triton", "fused") else "reference"
            run = _with_backend(fn, backend)
            if impl == "compiled":
                run = _with_backend(torch.compile(fn), backend)
            cases.append(Case(op, impl, run, inputs, backend))
    baselines = {
        "max_pool2d_with_indices": (
            lambda: F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True),
            [x],
        ),
        "max_unpool2d": (
            lambda: F.max_unpool2d(pooled, indices, 2, 2, output_size=(h, w)),
            [pooled],
        ),
        "interpolate_bilinear": (
            lambda: F.interpolate(pooled, size=(h, w), mode="bilinear", align_corners=False),
            [pooled],
        ),
        "avg_pool2d": (lambda: F.avg_pool2d(x, 2, 2, ceil_mode=True), [x]),
    }
    for op, (fn, inputs) in baselines.items():
        cases.append(Case(op, "baseline", fn, inputs, None))
    return cases


# --------------------------------------------------------------------------- timing


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_ms(fn: Callable, device: str, repeats: int) -> float:
    if device.startswith("cuda"):
        import triton.testing

        return float(triton.testing.do_bench(fn, return_mode="median"))
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def copy_bandwidth(device: str, quick: bool, repeats: int) -> float:
    """GB/s of ``y.copy_(x)`` on a large float32 tensor: the device's practical ceiling."""
    numel = (1 << 20) if quick else (1 << 26 if device.startswith("cuda") else 1 << 23)
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, repeats)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9


def measure(case: Case, mode: str, device: str, repeats: int) -> dict:
    outputs = _outputs(case.run())
    grads = [torch.randn_like(o) for o in outputs]
    inputs = [t for t in case.inputs if t.requires_grad]
    moved = _nbytes(case.inputs) + _nbytes(outputs)
    if mode == "fwd":
        fn = case.run
    else:
        moved += _nbytes(outputs) + 2 * _nbytes(case.inputs)

        def fn():
            torch.autograd.backward(_outputs(case.run()), grads)
            for t in inputs:
                t.grad = None

    peak = "n/a"
    if device.startswith("cuda"):
        _sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        _sync(device)
        peak = round((torch.cuda.max_memory_allocated() - base) / 2**20, 2)
    ms = median_ms(fn, device, repeats)
    return {"median_ms": ms, "GBps": moved / (ms * 1e-3) / 1e9, "peak_MiB": peak}


# --------------------------------------------------------------------------- report

# The baseline each operator is held against (the targets), same input and mode.
BASELINE_OF = {
    "lift_down2d": ("max_pool2d_with_indices", 2.0),
    "lift_up2d": ("max_unpool2d", 2.0),
    "soft_pool2d": ("avg_pool2d", 1.5),
    "lip2d": ("avg_pool2d", 1.5),
}


def add_ratios(results: list[dict]) -> None:
    """Per row: ``x_baseline`` = time / its baseline's time and ``speedup_vs_reference`` =
    reference time / time, both from rows of the same shape, dtype and mode in this run."""
    index = {(r["op"], r["impl"], tuple(r["shape"]), r["dtype"], r["mode"]): r for r in results}
    for r in results:
        key = (tuple(r["shape"]), r["dtype"], r["mode"])
        baseline = BASELINE_OF.get(r["op"])
        base_row = index.get((baseline[0], "baseline", *key)) if baseline else None
        r["baseline"] = baseline[0] if baseline else None
        r["x_baseline"] = r["median_ms"] / base_row["median_ms"] if base_row else None
        ref_row = index.get((r["op"], "reference", *key))
        r["speedup_vs_reference"] = (
            ref_row["median_ms"] / r["median_ms"] if ref_row and r["impl"] != "baseline" else None
        )


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    lines = [
        f"# bench_ops on {report['device_name']}",
        "",
        f"{report.get('date', '')}; torch {report['torch']}, {report.get('threads', '?')} "
        f"threads; `{report.get('command', '')}`",
        "",
        f"copy bandwidth: {report['copy_GBps']:.1f} GB/s; %copy = achieved / copy bandwidth",
        "",
        "x baseline = time / time of the baseline on the same input (lift_down2d: "
        "max_pool2d(return_indices=True), lift_up2d: max_unpool2d, soft_pool2d and lip2d: "
        "avg_pool2d); speedup = reference time / time.",
        "",
        "| op | impl | shape | dtype | mode | median ms | GB/s | %copy | peak MiB "
        "| x baseline | speedup vs reference |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        shape = "x".join(str(s) for s in r["shape"])
        lines.append(
            f"| {r['op']} | {r['impl']} | {shape} | {r['dtype']} | {r['mode']} | "
            f"{r['median_ms']:.3f} | {r['GBps']:.3g} | {100 * r['copy_fraction']:.2g}% | "
            f"{r['peak_MiB']} | {_fmt(r.get('x_baseline'), '.2f')} | "
            f"{_fmt(r.get('speedup_vs_reference'), '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="comma list, e.g. float32,bfloat16")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (CPU, tests)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the reference")
    parser.add_argument("--repeats", type=int, default=None, help="CPU timing loop length")
    parser.add_argument("--out", type=Path, default=Path("bench"))
    args = parser.parse_args(argv)

    device = args.device
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is visible")
    dtypes = args.dtype or ("float32,bfloat16" if cuda else "float32")
    dtypes = [d.strip() for d in dtypes.split(",")]
    for name in dtypes:
        if name not in DTYPES:
            parser.error(f"unknown dtype {name!r}; choose from {sorted(DTYPES)}")
    repeats = args.repeats or (5 if args.quick else 20)
    shapes = QUICK_SHAPES if args.quick else (SEGNET_SHAPES if cuda else CPU_SHAPES)
    impls = (["triton"] if cuda else ["fused"]) + ["reference"]
    impls += ["compiled"] if args.compile else []

    saved_backend = os.environ.get("SEG_OPS_BACKEND")
    copy_gbps = copy_bandwidth(device, args.quick, repeats)
    results = []
    try:
        for name in dtypes:
            for shape in shapes:
                for case in build_cases(shape, DTYPES[name], device, impls):
                    for mode in ("fwd", "fwd+bwd"):
                        row = measure(case, mode, device, repeats)
                        row.update(op=case.op, impl=case.impl, shape=list(shape), dtype=name)
                        row.update(mode=mode, copy_fraction=row["GBps"] / copy_gbps)
                        results.append(row)
                        print(
                            f"{case.op:24s} {case.impl:9s} {shape} {name} {mode:8s} "
                            f"{row['median_ms']:9.3f} ms {row['GBps']:8.3g} GB/s",
                            flush=True,
                        )
                if cuda:
                    torch.cuda.empty_cache()
    finally:
        if saved_backend is None:
            os.environ.pop("SEG_OPS_BACKEND", None)
        else:
            os.environ["SEG_OPS_BACKEND"] = saved_backend

    add_ratios(results)
    device_name = describe_device(device)
    report = {
        "device": device,
        "device_name": device_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
        "command": reproducing_command(
            shlex.join(["python", "tools/bench_ops.py", *(argv or sys.argv[1:])])
        ),
        "copy_GBps": copy_gbps,
        "quick": args.quick,
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_ops.json").write_text(json.dumps(report, indent=2))
    (args.out / "bench_ops.md").write_text(markdown(report))
    return report


if __name__ == "__main__":
    main()
