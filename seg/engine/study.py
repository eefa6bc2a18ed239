"""Studies: variants x seeds trained on one budget, their finished runs found, tabulated, drawn.

A `Study` is a list of `Variant` (a config and its overrides) with seeds, the split and
checkpoint that score them, and the folder that holds the runs. It comes from a study file
(`read_study`) or from config files (`study_from_configs`). The library part of a study lives
here: `check_budgets` refuses variants that would not compare, `plan_run` says where a run
trains and what scores it, `find_finished` picks up a run that already finished,
`write_results` aggregates records into ``results.md``/``results.json``/``results.png``, and
`prediction_grid` draws every variant's predictions of the same images. Running the training
and scoring subprocesses is `tools/compare.py`'s part.

A record is one run's outcome, as a plain dict (it goes into ``results.json`` as written):
``{"variant", "seed", "dir", "split", "status": "ok", "metrics", "train"}`` (``metrics``: the
evaluator's JSON; ``train``: the trainer's cost figures), or ``status: "failed"`` with
``returncode`` and ``error`` (the tail of the run's log).
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from seg.config import Config, ConfigError, load_config
from seg.engine.evaluator import json_ready
from seg.engine.runtime import describe_device

SUMMARY_KEYS = ("mIoU", "mBIoU", "aAcc", "mAcc")
DEFAULT_SEEDS = (0, 1, 2)
SETTINGS_FILE = "compare_run.json"  # in a run's folder: what it trains
# What a study file may hold (``images``: how many go into predictions.png).
STUDY_FILE_KEYS = (
    "title",
    "config",
    "variants",
    "seeds",
    "set",
    "split",
    "checkpoint",
    "out",
    "images",
)


class StudyError(ValueError):
    """A study that can't run as written: the message says what to change."""


@dataclass
class Variant:
    name: str
    config: Path
    overrides: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        """The name as a folder name."""
        return re.sub(r"[^A-Za-z0-9_.+-]+", "-", self.name).strip("-") or "variant"


@dataclass
class Study:
    """Variants x seeds on one budget.

    ``root`` is the folder the training and scoring run in: relative paths in the configs and
    overrides (``data.root=...``) are read from there, and a run's record names its config
    relative to it.
    """

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
    root: Path = field(default_factory=Path.cwd)

    def __post_init__(self) -> None:
        self.seeds = list(dict.fromkeys(self.seeds))  # each seed once, in order

    @property
    def selected(self) -> list[Variant]:
        """The variants to run (``only``); the others are only looked up."""
        return [v for v in self.variants if self.only is None or v.name in self.only]


# ---------------------------------------------------------------- the study definition


def read_study(path: str | Path, root: str | Path | None = None) -> Study:
    """A study YAML: config, variants (name: [overrides] or {config, set}), seeds, set, ...

    Relative paths in the file (configs, ``out``) are read from ``root`` (default: the study
    file's folder); a config not found there is looked for beside the study file.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise StudyError(f"can't read study file {path}: {error}") from error
    unknown = sorted(set(raw) - set(STUDY_FILE_KEYS))
    if unknown:
        raise StudyError(
            f"{path}: unknown key(s) {unknown}; a study file may hold {sorted(STUDY_FILE_KEYS)}"
        )
    root = Path(root) if root is not None else path.parent
    variants = [
        _read_variant(path, str(name), spec, raw.get("config"), root)
        for name, spec in (raw.get("variants") or {}).items()
    ]
    if not variants:
        raise StudyError(f"{path}: 'variants' is empty; name at least two variants to compare")
    return Study(
        variants=variants,
        seeds=raw.get("seeds") or list(DEFAULT_SEEDS),
        out=root / (raw.get("out") or Path("results") / path.stem),
        split=raw.get("split"),
        checkpoint=raw.get("checkpoint") or "last",
        overrides=list(raw.get("set", [])),
        title=raw.get("title") or path.stem,
        num_images=4 if raw.get("images") is None else raw["images"],
        root=root,
    )


def _read_variant(path: Path, name: str, spec, base: str | None, root: Path) -> Variant:
    if isinstance(spec, dict):
        config, overrides = spec.get("config", base), list(spec.get("set", []))
    else:
        config, overrides = base, list(spec or [])
    if config is None:
        raise StudyError(f"{path}: variant {name!r} has no config (set 'config' at the top)")
    return Variant(name, _find_config(config, root, path.parent), overrides)


def _find_config(config: str, root: Path, folder: Path) -> Path:
    """A config path as written in a study file: from ``root``, else the study file's folder."""
    for candidate in (root / config, folder / config, Path(config)):
        if candidate.is_file():
            return candidate.resolve()
    raise StudyError(f"config {config} not found (looked in {root} and {folder})")


def study_from_configs(
    configs: Sequence[str | Path],
    variants: Sequence[Sequence[str]] = (),
    root: str | Path | None = None,
) -> Study:
    """A study of config files, each a variant named after its file; or, with ``variants``
    (each ``[name, override, ...]``), the variants of one config.

    Config paths are read from the current folder; the study goes to
    ``ROOT/results/<first config's name>`` (``root`` default: the current folder).
    """
    root = Path(root) if root is not None else Path.cwd()
    paths = [Path(c).resolve() for c in configs]
    if variants and len(paths) != 1:
        raise StudyError("--variant needs exactly one config to apply its overrides to")
    if not paths:
        raise StudyError("a study needs config files, one config with variants, or a study file")
    for config in paths:
        if not config.is_file():
            raise StudyError(f"config file not found: {config}")
    if variants:
        chosen = [Variant(v[0], paths[0], list(v[1:])) for v in variants]
    else:
        chosen = [Variant(c.stem, c) for c in paths]
    stem = Path(configs[0]).stem
    return Study(chosen, list(DEFAULT_SEEDS), root / "results" / stem, title=stem, root=root)


def with_options(study: Study, overrides: Sequence[str] = (), **options) -> Study:
    """The study with a command line's choices: an option left None keeps the study's own,
    ``overrides`` come after the study's; ``only`` must name variants of the study."""
    chosen = {name: value for name, value in options.items() if value is not None}
    study = replace(study, overrides=[*study.overrides, *overrides], **chosen)
    if study.only is not None:
        names = [v.name for v in study.variants]
        missing = [name for name in study.only if name not in names]
        if missing:
            raise StudyError(f"--only: no variant(s) {missing}; the variants are {names}")
    return study


def _variant_config(study: Study, variant: Variant, *extra: str) -> Config:
    return load_config(variant.config, [*study.overrides, *variant.overrides, *extra])


def check_budgets(study: Study) -> dict:
    """Every variant resolves to a valid config with the same iterations and batch size, and
    is scored on the same data; returns ``{"iters", "batch_size"}``. Else `StudyError`."""
    budgets, scored = {}, {}
    for variant in study.variants:
        try:
            cfg = _variant_config(study, variant)
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


# ---------------------------------------------------------------- runs on disk


def run_dir(study: Study, variant: Variant, seed: int) -> Path:
    """``OUT/runs/VARIANT/seedN``: the run's training work dir."""
    return study.out / "runs" / variant.slug / f"seed{seed}"


def run_settings(study: Study, variant: Variant, seed: int) -> dict:
    """What a run trains (not how it is scored: another split or checkpoint reuses it)."""
    overrides = [*study.overrides, *variant.overrides, f"train.seed={seed}"]
    resolved = load_config(variant.config, overrides).to_dict()
    resolved.pop("output")  # where it writes and whether it draws a progress bar
    root = study.root.resolve()
    config = variant.config.relative_to(root) if variant.config.is_relative_to(root) else None
    return {
        "variant": variant.name,
        "config": str(config or variant.config),
        "set": overrides,
        "resolved": resolved,
    }


@dataclass(frozen=True)
class Run:
    """One (variant, seed) of a study: its folder, what it trains, the file that scores it."""

    variant: Variant
    seed: int
    folder: Path
    settings: dict
    split: str
    result: Path  # metrics.json of the scoring: the trainer's own, or an eval_SPLIT_CKPT one

    @property
    def trained(self) -> bool:
        return (self.folder / "metrics.json").is_file()

    @property
    def scored(self) -> bool:
        return self.result.is_file()

    def record(self, **outcome) -> dict:
        """The run's record with ``outcome`` (status and its figures or error) added."""
        who = {"variant": self.variant.name, "seed": self.seed, "dir": str(self.folder)}
        return {**who, "split": self.split, **outcome}


def plan_run(study: Study, variant: Variant, seed: int) -> Run:
    """Where (variant, seed) trains, what it trains and the ``metrics.json`` that scores it:
    the trainer's own final validation when that is what the study asks (last weights, the
    config's split, every image), else ``eval_SPLIT_CHECKPOINT/metrics.json``."""
    folder = run_dir(study, variant, seed)
    settings = run_settings(study, variant, seed)
    cfg = load_config(variant.config, settings["set"])
    split = study.split or cfg.eval.split
    if study.checkpoint == "last" and split == cfg.eval.split and cfg.train.val_max_images is None:
        result = folder / "metrics.json"  # the trainer's final validation: the last weights
    else:
        result = folder / f"eval_{split}_{study.checkpoint}" / "metrics.json"
    return Run(variant, seed, folder, settings, split, result)


def _check_same_training(run: Run, study: Study) -> None:
    stored_path = run.folder / SETTINGS_FILE
    if not stored_path.is_file():
        return
    stored = json.loads(stored_path.read_text())
    if "resolved" in stored:
        same = stored["resolved"] == run.settings["resolved"]
    else:  # an older record: the config path and overrides only
        config = (study.root / run.settings["config"]).resolve()
        same = stored.get("set") == run.settings["set"] and (
            Path(stored.get("config", "")).resolve() == config
        )
    if not same:
        raise StudyError(
            f"{run.folder} holds a run trained with other settings ({stored_path}); the study "
            "changed. Use another --out, or delete that folder to run it again"
        )


def claim_run(study: Study, run: Run) -> None:
    """Make the run's folder and write what it trains there (`SETTINGS_FILE`); a folder that
    holds a run trained with other settings is refused (`StudyError`), never mixed in."""
    run.folder.mkdir(parents=True, exist_ok=True)
    _check_same_training(run, study)
    (run.folder / SETTINGS_FILE).write_text(json.dumps(run.settings, indent=2))


def read_record(run: Run) -> dict:
    """The record of a run that trained and was scored."""
    metrics = json.loads(run.result.read_text())
    cost = json.loads((run.folder / "metrics.json").read_text()).get("train", {})
    return run.record(status="ok", metrics=metrics, train=cost)


def find_finished(study: Study, variant: Variant, seed: int) -> dict | None:
    """The record of this (variant, seed) if its folder holds a run that finished training
    and scoring with the study's settings; None if it did not finish (or never started).
    A folder trained with other settings is refused (`StudyError`)."""
    if not (run_dir(study, variant, seed) / SETTINGS_FILE).is_file():
        return None
    run = plan_run(study, variant, seed)
    _check_same_training(run, study)
    return read_record(run) if run.trained and run.scored else None


# ---------------------------------------------------------------- aggregating


def metric(record: dict, key: str) -> float:
    """A finished run's figure (``mIoU``, ...) as a float: NaN where it had none."""
    return _nan(record["metrics"][key])


def _nan(value) -> float:
    return math.nan if value is None else float(value)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN with one value), NaNs left out."""
    kept = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
    if kept.size == 0:
        return math.nan, math.nan
    return float(kept.mean()), float(kept.std(ddof=1)) if kept.size > 1 else math.nan


def aggregate(study: Study, records: list[dict]) -> list[dict]:
    """One row per variant with records: runs, failed seeds, mean ± std of every figure."""
    rows = []
    for variant in study.variants:
        runs = [r for r in records if r["variant"] == variant.name]
        if runs:  # else: not run (only) and nothing on disk
            rows.append(_aggregate_variant(study, variant, runs))
    return rows


def _aggregate_variant(study: Study, variant: Variant, runs: list[dict]) -> dict:
    ok = [r for r in runs if r["status"] == "ok"]
    row = {
        "variant": variant.name,
        "runs": len(ok),
        "planned": len(study.seeds),
        "failed": [r["seed"] for r in runs if r["status"] != "ok"],
        "seeds": [r["seed"] for r in ok],
    }
    for key in SUMMARY_KEYS:
        row[key] = mean_std([metric(r, key) for r in ok])
    classes = ok[0]["metrics"]["classes"] if ok else []
    row["classes"] = classes
    row["IoU"] = [mean_std([_nan(r["metrics"]["IoU"][c]) for r in ok]) for c in range(len(classes))]
    costs = [r["train"] for r in ok if r["train"]]
    row["params"] = costs[0]["params"] if costs else None
    row["seconds_per_iter"] = mean_std([c["seconds_per_iter"] for c in costs])
    row["peak_memory_mib"] = mean_std([c["peak_memory_mib"] for c in costs])
    row["memory"] = costs[0]["memory"] if costs else None
    row["device"] = costs[0]["device"] if costs else None
    return row


def results_header(study: Study, budget: dict, command: str) -> dict:
    """What ``results.md``/``results.json`` say about the study as a whole; ``done`` counts
    the runs of this invocation (the caller adds them)."""
    first = study.variants[0]
    return {
        "title": study.title,
        "command": command,
        "date": datetime.date.today().isoformat(),
        # Without CUDA every run is on the CPU (a CUDA one fails and says so).
        "machine": describe_device(study.device if torch.cuda.is_available() else "cpu"),
        "budget": budget,
        "split": study.split or _variant_config(study, first).eval.split,
        "checkpoint": study.checkpoint,
        "seeds": study.seeds,
        "planned": len(study.seeds) * len(study.selected),
        "done": 0,
    }


def _pct(pair: tuple[float, float]) -> str:
    mean, std = pair
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.2f}" + ("" if math.isnan(std) else f" ± {100 * std:.2f}")


def markdown(study: Study, rows: list[dict], records: list[dict], header: dict) -> str:
    """``results.md``: the header, a row per variant, per-class IoU, the failed runs."""
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
    lines += [_summary_line(row) for row in rows]
    lines += _class_table(rows) + _failures(records)
    return "\n".join(lines) + "\n"


def _summary_line(row: dict) -> str:
    runs = f"{row['runs']}/{row['planned']}"
    params = "-" if row["params"] is None else f"{row['params'] / 1e6:.3f}"
    spi, mem = row["seconds_per_iter"][0], row["peak_memory_mib"][0]
    return (
        f"| {row['variant']} | {runs} | "
        + " | ".join(_pct(row[key]) for key in SUMMARY_KEYS)
        + f" | {params} | {'-' if math.isnan(spi) else f'{spi:.3f}'}"
        + f" | {'-' if math.isnan(mem) else f'{mem:.0f}'} |"
    )


def _class_table(rows: list[dict]) -> list[str]:
    classes = next((row["classes"] for row in rows if row["classes"]), [])
    if not classes:
        return []
    lines = ["", "Per-class IoU (%):", ""]
    lines.append("| class | " + " | ".join(row["variant"] for row in rows) + " |")
    lines.append("|---|" + "---:|" * len(rows))
    for index, name in enumerate(classes):
        cells = [_pct(row["IoU"][index]) if row["IoU"] else "-" for row in rows]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _failures(records: list[dict]) -> list[str]:
    failed = [r for r in records if r["status"] != "ok"]
    if not failed:
        return []
    lines = ["", "Failed runs (not in the means above):", ""]
    for r in failed:
        error = r["error"].splitlines()[-1] if r["error"] else "no output"
        lines.append(f"- {r['variant']} seed {r['seed']}: exit {r['returncode']}, {error}")
        lines.append(f"  (log: {r['dir']}/compare.log)")
    return lines


def plot(study: Study, rows: list[dict], records: list[dict], path: Path) -> None:
    """mIoU and mBIoU per variant: bars with ± std, each seed a dot on its bar."""
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
        for index, row in enumerate(rows):
            seeds = [
                100 * metric(r, key)
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


def write_results(study: Study, records: list[dict], header: dict) -> list[dict]:
    """``results.md``, ``results.json`` and (once a run finished) ``results.png`` in
    ``study.out``; returns the aggregated rows."""
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


# ---------------------------------------------------------------- predictions


def prediction_grid(study: Study, records: list[dict], path: Path) -> bool:
    """The first ``num_images`` images of the split: image | truth | each variant (its first
    finished seed), as a titled PNG. False (nothing written) when no run finished."""
    from seg.data import build_dataset, build_val_transform
    from seg.data.transforms import denormalize
    from seg.engine.visualize import comparison_row, one_above_another, save_titled

    chosen: dict[str, dict] = {}
    for record in records:
        if record["status"] == "ok" and record["variant"] not in chosen:
            chosen[record["variant"]] = record
    if not chosen or study.num_images <= 0:
        return False
    columns, samples, dataset, meta = {}, [], None, {}
    for name, record in chosen.items():
        model, cfg, meta = _load_model(study, record)
        if dataset is None:
            transform = build_val_transform(meta["mean"], meta["std"])
            dataset = build_dataset(cfg.data, record["split"], transform=transform)
            samples = [dataset[i] for i in range(min(study.num_images, len(dataset)))]
        columns[name] = [_predict_labels(model, cfg, image) for image, _ in samples]
    palette = np.asarray(meta["palette"], dtype=np.uint8)
    rows = [
        comparison_row(
            denormalize(image, meta["mean"], meta["std"]),
            truth,
            [labels[index] for labels in columns.values()],
            palette,
            dataset.ignore_index,
        )
        for index, (image, truth) in enumerate(samples)
    ]
    save_titled(path, one_above_another(rows), ["image", "truth", *columns])
    return True


def _load_model(study: Study, record: dict):
    from seg.engine.checkpoint import load_for_inference

    checkpoint = Path(record["dir"]) / f"{study.checkpoint}.pt"
    overrides = (f"eval.split={record['split']}",)
    return load_for_inference(checkpoint, overrides, device=study.device or "cpu")


def _predict_labels(model, cfg: Config, image) -> np.ndarray:
    """``[3, H, W]`` normalised image -> ``[H, W]`` predicted class ids, with the config's
    eval mode."""
    import torch

    from seg.engine.inference import predict

    with torch.no_grad():
        probs = predict(
            model,
            image[None].to(next(model.parameters()).device),
            mode=cfg.eval.mode,
            crop_size=cfg.eval.crop_size,
            stride=cfg.eval.stride,
            resize=cfg.data.get("resize"),
        )
    return probs.argmax(1)[0].cpu().numpy()
