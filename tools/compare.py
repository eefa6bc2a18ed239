"""Compare variants over seeds with one budget: train each, score it, tabulate and plot.

    # configs side by side: each file is a variant, named after the file
    python tools/compare.py configs/A.yaml configs/B.yaml --seeds 0 1 2 --out results/ab
    # one config, variants as --set overrides
    python tools/compare.py configs/segnet_vgg16x0.25-lift-lift_synthetic-128x128_2k.yaml \\
        --variant lift/lift model.down=lift model.up=lift \\
        --variant max/maxunpool model.down=max model.up=maxunpool --seeds 0 1
    # a study file (the studies the README reports are in studies/)
    python tools/compare.py --study studies/synthetic.yaml

Every variant trains for the same budget (``train.iters`` and ``train.batch_size`` must agree,
or the study stops before it starts) with each seed (``train.seed``), through
``tools/train.py`` in a subprocess, then the final weights (``--checkpoint best`` for the
best validation checkpoint) are scored on ``--split`` with ``tools/eval.py``.

Resumable: a run that finished is not run again, an interrupted one (Ctrl-C or SIGTERM:
the run saves its ``last.pt`` first) continues from there; run the same command again. A
finished run is reused when only the scoring changes (``--split``, ``--checkpoint``); a run
folder trained with other settings is refused, not mixed in. ``--only NAME ...`` runs those
variants and tabulates them with whatever the others have finished. A run that fails is
reported in the tables and in the exit status (1), never averaged in; the others go on.
Paths in ``--set`` values (``data.root=...``) are read from the repository root, where the
tools run. ``OUT`` holds::

    runs/VARIANT/seedN/   the training work dir (checkpoints, train.log, tb/, metrics.json:
                          the final validation), compare.log (the tools' output) and, for
                          another split or checkpoint, eval_SPLIT_CHECKPOINT/metrics.json
    results.md            mean ± std over seeds: mIoU, mean Boundary IoU, aAcc, mAcc,
                          per-class IoU, parameters, training s/iter, peak memory
    results.json          every run's figures and the aggregates
    results.png           mIoU and mBIoU per variant, bars with ± std
    predictions.png       the same SPLIT images predicted by every variant, with the truth
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from seg.config import ConfigError, load_config
from seg.engine.evaluator import json_ready

ROOT = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = ("mIoU", "mBIoU", "aAcc", "mAcc")
INTERRUPTED = (128 + 2, 128 + 15)  # tools/train.py after SIGINT / SIGTERM: resumable


class StudyError(ValueError):
    """A study that can't run as written: the message says what to change."""


@dataclass
class Variant:
    name: str
    config: Path
    overrides: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.+-]+", "-", self.name).strip("-") or "variant"


@dataclass
class Study:
    variants: list[Variant]
    seeds: list[int]
    out: Path
    split: str | None = None  # None: each config's eval.split
    checkpoint: str = "last"
    overrides: list[str] = field(default_factory=list)  # common to every variant
    title: str = "study"
    device: str | None = None
    num_images: int = 4
    only: list[str] | None = None  # run these variants; show the others' finished runs


# ---------------------------------------------------------------- the study definition


def read_study(path: Path) -> dict:
    """A study YAML: config, variants (name: [overrides] or {config, set}), seeds, set, ..."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise StudyError(f"can't read study file {path}: {error}") from error
    known = {"title", "config", "variants", "seeds", "set", "split", "checkpoint", "out", "images"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise StudyError(f"{path}: unknown key(s) {unknown}; a study file may hold {sorted(known)}")
    base = raw.get("config")
    variants = []
    for name, spec in (raw.get("variants") or {}).items():
        if isinstance(spec, dict):
            config, overrides = spec.get("config", base), list(spec.get("set", []))
        else:
            config, overrides = base, list(spec or [])
        if config is None:
            raise StudyError(f"{path}: variant {name!r} has no config (set 'config' at the top)")
        variants.append(Variant(str(name), _resolve(config, path.parent), overrides))
    if not variants:
        raise StudyError(f"{path}: 'variants' is empty; name at least two variants to compare")
    return {
        "variants": variants,
        "title": raw.get("title", path.stem),
        "seeds": raw.get("seeds"),
        "overrides": list(raw.get("set", [])),
        "split": raw.get("split"),
        "checkpoint": raw.get("checkpoint"),
        "out": raw.get("out"),
        "num_images": raw.get("images"),
    }


def _resolve(config: str, folder: Path) -> Path:
    """A config path as written in a study file: from the repository root, else its folder."""
    for candidate in (ROOT / config, folder / config, Path(config)):
        if candidate.is_file():
            return candidate.resolve()
    raise StudyError(f"config {config} not found (looked in {ROOT} and {folder})")


def check_budgets(study: Study) -> dict:
    """Every variant resolves to a valid config with the same iterations and batch size."""
    budgets, scored = {}, {}
    for variant in study.variants:
        try:
            cfg = load_config(variant.config, [*study.overrides, *variant.overrides])
        except ConfigError as error:
            raise StudyError(f"variant {variant.name!r}: {error}") from error
        budgets[variant.name] = (cfg.train.iters, cfg.train.batch_size)
        scored[variant.name] = (study.split or cfg.eval.split, cfg.model["num_classes"])
    if len(set(scored.values())) > 1:
        listed = ", ".join(f"{n}: {s} split, {k} classes" for n, (s, k) in scored.items())
        raise StudyError(
            f"the variants are not scored on the same data ({listed}); give them one "
            "eval.split (or --split) and the same data set"
        )
    if len(set(budgets.values())) > 1:
        listed = ", ".join(f"{n}: {i} iters x batch {b}" for n, (i, b) in budgets.items())
        raise StudyError(
            f"the variants don't share a budget ({listed}); give them the same "
            "train.iters and train.batch_size (e.g. --set train.iters=N) so they compare"
        )
    names = [v.slug for v in study.variants]
    if len(set(names)) != len(names):
        raise StudyError(f"variant names must differ (as folder names): {names}")
    iters, batch = next(iter(budgets.values()))
    return {"iters": iters, "batch_size": batch}


# ---------------------------------------------------------------- running


def run_dir(study: Study, variant: Variant, seed: int) -> Path:
    return study.out / "runs" / variant.slug / f"seed{seed}"


def run_settings(study: Study, variant: Variant, seed: int) -> dict:
    """What a run trains (not how it is scored: another split or checkpoint reuses it)."""
    overrides = [*study.overrides, *variant.overrides, f"train.seed={seed}"]
    resolved = load_config(variant.config, overrides).to_dict()
    resolved.pop("output")  # where it writes and whether it draws a progress bar
    config = variant.config.relative_to(ROOT) if variant.config.is_relative_to(ROOT) else None
    return {
        "variant": variant.name,
        "config": str(config or variant.config),
        "set": overrides,
        "resolved": resolved,
    }


def _same_training(stored: dict, settings: dict) -> bool:
    if "resolved" in stored:
        return stored["resolved"] == settings["resolved"]
    # Older record (config path and overrides only).
    return (
        stored.get("set") == settings["set"]
        and Path(stored.get("config", "")).resolve() == (ROOT / settings["config"]).resolve()
    )


def _result_path(folder: Path, cfg, study: Study) -> Path:
    split = study.split or cfg.eval.split
    if study.checkpoint == "last" and split == cfg.eval.split and cfg.train.val_max_images is None:
        return folder / "metrics.json"  # the trainer's final validation: the last weights
    return folder / f"eval_{split}_{study.checkpoint}" / "metrics.json"


def _tail(path: Path, lines: int = 8) -> str:
    if not path.is_file():
        return ""
    text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return "\n".join(text[-lines:])


def _run_logged(args: list[str], log_path: Path) -> int:
    """Run a tool, its output appended to ``log_path``; on Ctrl-C / SIGTERM let it save first."""
    with open(log_path, "a") as log:
        log.write(f"\n$ python {shlex.join(args)}\n")
        log.flush()
        process = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            return process.wait()
        except KeyboardInterrupt:
            # tools/train.py finishes its step and writes last.pt on SIGINT (a second one,
            # if the terminal sent it too, changes nothing): wait for that, then stop.
            process.send_signal(signal.SIGINT)
            process.wait()
            raise


def _run_step(study: Study, log_path: Path, *args: str) -> int:
    """A tool on the study's device; an interrupted one stops the study (it resumes)."""
    code = _run_logged([*args, *(["--device", study.device] if study.device else [])], log_path)
    if code in INTERRUPTED:
        raise KeyboardInterrupt
    return code


def run_one(study: Study, variant: Variant, seed: int, train: bool = True) -> dict | None:
    """Train and score one (variant, seed); returns its record (status ok / failed).

    ``train=False``: only pick up a run that already finished (None if it did not).
    """
    folder = run_dir(study, variant, seed)
    if not train and not (folder / "compare_run.json").is_file():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    settings = run_settings(study, variant, seed)
    stored = folder / "compare_run.json"
    if stored.is_file() and not _same_training(json.loads(stored.read_text()), settings):
        raise StudyError(
            f"{folder} holds a run trained with other settings ({stored}); the study changed. "
            "Use another --out, or delete that folder to run it again"
        )
    stored.write_text(json.dumps(settings, indent=2))
    cfg = load_config(variant.config, settings["set"])
    split = study.split or cfg.eval.split
    result = _result_path(folder, cfg, study)
    record = {"variant": variant.name, "seed": seed, "dir": str(folder), "split": split}
    log_path = folder / "compare.log"
    if not train:
        if not (result.is_file() and (folder / "metrics.json").is_file()):
            return None
    elif not (folder / "metrics.json").is_file():
        code = _run_step(
            study,
            log_path,
            "tools/train.py", str(variant.config), "--work-dir", str(folder), "--resume",
            "--set", *settings["set"], "output.progress=false",
        )  # fmt: skip
        if code != 0:
            return {**record, "status": "failed", "returncode": code, "error": _tail(log_path)}
    if not result.is_file():
        code = _run_step(
            study,
            log_path,
            "tools/eval.py", str(folder / f"{study.checkpoint}.pt"), "--split", split,
            "--out", str(result.parent),
        )  # fmt: skip
        if code != 0:
            return {**record, "status": "failed", "returncode": code, "error": _tail(log_path)}
    metrics = json.loads(result.read_text())
    cost = json.loads((folder / "metrics.json").read_text()).get("train", {})
    return {**record, "status": "ok", "metrics": metrics, "train": cost}


# ---------------------------------------------------------------- aggregating


def _nan(value) -> float:
    return math.nan if value is None else float(value)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN with one value), NaNs left out."""
    kept = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
    if kept.size == 0:
        return math.nan, math.nan
    return float(kept.mean()), float(kept.std(ddof=1)) if kept.size > 1 else math.nan


def aggregate(study: Study, records: list[dict]) -> list[dict]:
    rows = []
    for variant in study.variants:
        runs = [r for r in records if r["variant"] == variant.name]
        if not runs:
            continue  # not run (--only) and nothing on disk
        ok = [r for r in runs if r["status"] == "ok"]
        row = {
            "variant": variant.name,
            "runs": len(ok),
            "planned": len(study.seeds),
            "failed": [r["seed"] for r in runs if r["status"] != "ok"],
            "seeds": [r["seed"] for r in ok],
        }
        for key in SUMMARY_KEYS:
            row[key] = mean_std([_nan(r["metrics"][key]) for r in ok])
        classes = ok[0]["metrics"]["classes"] if ok else []
        row["classes"] = classes
        row["IoU"] = [
            mean_std([_nan(r["metrics"]["IoU"][c]) for r in ok]) for c in range(len(classes))
        ]
        costs = [r["train"] for r in ok if r["train"]]
        row["params"] = costs[0]["params"] if costs else None
        row["seconds_per_iter"] = mean_std([c["seconds_per_iter"] for c in costs])
        row["peak_memory_mib"] = mean_std([c["peak_memory_mib"] for c in costs])
        row["memory"] = costs[0]["memory"] if costs else None
        row["device"] = costs[0]["device"] if costs else None
        rows.append(row)
    return rows


def _pct(pair: tuple[float, float]) -> str:
    mean, std = pair
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.2f}" + ("" if math.isnan(std) else f" ± {100 * std:.2f}")


def markdown(study: Study, rows: list[dict], records: list[dict], header: dict) -> str:
    memory = {"cpu_max_rss": "peak RSS, MiB", "cuda_max_allocated": "peak CUDA MiB"}
    kind = memory.get(next((r["memory"] for r in rows if r["memory"]), ""), "peak MiB")
    lines = [
        f"# {study.title}",
        "",
        f"- command: `{header['command']}`",
        f"- date: {header['date']}; machine: {header['machine']}",
        f"- budget: {header['budget']['iters']} iterations x batch "
        f"{header['budget']['batch_size']}, seeds {' '.join(map(str, study.seeds))}, "
        f"scored on the {header['split']} split with the {study.checkpoint} checkpoint",
        "- figures in %, mean ± sample std over the seeds that finished",
        *(
            [f"- **incomplete**: {header['done']} of {header['planned']} runs so far"]
            if header.get("done", 0) < header.get("planned", 0)
            else []
        ),
        "",
        f"| variant | runs | mIoU | mBIoU | aAcc | mAcc | params (M) | s/iter | {kind} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        runs = f"{row['runs']}/{row['planned']}"
        params = "-" if row["params"] is None else f"{row['params'] / 1e6:.3f}"
        spi, mem = row["seconds_per_iter"][0], row["peak_memory_mib"][0]
        lines.append(
            f"| {row['variant']} | {runs} | "
            + " | ".join(_pct(row[key]) for key in SUMMARY_KEYS)
            + f" | {params} | {'-' if math.isnan(spi) else f'{spi:.3f}'}"
            + f" | {'-' if math.isnan(mem) else f'{mem:.0f}'} |"
        )
    classes = next((row["classes"] for row in rows if row["classes"]), [])
    if classes:
        lines += ["", "Per-class IoU (%):", ""]
        lines.append("| class | " + " | ".join(row["variant"] for row in rows) + " |")
        lines.append("|---|" + "---:|" * len(rows))
        for index, name in enumerate(classes):
            cells = [_pct(row["IoU"][index]) if row["IoU"] else "-" for row in rows]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        lines += ["", "Failed runs (not in the means above):", ""]
        for r in failed:
            error = r["error"].splitlines()[-1] if r["error"] else "no output"
            lines.append(f"- {r['variant']} seed {r['seed']}: exit {r['returncode']}, {error}")
            lines.append(f"  (log: {r['dir']}/compare.log)")
    return "\n".join(lines) + "\n"


def plot(study: Study, rows: list[dict], records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["variant"] for row in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 4))
    for offset, key in ((-0.2, "mIoU"), (0.2, "mBIoU")):
        means = [100 * row[key][0] for row in rows]
        stds = [0 if math.isnan(row[key][1]) else 100 * row[key][1] for row in rows]
        ax.bar(x + offset, means, 0.4, yerr=stds, capsize=3, label=key)
        for index, row in enumerate(rows):  # every seed, as a dot on its bar
            seeds = [
                100 * _nan(r["metrics"][key])
                for r in records
                if r["variant"] == row["variant"] and r["status"] == "ok"
            ]
            ax.plot([x[index] + offset] * len(seeds), seeds, "k.", markersize=4)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_title(f"{study.title}: mean ± std over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def prediction_grid(study: Study, records: list[dict], path: Path) -> bool:
    """The first ``num_images`` images of the split: image | truth | each variant (seed 1st)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from seg.data import build_dataset, build_val_transform, colorize
    from seg.data.transforms import denormalize
    from seg.engine import load_for_inference, predict

    chosen = {}
    for record in records:
        if record["status"] == "ok" and record["variant"] not in chosen:
            chosen[record["variant"]] = record
    if not chosen or study.num_images <= 0:
        return False
    columns, dataset, meta = [], None, None
    for name, record in chosen.items():
        ckpt = Path(record["dir"]) / f"{study.checkpoint}.pt"
        model, cfg, meta = load_for_inference(
            ckpt, (f"eval.split={record['split']}",), device=study.device or "cpu"
        )
        if dataset is None:
            transform = build_val_transform(meta["mean"], meta["std"])
            dataset = build_dataset(cfg.data, record["split"], transform=transform)
            samples = [dataset[i] for i in range(min(study.num_images, len(dataset)))]
        predictions = []
        for image, _ in samples:
            with torch.no_grad():
                probs = predict(
                    model,
                    image[None].to(next(model.parameters()).device),
                    mode=cfg.eval.mode,
                    crop_size=cfg.eval.crop_size,
                    stride=cfg.eval.stride,
                    resize=cfg.data.get("resize"),
                )
            predictions.append(probs.argmax(1)[0].cpu().numpy())
        columns.append((name, predictions))
    palette = np.asarray(meta["palette"], dtype=np.uint8)
    ignore = dataset.ignore_index
    titles = ["image", "truth", *(name for name, _ in columns)]
    height, width = samples[0][1].shape[-2:]
    scale = 2.2 / max(height, width) * 1.3
    fig, axes = plt.subplots(
        len(samples),
        len(titles),
        figsize=(scale * width * len(titles), scale * height * len(samples) + 0.4),
        squeeze=False,
    )
    for row, (image, truth) in enumerate(samples):
        pictures = [
            denormalize(image, meta["mean"], meta["std"]),
            colorize(np.asarray(truth), palette, ignore_index=ignore),
            *(colorize(p[row], palette, ignore_index=ignore) for _, p in columns),
        ]
        for col, picture in enumerate(pictures):
            axes[row, col].imshow(picture)
            axes[row, col].set_axis_off()
            if row == 0:
                axes[row, col].set_title(titles[col], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_results(study: Study, records: list[dict], header: dict) -> list[dict]:
    rows = aggregate(study, records)
    (study.out / "results.md").write_text(markdown(study, rows, records, header))
    (study.out / "results.json").write_text(
        json.dumps(
            json_ready({**header, "variants": rows, "runs": records}), indent=2, allow_nan=False
        )
    )
    if any(row["runs"] for row in rows):
        plot(study, rows, records, study.out / "results.png")
    return rows


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"


def run_study(study: Study, command: str) -> int:
    budget = check_budgets(study)
    study.out.mkdir(parents=True, exist_ok=True)
    cfg0 = load_config(study.variants[0].config, [*study.overrides, *study.variants[0].overrides])
    selected = [v for v in study.variants if study.only is None or v.name in study.only]
    header = {
        "title": study.title,
        "command": command,
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "budget": budget,
        "split": study.split or cfg0.eval.split,
        "checkpoint": study.checkpoint,
        "seeds": study.seeds,
        "planned": len(study.seeds) * len(selected),
        "done": 0,
    }
    records: list[dict] = []
    position = 0
    try:
        # Seed-major: after the first seed every variant has a result to look at.
        for seed in study.seeds:
            for variant in study.variants:
                if variant not in selected:  # --only: show what finished, run nothing
                    record = run_one(study, variant, seed, train=False)
                    if record is not None:
                        records.append(record)
                    continue
                position += 1
                print(f"[{position}/{header['planned']}] {variant.name}, seed {seed}", flush=True)
                record = run_one(study, variant, seed)
                records.append(record)
                header["done"] += 1
                if record["status"] == "ok":
                    m = record["metrics"]
                    print(
                        f"    mIoU {100 * _nan(m['mIoU']):.2f}  mBIoU {100 * _nan(m['mBIoU']):.2f}"
                    )
                else:
                    print(
                        f"    FAILED (exit {record['returncode']}): see {record['dir']}/compare.log"
                    )
                write_results(study, records, header)  # the tables so far, while it runs
        write_results(study, records, header)
        try:
            if prediction_grid(study, records, study.out / "predictions.png"):
                print(f"wrote {study.out / 'predictions.png'}")
        except (OSError, ValueError, RuntimeError, ConfigError) as error:
            print(f"warning: no predictions.png: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        write_results(study, records, header)
        print(
            "interrupted; run the same command again to continue where it stopped",
            file=sys.stderr,
        )
        return 130
    print((study.out / "results.md").read_text())
    print(f"wrote {study.out}/results.{{md,json,png}}")
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        print(f"{len(failed)} run(s) failed; see results.md", file=sys.stderr)
        return 1
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train and compare variants over seeds with the same budget.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("configs", nargs="*", help="config files (each a variant)")
    parser.add_argument("--study", help="a study YAML (configs, variants, seeds, overrides)")
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "KEY=VALUE"),
        help="a variant of the one config: its name, then its overrides (repeat the flag)",
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these variants")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="for all")
    parser.add_argument("--split", help="score on this split (default: each config's eval.split)")
    parser.add_argument("--checkpoint", choices=("last", "best"), help="default: last")
    parser.add_argument("--images", type=int, help="images in predictions.png (default 4)")
    parser.add_argument("--title", help="the study's name in results.md")
    parser.add_argument(
        "--out", help="output folder (default: the study's out, else results/<study or config>)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    args = parser.parse_args(argv)
    command = shlex.join(
        ["python", "tools/compare.py", *(argv if argv is not None else sys.argv[1:])]
    )
    try:
        spec: dict = {}
        if args.study:
            spec = read_study(Path(args.study))
            if args.configs or args.variant:
                raise StudyError("give either --study or configs/--variant, not both")
        elif args.variant:
            if len(args.configs) != 1:
                raise StudyError("--variant needs exactly one config to apply its overrides to")
            config = Path(args.configs[0])
            spec["variants"] = [Variant(v[0], config.resolve(), v[1:]) for v in args.variant]
        elif args.configs:
            spec["variants"] = [Variant(Path(c).stem, Path(c).resolve()) for c in args.configs]
        else:
            parser.error("give config files, one config with --variant, or --study")
        if args.only:
            names = [v.name for v in spec["variants"]]
            missing = [name for name in args.only if name not in names]
            if missing:
                raise StudyError(f"--only: no variant(s) {missing}; the variants are {names}")
        for variant in spec["variants"]:
            if not variant.config.is_file():
                raise StudyError(f"config file not found: {variant.config}")
        first = Path(args.study) if args.study else spec["variants"][0].config
        study = Study(
            variants=spec["variants"],
            seeds=list(dict.fromkeys(args.seeds or spec.get("seeds") or [0, 1, 2])),
            out=Path(args.out).resolve()
            if args.out
            else ROOT / (spec.get("out") or Path("results") / first.stem),
            split=args.split or spec.get("split"),
            checkpoint=args.checkpoint or spec.get("checkpoint") or "last",
            overrides=[*spec.get("overrides", []), *args.set],
            title=args.title or spec.get("title") or first.stem,
            device=args.device,
            num_images=next(n for n in (args.images, spec.get("num_images"), 4) if n is not None),
            only=args.only,
        )
        os.chdir(ROOT)  # the tools run here: relative data roots mean the same to all
        signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C: the run saves first
        return run_study(study, command)
    except (StudyError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
