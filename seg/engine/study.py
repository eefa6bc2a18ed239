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

import contextlib
import datetime
import fcntl
import itertools
import json
import logging
import math
import os
import re
import socket
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from seg.config import Config, ConfigError, load_config, load_yaml
from seg.data import build_dataset
from seg.engine.checkpoint import atomic_write, write_text_atomic
from seg.engine.evaluator import json_ready
from seg.engine.rundir import CURVE, config_differences
from seg.engine.runtime import describe_device, reproducing_command

log = logging.getLogger("seg")
SUMMARY_KEYS = ("mIoU", "mBIoU", "aAcc", "mAcc")
DEFAULT_SEEDS = (0, 1, 2)
SETTINGS_FILE = "compare_run.json"  # in a run's folder: what it trains
LOCK_FILE = "compare.lock"  # in a run's folder: locked while a process trains or scores it
FAILED_FILE = "compare_failed.json"  # in a run's folder: why its last attempt failed
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
    "sweep",
    "reference",
    "equal_time",
)
# A run whose predictions fall in one class for at least this share of the pixels learned
# nothing but the class prior: flagged "collapsed" in the tables.
COLLAPSED_SHARE = 0.99
CURVE_FILE = CURVE  # in a run's folder: one line per validation during training


class StudyError(ValueError):
    """A study that can't run as written: the message says what to change."""


@dataclass
class Variant:
    name: str
    config: Path
    overrides: list[str] = field(default_factory=list)
    base: str | None = None  # a sweep point's or an equal-time run's study variant

    @property
    def slug(self) -> str:
        return slug(self.name)


def slug(name: str) -> str:
    """A variant's name as a folder name."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", name).strip("-") or "variant"


@dataclass(frozen=True)
class Sweep:
    """Per-variant tuning: every point of ``grid`` (the product of its value lists) trains
    at the sweep budget (``overrides``) with one seed and is scored on ``split``; each
    variant keeps the point with the best ``metric`` for its seeds at the full budget."""

    grid: dict[str, list]
    overrides: list[str] = field(default_factory=list)
    split: str = "val"
    metric: str = "mIoU"
    seed: int = 0

    def points(self) -> list[dict]:
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*self.grid.values())]


def point_overrides(point: dict) -> list[str]:
    """``{"train.lr": 0.001}`` -> ``["train.lr=0.001"]``."""
    return [f"{key}={_yaml_value(value)}" for key, value in point.items()]


def point_label(point: dict) -> str:
    return ", ".join(point_overrides(point))


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


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
    sweep: Sweep | None = None  # tune each variant on val first
    reference: str | None = None  # the variant the others are compared with (default: first)
    # Also train the others for the reference's training time: True sizes their iterations
    # from the measured seconds per iteration; ``{variant: iterations}`` fixes them (what an
    # earlier run measured), so that a rerun trains exactly the same.
    equal_time: bool | dict[str, int] = False

    def __post_init__(self) -> None:
        self.seeds = list(dict.fromkeys(self.seeds))  # each seed once, in order

    @property
    def selected(self) -> list[Variant]:
        """The variants to run (``only``); the others are only looked up."""
        return [
            v
            for v in self.variants
            if self.only is None or v.name in self.only or v.base in self.only
        ]

    @property
    def reference_name(self) -> str:
        return self.reference or self.variants[0].name


# ---------------------------------------------------------------- the study definition


def read_study(path: str | Path, root: str | Path | None = None) -> Study:
    """A study YAML: config, variants (name: [overrides] or {config, set}), seeds, set, ...

    Relative paths in the file (configs, ``out``) are read from ``root`` (default: the study
    file's folder); a config not found there is looked for beside the study file.
    """
    path = Path(path)
    try:
        raw = load_yaml(path.read_text()) or {}
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
    reference = _read_reference(path, raw.get("reference"), variants)
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
        sweep=_read_sweep(path, raw.get("sweep")),
        reference=reference,
        equal_time=_read_equal_time(path, raw.get("equal_time", False), variants, reference),
    )


def _read_sweep(path: Path, spec) -> Sweep | None:
    """``sweep: {grid: {train.lr: [...]}, set: [train.iters=150], split: val, metric: mIoU,
    seed: 0}``."""
    if spec is None:
        return None
    keys = {"grid", "set", "split", "metric", "seed"}
    if not isinstance(spec, dict) or not set(spec) <= keys or not spec.get("grid"):
        raise StudyError(
            f"{path}: 'sweep' must be a mapping with a 'grid' ({{key: [values]}}) and "
            f"optionally {sorted(keys - {'grid'})}, got {spec!r}"
        )
    grid = spec["grid"]
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise StudyError(f"{path}: sweep.grid must map keys to non-empty lists, got {grid!r}")
    return Sweep(
        grid=dict(grid),
        overrides=list(spec.get("set", [])),
        split=spec.get("split", "val"),
        metric=spec.get("metric", "mIoU"),
        seed=int(spec.get("seed", 0)),
    )


def _read_reference(path: Path, reference, variants: list[Variant]) -> str | None:
    names = [v.name for v in variants]
    if reference is not None and reference not in names:
        raise StudyError(f"{path}: reference {reference!r} is not a variant; the variants: {names}")
    return reference


def _read_equal_time(
    path: Path, spec, variants: list[Variant], reference: str | None
) -> bool | dict[str, int]:
    """``equal_time: true`` or ``{variant: iterations}`` for every variant but the reference."""
    if spec is None or isinstance(spec, bool):
        return bool(spec)
    others = [v.name for v in variants if v.name != (reference or variants[0].name)]
    if (
        not isinstance(spec, dict)
        or sorted(map(str, spec)) != sorted(others)
        or not all(isinstance(name, str) for name in spec)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in spec.values())
    ):
        raise StudyError(
            f"{path}: 'equal_time' must be true/false or map every variant but the reference "
            f"to its iterations ({others}, each a positive integer, e.g. the ones an earlier "
            f"run's equal-time table printed), got {spec!r}"
        )
    return {name: int(n) for name, n in spec.items()}


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


def check_split(study: Study) -> None:
    """StudyError, before any training, where the split the study scores is not one its data
    set knows (a misspelt --split was found only after every run had trained)."""
    cfg = _variant_config(study, study.variants[0])
    split = study.split or cfg.eval.split
    try:
        build_dataset(cfg.data, split)
    except ConfigError as error:
        raise StudyError(f"the study scores the '{split}' split: {error}") from error
    except (OSError, ValueError):
        pass  # missing or damaged data: each run says so when it starts


def scored_split(study: Study) -> str:
    """The split the study scores: ``--split``/``split:``, else its variants' eval.split
    (`check_budgets` holds them to one)."""
    return study.split or _variant_config(study, study.variants[0]).eval.split


def _check_scored_once(study: Study, variant: Variant, cfg, split: str) -> None:
    """StudyError where ``best.pt``, chosen among several validations on a split, would be
    scored on that same split (``split``): the table would report the selection, not the
    model."""
    iters, every = cfg.train.iters, cfg.train.val_interval
    if study.checkpoint == "best" and split == cfg.eval.split and 0 < every < iters:
        raise StudyError(
            f"variant {variant.name!r}: best.pt is the checkpoint that scored best on the "
            f"{split} split during training (every {every} iterations); scoring it there "
            "again reports that choice: score it on another split (--split test), or score "
            "the last checkpoint"
        )


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
        split = study.split or cfg.eval.split
        scored[variant.name] = (split, cfg.model["num_classes"])
        _check_scored_once(study, variant, cfg, split)
    if len(set(scored.values())) > 1:
        listed = ", ".join(f"{n}: {s} split, {k} classes" for n, (s, k) in scored.items())
        raise StudyError(
            f"the variants are not scored on the same data ({listed}); give them one "
            "eval.split (or --split) and the same data set"
        )
    split = next(iter(scored.values()))[0]
    if study.sweep is not None and study.sweep.split == split:
        raise StudyError(
            f"the sweep chooses each variant's settings on the {split} split, the split the "
            "study reports: tune on another one (sweep: {split: val}) so that the reported "
            "split is scored once, after every choice"
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


# ---------------------------------------------------------------- the protocol's phases


def tuning_name(variant: str, point: dict) -> str:
    """The name of ``variant``'s tuning run at a sweep ``point``: ``"lift/lift @ train.lr=0.01"``."""
    return f"{variant} @ {point_label(point)}"


def sweep_study(study: Study) -> Study:
    """The tuning runs: each variant at each sweep point, the sweep budget, one seed, scored
    on the sweep's split, in ``OUT/sweep``."""
    sweep = study.sweep
    variants = [
        Variant(
            tuning_name(variant.name, point),
            variant.config,
            [*variant.overrides, *sweep.overrides, *point_overrides(point)],
            base=variant.name,
        )
        for variant in study.variants
        for point in sweep.points()
    ]
    return replace(
        study,
        variants=variants,
        seeds=[sweep.seed],
        out=study.out / "sweep",
        split=sweep.split,
        checkpoint="last",
        sweep=None,
        reference=None,
        equal_time=False,
        title=f"{study.title}: sweep",
    )


def choose_points(study: Study, sweep_records: list[dict]) -> dict[str, dict]:
    """Each variant's best sweep point on the sweep's split: ``{variant: {"point", "score",
    "scores": [(point, score or None)]}}`` (ties: the first point of the grid).

    A variant is chosen for only once every point of its grid has a record (finished or
    failed): another ``--only`` process may still be tuning it, and a choice made from part
    of its grid could differ from the one that process makes. A selected variant whose
    every tuning run failed is a `StudyError`."""
    sweep = study.sweep
    grid = sweep.points()
    by_name = {r["variant"]: r for r in sweep_records}
    chosen = {}
    for variant in study.variants:
        found = [by_name.get(tuning_name(variant.name, point)) for point in grid]
        if None in found:
            continue  # not tuned to the end yet
        scores = [
            (point, metric(r, sweep.metric) if r["status"] == "ok" else None)
            for point, r in zip(grid, found)
        ]
        valid = [(p, v) for p, v in scores if v is not None and not math.isnan(v)]
        if not valid and variant in study.selected:
            raise StudyError(
                f"every sweep run of {variant.name!r} failed; see {study.out / 'sweep'}"
            )
        if valid:
            best = max(valid, key=lambda item: item[1])  # max keeps the first of equals
            chosen[variant.name] = {"point": best[0], "score": best[1], "scores": scores}
    return chosen


def refresh_records(study: Study, records: list[dict]) -> list[dict]:
    """``records`` of this process, with the finished runs it has no record of looked up
    again now (another process sharing the study may have finished them since), seed by
    seed in the study's variant order. Another process's run that can't be read (its
    folder holds other settings, its record is being written) is left out with a warning:
    it is that process's to run, and never stops this one."""
    mine = {(r["variant"], r["seed"]): r for r in records}
    found = []
    for seed in study.seeds:
        for variant in study.variants:
            record = mine.get((variant.name, seed))
            if record is None:  # a run this process has not reached or left to another
                try:
                    record = find_finished(study, variant, seed)
                except (StudyError, OSError, ValueError) as error:  # JSONDecodeError: Value
                    log.warning("%s, seed %s left out of the tables: %s", variant.name, seed, error)
                    record = None
            if record is not None:
                found.append(record)
    return found


def final_study(study: Study, chosen: dict[str, dict]) -> Study:
    """The seeds at the full budget, each variant with its chosen sweep point. A variant
    without a choice yet (another ``--only`` process is still tuning it) is left out."""
    variants = [
        replace(v, overrides=[*v.overrides, *point_overrides(chosen[v.name]["point"])])
        for v in study.variants
        if v.name in chosen
    ]
    return replace(study, variants=variants)


def equal_time_study(study: Study, records: list[dict]) -> Study | None:
    """Every other variant trained for the reference's training time: ``train.iters`` scaled
    by the ratio of their mean seconds per iteration in ``records`` (the final runs), or the
    iterations the study file fixes (``equal_time: {variant: iterations}``), in
    ``OUT/equal_time``. Measured: None until every variant has a record for every seed
    (finished or failed): the ratios are those of all the seeds, the same in every
    ``--only`` process (one that finished its own seeds first would otherwise size another's
    runs from part of them). Fixed: as soon as every other variant is in ``study`` (with
    a sweep, once each has its tuning choice), whatever its seeds have done."""
    if isinstance(study.equal_time, dict):
        iters = study.equal_time
        if study.reference_name in iters or not set(iters) <= {v.name for v in study.variants}:
            return None
    else:
        iters = _equal_time_iterations(study, records)
        if iters is None:
            return None
    variants = [
        Variant(
            f"{v.name} (equal time)",
            v.config,
            [*v.overrides, f"train.iters={iters[v.name]}"],
            base=v.name,
        )
        for v in study.variants
        if v.name != study.reference_name
    ]
    return replace(
        study,
        variants=variants,
        out=study.out / "equal_time",
        sweep=None,
        reference=None,
        equal_time=False,
        title=f"{study.title}: equal training time",
    )


def _equal_time_iterations(study: Study, records: list[dict]) -> dict[str, int] | None:
    """Each variant's iterations in the reference's training time, from the seconds per
    iteration its runs measured; None while a seed has no record."""
    budget = check_budgets(study)
    for variant in study.variants:
        if len({r["seed"] for r in records if r["variant"] == variant.name}) < len(study.seeds):
            return None
    seconds = {
        v.name: mean_std(
            [r["train"]["seconds_per_iter"] for r in records if _ok(r, v.name) and r["train"]]
        )[0]
        for v in study.variants
    }
    if study.reference_name not in seconds or any(math.isnan(v) for v in seconds.values()):
        return None
    reference = seconds[study.reference_name]
    return {name: max(1, round(budget["iters"] * reference / seconds[name])) for name in seconds}


def _ok(record: dict, name: str) -> bool:
    return record["status"] == "ok" and record["variant"] == name


def iterations_of(variant: Variant) -> int | None:
    """The ``train.iters`` a variant's own overrides set (the last one), if any."""
    values = [o.split("=", 1)[1] for o in variant.overrides if o.startswith("train.iters=")]
    return int(values[-1]) if values else None


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


def relative_to(path: str | Path, root: Path) -> str:
    """``path`` relative to the study's ``root`` when it lies inside it (records name files
    so that another clone finds them), else as given."""
    where, root = Path(path).resolve(), root.resolve()
    return str(where.relative_to(root)) if where.is_relative_to(root) else str(path)


@dataclass(frozen=True)
class Run:
    """One (variant, seed) of a study: its folder, what it trains, the file that scores it."""

    variant: Variant
    seed: int
    folder: Path
    settings: dict
    split: str
    result: Path  # metrics.json of the scoring: the trainer's own, or an eval_SPLIT_CKPT one
    root: Path = Path(".")  # the study's root: records name the folder relative to it

    @property
    def trained(self) -> bool:
        return (self.folder / "metrics.json").is_file()

    @property
    def scored(self) -> bool:
        return self.result.is_file()

    def relative(self, path: str | Path) -> str:
        return relative_to(path, self.root)

    def record(self, **outcome) -> dict:
        """The run's record with ``outcome`` (status and its figures or error) added."""
        who = {"variant": self.variant.name, "seed": self.seed, "dir": self.relative(self.folder)}
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
    return Run(variant, seed, folder, settings, split, result, study.root)


def _check_same_training(run: Run, study: Study) -> None:
    stored_path = run.folder / SETTINGS_FILE
    if not stored_path.is_file():
        return
    stored = _read_json(stored_path, run)
    if "resolved" in stored:
        same = not config_differences(stored["resolved"], run.settings["resolved"])
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


def _read_json(path: Path, run: Run) -> dict:
    """``path``'s JSON object; `StudyError` naming the file and the fix where it is damaged
    (a disk that filled, a hand edit)."""
    try:
        value = json.loads(path.read_text())
    except ValueError as error:
        value = error
    if not isinstance(value, dict):
        raise StudyError(
            f"{path} is not a JSON object ({value}): delete it, or the run folder "
            f"{run.folder}, to run that part of {run.variant.name}, seed {run.seed} again"
        )
    return value


def claim_run(study: Study, run: Run) -> None:
    """Make the run's folder and write what it trains there (`SETTINGS_FILE`); a folder that
    holds a run trained with other settings is refused (`StudyError`), never mixed in."""
    run.folder.mkdir(parents=True, exist_ok=True)
    _check_same_training(run, study)
    # atomic: another process sharing the study may be reading it
    write_text_atomic(run.folder / SETTINGS_FILE, json.dumps(run.settings, indent=2))


def write_failure(run: Run, record: dict) -> dict:
    """Keep a failed run's record in its folder (`FAILED_FILE`), for the other processes
    sharing the study (`read_failure`); returns ``record``."""
    write_text_atomic(run.folder / FAILED_FILE, json.dumps(json_ready(record), indent=2))
    return record


def read_failure(run: Run, since: float | None = None) -> dict | None:
    """The record `write_failure` kept for ``run`` (written at ``since`` or later, a time
    from ``time.time()``), or None."""
    path = run.folder / FAILED_FILE
    try:
        if since is not None and path.stat().st_mtime < since:
            return None
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def hold_run(folder: Path) -> Iterator[int | None]:
    """Hold a run's folder while this process trains and scores it: yields the descriptor
    that holds it, or None when another process holds it (it is running that run now; come
    back later). The hold is an exclusive ``flock`` on `LOCK_FILE`, which the system drops
    when the last process with the descriptor ends, however it ends: a killed process leaves
    nothing stale behind. Pass the descriptor to the processes that do the work
    (``subprocess.Popen(pass_fds=...)``): if the holder dies, the run stays held until its
    trainer has stopped too. So any number of processes can share one study (``--only`` or
    not) and never train one run twice at once."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        os.ftruncate(fd, 0)  # who holds it, for a person who looks
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield fd
    finally:
        os.close(fd)  # releases the lock (unless a child process still has it)


def is_held(folder: Path) -> bool:
    """Whether a process holds the run in ``folder`` now (`hold_run`); creates nothing."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def held_runs(study: Study) -> list[tuple[Variant, int]]:
    """The (variant, seed) runs of ``study`` that some process is running now."""
    return [
        (variant, seed)
        for seed in study.seeds
        for variant in study.variants
        if is_held(run_dir(study, variant, seed))
    ]


def read_record(run: Run) -> dict:
    """The record of a run that trained and was scored."""
    metrics = _read_json(run.result, run)
    if isinstance(metrics.get("checkpoint"), str):  # tools/eval.py names what it scored
        scored = Path(metrics["checkpoint"])
        if scored.parent.parts[-2:] == run.folder.parts[-2:]:  # this run's, scored in another
            scored = run.folder / scored.name  # clone or worktree of the repository
        metrics["checkpoint"] = run.relative(scored)
    cost = _read_json(run.folder / "metrics.json", run).get("train", {})
    return run.record(
        status="ok",
        metrics=metrics,
        train=cost,
        collapsed=is_collapsed(metrics),
        curve=read_curve(run.folder),
    )


def is_collapsed(metrics: dict) -> bool:
    """Whether one class holds `COLLAPSED_SHARE` of the predicted pixels (from the confusion
    matrix's columns): a model that learned the class prior and nothing else."""
    matrix = np.asarray(metrics.get("confusion_matrix") or [[0]], dtype=np.float64)
    predicted = matrix.sum(axis=0)
    total = predicted.sum()
    return bool(total > 0 and predicted.max() / total >= COLLAPSED_SHARE)


def read_curve(folder: Path) -> list[dict]:
    """The validations a run made while training (`CURVE_FILE`): ``[{"iteration",
    "seconds" (training time so far), "mIoU", "mBIoU"}]`` by iteration; a validation
    repeated after a resume counts once (the later one), a line a killed write cut short
    not at all."""
    path = Path(folder) / CURVE_FILE
    if not path.is_file():
        return []
    points = {}
    for line in path.read_text().splitlines():
        try:
            point = json.loads(line)
        except json.JSONDecodeError:  # blank, or cut short by a killed append
            continue
        points[point["iteration"]] = point
    return [points[k] for k in sorted(points)]


def find_finished(study: Study, variant: Variant, seed: int) -> dict | None:
    """The record of this (variant, seed) if its folder holds a run that finished training
    and scoring with the study's settings; None if it did not finish (or never started, or
    failed: `read_failure`). A folder trained with other settings is refused (`StudyError`)."""
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


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its ``confidence`` interval (t distribution, n - 1
    degrees of freedom; NaN with fewer than two values), NaNs left out."""
    from scipy import stats

    kept = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
    if kept.size == 0:
        return math.nan, math.nan
    if kept.size < 2:
        return float(kept.mean()), math.nan
    scale = kept.std(ddof=1) / math.sqrt(kept.size)
    return float(kept.mean()), float(stats.t.ppf((1 + confidence) / 2, kept.size - 1) * scale)


def paired_differences(
    reference: str, records: list[dict], others: Sequence[str], against: list[dict] | None = None
) -> list[dict]:
    """``reference`` minus each of ``others``, seed by seed (seeds both finished), for mIoU
    and mBIoU: mean, 95 % interval, and a verdict per metric that claims a difference only
    where that metric's interval excludes 0 (``verdict``: mIoU's, ``verdicts``: both).
    ``against``: the records the others come from (default
    ``records``; the equal-time runs compare with the reference's own runs)."""
    mine = {r["seed"]: r for r in records if _ok(r, reference)}
    rows = []
    for name in others:
        theirs = {r["seed"]: r for r in (against or records) if _ok(r, name)}
        seeds = sorted(set(mine) & set(theirs))
        row = {"variant": name, "reference": reference, "seeds": seeds}
        for key in ("mIoU", "mBIoU"):
            diffs = [metric(mine[s], key) - metric(theirs[s], key) for s in seeds]
            mean, half = mean_ci(diffs)
            n = sum(not math.isnan(diff) for diff in diffs)  # the seeds with this figure
            row[key] = {"mean": mean, "low": mean - half, "high": mean + half, "n": n}
        row["verdicts"] = {key: _verdict(row[key], reference, name) for key in ("mIoU", "mBIoU")}
        row["verdict"] = row["verdicts"]["mIoU"]
        rows.append(row)
    return rows


def _verdict(diff: dict, reference: str, other: str) -> str:
    if diff["n"] < 2 or math.isnan(diff["low"]):
        return "too few seeds for an interval"
    if diff["low"] > 0:
        return f"{reference} ahead"
    if diff["high"] < 0:
        return f"{other} ahead"
    return "no significant difference"


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
        row[f"{key}_ci"] = mean_ci([metric(r, key) for r in ok])[1]
    row["collapsed"] = [r["seed"] for r in ok if r.get("collapsed")]
    classes = ok[0]["metrics"]["classes"] if ok else []
    row["classes"] = classes
    per_class = [[_nan(r["metrics"]["IoU"][c]) for r in ok] for c in range(len(classes))]
    row["IoU"] = [mean_std(values) for values in per_class]
    row["IoU_ci"] = [mean_ci(values)[1] for values in per_class]
    costs = [r["train"] for r in ok if r["train"]]
    row["params"] = costs[0]["params"] if costs else None
    row["seconds_per_iter"] = mean_std([c["seconds_per_iter"] for c in costs])
    row["peak_memory_mib"] = mean_std([c["peak_memory_mib"] for c in costs])
    row["memory"] = costs[0]["memory"] if costs else None
    row["device"] = costs[0]["device"] if costs else None
    return row


# How the runs ran: a process that runs none (``--tables``) keeps what results.json says.
PROVENANCE_KEYS = ("command", "threads", "date", "machine")


def results_header(study: Study, budget: dict, command: str) -> dict:
    """What ``results.md``/``results.json`` say about the study as a whole; ``done`` counts
    the runs of this invocation (the caller adds them; the tables count the whole study's,
    `study_progress`). A study that runs no variant
    (``only=[]``: the tables are only rewritten) keeps the command, threads, date and machine
    of the existing ``results.json``: they describe the runs, not the process that reads
    them (another thread count or ``SEG_OPS_*`` setting there would misstate the runs)."""
    header = {
        "title": study.title,
        "command": reproducing_command(command),
        "threads": torch.get_num_threads(),
        "date": datetime.date.today().isoformat(),
        # Without CUDA every run is on the CPU (a CUDA one fails and says so).
        "machine": describe_device(study.device if torch.cuda.is_available() else "cpu"),
        "budget": budget,
        "split": scored_split(study),
        "checkpoint": study.checkpoint,
        "seeds": study.seeds,
        "planned": len(study.seeds) * len(study.selected),
        "done": 0,
    }
    if not study.selected:
        recorded = _recorded_results(study.out)
        header.update({key: recorded[key] for key in PROVENANCE_KEYS if key in recorded})
    return header


def _recorded_results(out: Path) -> dict:
    """``OUT/results.json`` as an earlier process wrote it; {} when there is none yet or it
    cannot be read (nothing to keep from it)."""
    try:
        recorded = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _pct(pair: tuple[float, float]) -> str:
    mean, spread = pair
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.2f}" + ("" if math.isnan(spread) else f" ± {100 * spread:.2f}")


def markdown(study: Study, rows: list[dict], records: list[dict], header: dict, extra=None) -> str:
    """``results.md``: how it was run, a row per variant (mean ± 95 % interval), the paired
    differences with the reference, per-class IoU, collapsed and failed runs, and
    (``extra``, from `write_results`) the sweep and the equal-time comparison."""
    memory = {"cpu_max_rss": "peak RSS, MiB", "cuda_max_allocated": "peak CUDA MiB"}
    kind = memory.get(next((r["memory"] for r in rows if r["memory"]), ""), "peak MiB")
    lines = [f"# {study.title}", "", *_header_lines(study, header, records), ""]
    lines += [
        f"| variant | runs | collapsed | mIoU | mBIoU | aAcc | mAcc | params (M) | s/iter | {kind} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [_summary_line(row) for row in rows]
    others = [row["variant"] for row in rows if row["variant"] != study.reference_name]
    compared = any(row["variant"] == study.reference_name for row in rows) and others
    if compared and len(study.seeds) > 1:  # one seed (a sweep): no interval to give
        differences = paired_differences(study.reference_name, records, others)
        lines += _differences_table(differences, "Paired differences, per seed")
    lines += _class_table(rows) + _collapsed(records) + _failures(records)
    extra = extra or {}
    if extra.get("sweep"):
        lines += _sweep_table(study, extra["sweep"], extra.get("chosen", {}))
    if extra.get("equal_time"):
        lines += _equal_time_table(study, records, *extra["equal_time"])
    return "\n".join(lines) + "\n"


def _header_lines(study: Study, header: dict, records: list[dict]) -> list[str]:
    budget = header["budget"]
    lines = [
        f"- command: `{header['command']}`",
        f"- date: {header['date']}; machine: {header['machine']}",
        f"- budget: {budget['iters']} iterations x batch {budget['batch_size']}, seeds "
        f"{' '.join(map(str, study.seeds))}, scored once on the {header['split']} split with "
        f"the {study.checkpoint} checkpoint",
    ]
    if study.sweep is not None:
        sweep = study.sweep
        grid = "; ".join(f"{k} in {v}" for k, v in sweep.grid.items())
        lines.append(
            f"- tuning: each variant's {grid}, trained with {' '.join(sweep.overrides) or 'the same budget'} "
            f"(seed {sweep.seed}), the best {sweep.metric} on the {sweep.split} split kept"
        )
    lines += [
        "- figures in %: mean ± half-width of the 95 % confidence interval (t distribution) "
        "over the seeds that finished; a collapsed run (one class in >= "
        f"{100 * COLLAPSED_SHARE:.0f} % of the predicted pixels) is counted and listed",
    ]
    progress = study_progress(study, records)
    if progress["done"] < progress["planned"]:
        failed = f" ({progress['failed']} failed)" if progress["failed"] else ""
        lines.append(
            f"- **incomplete**: {progress['done']} of {progress['planned']} runs finished{failed}"
        )
    return lines


def study_progress(study: Study, records: list[dict]) -> dict:
    """How far the whole study is, whichever processes ran it: ``planned`` runs (every
    variant, every seed), ``done`` (finished) and ``failed`` among ``records``."""
    names = {v.name for v in study.variants}
    runs = {(r["variant"], r["seed"]): r["status"] for r in records if r["variant"] in names}
    done = sum(status == "ok" for status in runs.values())
    planned = len(study.variants) * len(study.seeds)
    return {"planned": planned, "done": done, "failed": len(runs) - done}


def _summary_line(row: dict) -> str:
    runs = f"{row['runs']}/{row['planned']}"
    params = "-" if row["params"] is None else f"{row['params'] / 1e6:.3f}"
    spi, mem = row["seconds_per_iter"][0], row["peak_memory_mib"][0]
    figures = [_pct((row[key][0], row.get(f"{key}_ci", math.nan))) for key in SUMMARY_KEYS]
    return (
        f"| {row['variant']} | {runs} | {len(row.get('collapsed', []))} | "
        + " | ".join(figures)
        + f" | {params} | {'-' if math.isnan(spi) else f'{spi:.3f}'}"
        + f" | {'-' if math.isnan(mem) else f'{mem:.0f}'} |"
    )


def _interval(diff: dict) -> str:
    if math.isnan(diff["mean"]):
        return "-"
    if math.isnan(diff["low"]):
        return f"{100 * diff['mean']:+.2f}"
    return f"{100 * diff['mean']:+.2f} [{100 * diff['low']:+.2f}, {100 * diff['high']:+.2f}]"


def _differences_table(differences: list[dict], title: str) -> list[str]:
    if not differences:
        return []
    reference = differences[0]["reference"]
    lines = [
        "",
        f"{title}: {reference} minus each variant, in points, mean [95 % interval]; a "
        "difference is claimed only where the interval excludes 0:",
        "",
        "| variant | seeds | ΔmIoU | verdict (mIoU) | ΔmBIoU | verdict (mBIoU) |",
        "|---|---:|---:|---|---:|---|",
    ]
    for row in differences:
        lines.append(
            f"| {row['variant']} | {len(row['seeds'])} | {_interval(row['mIoU'])} "
            f"| {row['verdicts']['mIoU']} | {_interval(row['mBIoU'])} "
            f"| {row['verdicts']['mBIoU']} |"
        )
    return lines


def _collapsed(records: list[dict]) -> list[str]:
    collapsed = [r for r in records if r["status"] == "ok" and r.get("collapsed")]
    if not collapsed:
        return []
    lines = ["", "Collapsed runs (predict one class almost everywhere; in the means above):", ""]
    lines += [f"- {r['variant']} seed {r['seed']} ({r['dir']})" for r in collapsed]
    return lines


def _sweep_table(study: Study, sweep_records: list[dict], chosen: dict) -> list[str]:
    sweep = study.sweep
    points = sweep.points()
    labels = [point_label(p) for p in points]
    lines = [
        "",
        f"Tuning ({sweep.metric} in % on the {sweep.split} split, seed {sweep.seed}, "
        f"{' '.join(sweep.overrides) or 'full budget'}; **bold**: kept):",
        "",
        "| variant | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(points),
    ]
    for variant in study.variants:
        scores = dict(
            (point_label(p), v) for p, v in chosen.get(variant.name, {}).get("scores", [])
        )
        best = point_label(chosen[variant.name]["point"]) if variant.name in chosen else None
        cells = []
        for label in labels:
            value = scores.get(label)
            text = "-" if value is None or math.isnan(value) else f"{100 * value:.2f}"
            cells.append(f"**{text}**" if label == best else text)
        lines.append(f"| {variant.name} | " + " | ".join(cells) + " |")
    return lines


def _equal_time_table(study: Study, records: list[dict], timed: Study, timed_records) -> list[str]:
    rows = aggregate(timed, timed_records)
    if isinstance(study.equal_time, dict):
        sized = "the iterations the study file fixes (equal_time)"
    else:
        sized = "its iterations scaled by the ratio of seconds per iteration measured above"
    lines = [
        "",
        f"Equal training time: each variant trained for {study.reference_name}'s training "
        f"time ({sized}), scored on the same split:",
        "",
        "| variant | iterations | runs | collapsed | mIoU | mBIoU | aAcc | mAcc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_name = {v.name: v for v in timed.variants}
    for row in rows:
        figures = [_pct((row[key][0], row.get(f"{key}_ci", math.nan))) for key in SUMMARY_KEYS]
        iters = iterations_of(by_name[row["variant"]])
        lines.append(
            f"| {row['variant']} | {iters} | {row['runs']}/{row['planned']} | "
            f"{len(row['collapsed'])} | " + " | ".join(figures) + " |"
        )
    if not isinstance(study.equal_time, dict):
        counts = ", ".join(f"{v.base}: {iterations_of(v)}" for v in timed.variants)
        lines += [
            "",
            "The seconds per iteration depend on the machine and its load, so a rerun "
            "measures other iterations; to train exactly these again, fix them in the study "
            f"file: `equal_time: {{{counts}}}`.",
        ]
    differences = paired_differences(
        study.reference_name, records, [v.name for v in timed.variants], timed_records
    )
    return lines + _differences_table(differences, "At equal time, per seed")


def _class_table(rows: list[dict]) -> list[str]:
    classes = next((row["classes"] for row in rows if row["classes"]), [])
    if not classes:
        return []
    lines = ["", "Per-class IoU (%), mean ± half-width of the 95 % interval:", ""]
    lines.append("| class | " + " | ".join(row["variant"] for row in rows) + " |")
    lines.append("|---|" + "---:|" * len(rows))
    for index, name in enumerate(classes):
        cells = [
            _pct((row["IoU"][index][0], row["IoU_ci"][index])) if row["IoU"] else "-"
            for row in rows
        ]
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


TITLE_SIZE = 10  # points


def _fitted(fig, text: str) -> str:
    """``text`` broken into lines that fit ``fig``'s width at TITLE_SIZE (a study's title is
    often wider than its plots): an average character is about half the font size wide."""
    chars = int(0.9 * fig.get_size_inches()[0] * 72 / (0.55 * TITLE_SIZE))
    return textwrap.fill(text, max(chars, 20), break_on_hyphens=False)


def plot(study: Study, rows: list[dict], records: list[dict], path: Path) -> None:
    """mIoU and mBIoU per variant: bars with the 95 % interval, each seed a dot on its bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["variant"] for row in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 4))
    for offset, key in ((-0.2, "mIoU"), (0.2, "mBIoU")):
        means = [100 * row[key][0] for row in rows]
        halves = [row.get(f"{key}_ci", math.nan) for row in rows]
        halves = [0 if math.isnan(h) else 100 * h for h in halves]
        ax.bar(x + offset, means, 0.4, yerr=halves, capsize=3, label=key)
        for index, row in enumerate(rows):
            seeds = [
                100 * metric(r, key)
                for r in records
                if r["variant"] == row["variant"] and r["status"] == "ok"
            ]
            ax.plot([x[index] + offset] * len(seeds), seeds, "k.", markersize=4)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_title(
        _fitted(fig, f"{study.title}: mean and 95 % interval over seeds"), fontsize=TITLE_SIZE
    )
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path, dpi=120)
    plt.close(fig)


def _refuse_to_drop_runs(
    study: Study, records: list[dict], what: str = "nothing was rewritten"
) -> None:
    """StudyError where the tables would lose a finished run ``OUT/results.json`` lists
    and ``records`` lacks: rewriting the tables only (``only=[]``), any such run (its
    folder gone, or holding other settings); otherwise one whose folder is gone (it cannot
    be tabled again), or one this process ran again and saw fail (on the same split and
    checkpoint). A run this process has still to run, or whose folder is there (another
    process's, which this one has not tabled yet), is not lost."""
    out = study.out
    recorded = _recorded_results(out)
    found = {(r["variant"], r["seed"]) for r in records if r["status"] == "ok"}
    failed = {(r["variant"], r["seed"]) for r in records if r["status"] != "ok"}
    mine = {(v.name, seed) for v in study.selected for seed in study.seeds}
    lost = []
    for key in _finished(recorded):
        if key in found:
            continue
        if not study.selected or (key in failed and _same_scoring(study, recorded)):
            lost.append(key)
        elif key not in mine and not _run_folder(study, *key).is_dir():
            lost.append(key)
    if lost:
        raise _lost_runs(out, lost, what)


def _finished(recorded: dict) -> list[tuple]:
    """(variant, seed) of each finished run a ``results.json`` lists."""
    runs = recorded.get("runs") or []
    return [
        (r.get("variant"), r.get("seed"))
        for r in runs
        if isinstance(r, dict) and r.get("status") == "ok"
    ]


def _run_folder(study: Study, name, seed) -> Path:
    """`run_dir` of a run known by its name only (from a ``results.json``)."""
    return study.out / "runs" / slug(str(name)) / f"seed{seed}"


def _lost_runs(out: Path, lost: list[tuple], what: str) -> StudyError:
    names = sorted(f"{variant} seed {seed}" for variant, seed in lost)
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return StudyError(
        f"{out / 'results.json'} lists {len(names)} finished run(s) the new tables would "
        f"lose ({shown}): their folders are not under {out / 'runs'} with the study's "
        f"settings, or they failed when run again; so {what}. Put the run folders back, "
        "run the whole study (without --only/--tables) to train them again, or give "
        "another --out"
    )


def _same_scoring(study: Study, recorded: dict) -> bool:
    """Whether ``recorded`` (a ``results.json``) scored the split and checkpoint ``study``
    scores."""
    scored = (recorded.get("split"), recorded.get("checkpoint"))
    return scored == (scored_split(study), study.checkpoint)


def check_recorded_runs_are_here(study: Study) -> None:
    """Before training: StudyError where ``OUT/results.json`` lists a finished run of a
    variant or seed this process does not run, and its run folder is gone (a clean clone
    holds the tables only): the tables written after the first run would drop it."""
    if study.selected:  # (--tables checks once it has found the runs)
        _refuse_to_drop_runs(study, [], "nothing was trained")
        if study.sweep is not None:  # the tuning phase's own tables
            _refuse_to_drop_runs(sweep_study(study), [], "nothing was trained")


def write_results(
    study: Study, records: list[dict], header: dict, extra: dict | None = None
) -> list[dict]:
    """``results.md``, ``results.json``, ``results.png`` and ``curves.png`` (once a run
    finished) and ``sweep.png`` (with a sweep) in ``study.out``; returns the aggregated
    rows. ``extra``: ``{"sweep": records, "chosen": choose_points(...), "equal_time":
    (study, records)}``, what the full protocol adds. Refuses (`StudyError`) to drop a
    finished run that the existing ``results.json`` lists (`_refuse_to_drop_runs`)."""
    extra = extra or {}
    _refuse_to_drop_runs(study, records)
    rows = aggregate(study, records)
    # atomic: processes sharing the study write these after each of their runs
    write_text_atomic(study.out / "results.md", markdown(study, rows, records, header, extra))
    payload = {**header, **study_progress(study, records), "variants": rows, "runs": records}
    others = [row["variant"] for row in rows if row["variant"] != study.reference_name]
    payload["differences"] = paired_differences(study.reference_name, records, others)
    if extra.get("sweep"):
        payload["sweep"] = {"runs": extra["sweep"], "chosen": extra.get("chosen", {})}
    if extra.get("equal_time"):
        timed, timed_records = extra["equal_time"]
        payload["equal_time"] = {
            "variants": aggregate(timed, timed_records),
            "runs": timed_records,
            "differences": paired_differences(
                study.reference_name, records, [v.name for v in timed.variants], timed_records
            ),
        }
    write_text_atomic(
        study.out / "results.json", json.dumps(json_ready(payload), indent=2, allow_nan=False)
    )
    if any(row["runs"] for row in rows):
        plot(study, rows, records, study.out / "results.png")
    if any(r.get("curve") for r in records):
        plot_curves(study, records, study.out / "curves.png")
    if any(row["runs"] and row["classes"] for row in rows):
        plot_per_class(study, rows, study.out / "per_class.png")
    if extra.get("chosen") and study.sweep is not None:
        plot_sweep(study, extra["chosen"], study.out / "sweep.png")
    return rows


def plot_curves(study: Study, records: list[dict], path: Path) -> None:
    """Validation mIoU during training against iterations and against training seconds:
    a thin line per run, a thick one per variant (the mean over its seeds)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, variant in enumerate(study.variants):
        runs = [r["curve"] for r in records if _ok(r, variant.name) and r.get("curve")]
        if not runs:
            continue
        colour = colours[index % len(colours)]
        for curve in runs:
            for ax, x in zip(axes, ("iteration", "seconds")):
                ax.plot(
                    [p[x] for p in curve],
                    [100 * p["mIoU"] for p in curve],
                    color=colour,
                    alpha=0.3,
                    lw=0.8,
                )
        common = sorted(set.intersection(*(set(p["iteration"] for p in c) for c in runs)))
        if common:
            at = [{p["iteration"]: p for p in c} for c in runs]
            mean = [np.mean([100 * a[i]["mIoU"] for a in at]) for i in common]
            seconds = [np.mean([a[i]["seconds"] for a in at]) for i in common]
            axes[0].plot(common, mean, color=colour, lw=2, label=variant.name)
            axes[1].plot(seconds, mean, color=colour, lw=2, label=variant.name)
    axes[0].set_xlabel("iteration")
    axes[1].set_xlabel("training time (s, validation excluded)")
    for ax in axes:
        ax.set_ylabel("validation mIoU (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        _fitted(fig, f"{study.title}: learning curves (thin: each seed)"), fontsize=TITLE_SIZE
    )
    fig.tight_layout()
    _save_figure(fig, path, dpi=110)
    plt.close(fig)


GROUPED_BARS_MAX = 60  # bars in one grouped chart; more (a sweep, many classes): a heat map


def plot_per_class(study: Study, rows: list[dict], path: Path) -> None:
    """Per-class IoU of every variant in one chart: a group of bars per class (the mean
    over seeds, with its 95 % interval), or a heat map (variants x classes) where that many
    bars would not be readable (a sweep's many points, ADE20K's 150 classes)."""
    plt = _pyplot()
    rows = [
        {  # None (JSON): NaN
            **row,
            "IoU": [(_nan(m), _nan(sd)) for m, sd in row["IoU"]],
            "IoU_ci": [_nan(half) for half in row.get("IoU_ci") or [None] * len(row["IoU"])],
        }
        for row in rows
        if row["runs"] and row["classes"]
    ]
    classes = rows[0]["classes"]
    title = f"{study.title}: per-class IoU, mean and 95 % interval over seeds"
    if len(classes) * len(rows) > GROUPED_BARS_MAX:
        _per_class_heat_map(plt, rows, classes, title, path)
        return
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(classes) * len(rows) + 2), 4))
    x = np.arange(len(classes))
    for index, row in enumerate(rows):
        means = [100 * m if not math.isnan(m) else 0.0 for m, _ in row["IoU"]]
        halves = [0.0 if math.isnan(half) else 100 * half for half in row["IoU_ci"]]
        ax.bar(x + (index - (len(rows) - 1) / 2) * width, means, width, yerr=halves, capsize=2,
               label=row["variant"])  # fmt: skip
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_title(_fitted(fig, title), fontsize=TITLE_SIZE)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path, dpi=110)
    plt.close(fig)


def _per_class_heat_map(plt, rows: list[dict], classes: list[str], title: str, path: Path):
    """Mean IoU (%) per variant (row) and class (column), the values written in the cells
    while they stay legible; at most 30 inches wide and tall."""
    values = np.array([[100 * m for m, _ in row["IoU"]] for row in rows], dtype=np.float64)
    size = (min(30.0, 0.55 * len(classes) + 4), min(30.0, 0.3 * len(rows) + 2))
    fig, ax = plt.subplots(figsize=size)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=100,
                      aspect="auto")  # fmt: skip
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [row["variant"] for row in rows], fontsize=7)
    if len(classes) <= 40 and len(rows) <= 60:
        for (i, j), value in np.ndenumerate(values):
            if not math.isnan(value):
                colour = "white" if value < 50 else "black"
                ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(image, ax=ax, label="IoU (%)", fraction=0.03)
    # Over the whole figure: the variants' names shift the axes to the right.
    fig.suptitle(_fitted(fig, title.replace(", mean ± std over seeds", ", mean over seeds")),
                 fontsize=TITLE_SIZE)  # fmt: skip
    fig.tight_layout()
    _save_figure(fig, path, dpi=110)
    plt.close(fig)


def plot_sweep(study: Study, chosen: dict, path: Path) -> None:
    """The tuning metric at each sweep point, a line per variant (log x for a single
    numeric key such as the learning rate)."""
    plt = _pyplot()
    sweep = study.sweep
    points = sweep.points()
    single = len(sweep.grid) == 1 and all(
        isinstance(v, int | float) for v in next(iter(sweep.grid.values()))
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant in study.variants:
        scores = {point_label(p): v for p, v in chosen.get(variant.name, {}).get("scores", [])}
        values = [scores.get(point_label(p)) for p in points]
        ys = [math.nan if v is None else 100 * v for v in values]
        xs = [next(iter(p.values())) for p in points] if single else list(range(len(points)))
        ax.plot(xs, ys, "o-", label=variant.name)
    if single:
        ax.set_xscale("log")
        ax.set_xlabel(next(iter(sweep.grid)))
    else:
        ax.set_xticks(range(len(points)), [point_label(p) for p in points], rotation=30, ha="right")
    ax.set_ylabel(f"{sweep.metric} (%) on {sweep.split}")
    ax.set_title(_fitted(fig, f"{study.title}: tuning"), fontsize=TITLE_SIZE)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, path, dpi=110)
    plt.close(fig)


def _save_figure(fig, path: Path, dpi: int) -> None:
    atomic_write(path, lambda handle: fig.savefig(handle, dpi=dpi, format="png"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------- predictions


def first_finished(records: list[dict]) -> dict[str, dict]:
    """Each variant's first finished record (records are in seed order): the run whose
    predictions predictions.png shows."""
    chosen: dict[str, dict] = {}
    for record in records:
        if record["status"] == "ok" and record["variant"] not in chosen:
            chosen[record["variant"]] = record
    return chosen


def prediction_grid(
    study: Study,
    records: list[dict],
    path: Path,
    checkpoints: dict[str, Path] | None = None,
    titles: dict[str, str] | None = None,
) -> bool:
    """The first ``num_images`` images of the split: image | truth | each variant (its first
    finished seed), as a titled PNG. False (nothing written) when no run finished.
    ``checkpoints``: a variant's weights from elsewhere than its run folder (a retrained
    copy), ``titles``: a column's title other than the variant's name."""
    from seg.data import build_dataset, build_val_transform
    from seg.data.transforms import denormalize
    from seg.engine.visualize import comparison_row, one_above_another, save_titled

    chosen = first_finished(records)
    if not chosen or study.num_images <= 0:
        return False
    checkpoints, titles = checkpoints or {}, titles or {}
    columns, samples, dataset, meta = {}, [], None, {}
    for name, record in chosen.items():
        model, cfg, meta = _load_model(study, record, checkpoints.get(name))
        if dataset is None:
            transform = build_val_transform(meta["mean"], meta["std"])
            dataset = build_dataset(cfg.data, record["split"], transform=transform)
            samples = [dataset[i] for i in range(min(study.num_images, len(dataset)))]
        columns[titles.get(name, name)] = [_predict_labels(model, cfg, i) for i, _ in samples]
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
    grid, titles = one_above_another(rows), ["image", "truth", *columns]
    atomic_write(path, lambda handle: save_titled(handle, grid, titles))
    return True


def checkpoint_path(study: Study, record: dict) -> Path:
    """The checkpoint the study scores in the run folder of ``record``."""
    return study.root / record["dir"] / f"{study.checkpoint}.pt"


def _load_model(study: Study, record: dict, checkpoint: Path | None = None):
    from seg.engine.checkpoint import load_for_inference

    checkpoint = checkpoint or checkpoint_path(study, record)
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
