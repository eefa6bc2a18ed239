"""What a training work dir may hold, and what a new run or a resume may do with it.

The rules: a new run never replaces another run's checkpoints or metrics unless asked
(``--force``), a resume needs a checkpoint to resume, and a checkpoint is resumed only with
the config it was trained with (apart from the keys in `SAFE_TO_CHANGE_ON_RESUME`, which
change nothing the weights depend on).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from seg.config import SCHEMA, ConfigError
from seg.engine.checkpoint import BEST, LAST

log = logging.getLogger("seg")

# What a run leaves behind that a new run must not silently replace.
RUN_OUTPUTS = (LAST, BEST, "metrics.json")
# What --force removes besides RUN_OUTPUTS: files the trainer wrote, nothing else.
CURVE = "curve.jsonl"  # one line per validation during training: the learning curve
CONFIG = "config.yaml"  # the resolved config a run was started with
_REPLACED_WITH_FORCE = ("metrics.md", CURVE)
# Dotted keys (or whole sections) a resume may change: where files are, how the run is
# watched and how fast data arrive, nothing the weights depend on.
SAFE_TO_CHANGE_ON_RESUME = (
    "name",
    "output",
    "data.root",
    "train.workers",
    "train.load_from",  # fine-tuning weights: loaded at the start only, never on a resume
    "train.load_strict",  # how load_from is loaded: the same
    "train.log_interval",
    "train.ckpt_interval",
    "train.num_vis",
    "train.compile",  # how the same maths runs (eager or compiled), not what it computes
    "eval.workers",
    "eval.batch_size",
)


def run_outputs(work_dir: Path, config: Mapping[str, Any]) -> list[str]:
    """The names of what ``work_dir`` holds of a run other than a new one of ``config``
    would write: its outputs (`RUN_OUTPUTS`), and a ``config.yaml`` of another config
    (`foreign_config`)."""
    held = [name for name in RUN_OUTPUTS if (Path(work_dir) / name).exists()]
    return [*held, *foreign_config(work_dir, config)]


def check_fresh_start(
    work_dir: Path, config: Mapping[str, Any], force: bool, keep: str | Path | None = None
) -> list[str]:
    """What a new run of ``config`` in ``work_dir`` would replace: refused unless ``force``.

    A run's outputs (`RUN_OUTPUTS`) are refused, and so is a ``config.yaml`` of another
    config (another run's, or a file of the user's); one that differs only in keys safe to
    change on a resume (`SAFE_TO_CHANGE_ON_RESUME`: where it writes, how it is watched) is
    the same run started again before its first checkpoint. ``keep``: a file the new run
    still needs (its ``load_from``): refused if it is one of them. Nothing is deleted here
    (`clear_run` does, once the new run has shown it can start).
    """
    work_dir = Path(work_dir)
    if work_dir.exists() and not work_dir.is_dir():
        raise ConfigError(f"--work-dir {work_dir} is a file: give a folder")
    existing = run_outputs(work_dir, config)
    if not existing:
        return []
    if not force:
        resume = "continue it with --resume, " if {LAST, BEST} & set(existing) else ""
        raise ConfigError(
            f"{work_dir} already holds a run ({', '.join(existing)}): {resume}train into "
            "another --work-dir, or replace it with --force"
        )
    replaced = [*existing, *(n for n in _REPLACED_WITH_FORCE if (work_dir / n).exists())]
    if keep is not None and Path(keep).resolve() in {(work_dir / n).resolve() for n in replaced}:
        raise ConfigError(
            f"--force would delete {keep}, the weights this run starts from (load_from): "
            "copy them out of the work dir first, or train into another --work-dir"
        )
    return replaced


def foreign_config(work_dir: Path, config: Mapping[str, Any]) -> list[str]:
    """``[CONFIG]`` where ``work_dir`` holds a ``config.yaml`` that is not ``config`` (up to
    the keys safe to change on a resume), else ``[]``."""
    path = Path(work_dir) / CONFIG
    if not path.exists():
        return []
    try:
        stored = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        stored = None
    same = isinstance(stored, Mapping) and not resume_differences(stored, config)
    return [] if same else [CONFIG]


def clear_run(work_dir: Path, replaced: list[str]) -> None:
    """Delete what `check_fresh_start` said a new run replaces (with ``--force``), and the
    old run's TensorBoard event files. Call it on the main process only."""
    if not replaced:
        return
    for name in replaced:
        (work_dir / name).unlink(missing_ok=True)
    events = sorted((work_dir / "tb").glob("events.out.tfevents.*"))
    for path in events:
        path.unlink()
    log.warning(
        "--force: removed the previous run's %s%s from %s",
        ", ".join(replaced),
        f" and {len(events)} TensorBoard event file(s)" if events else "",
        work_dir,
    )


def check_resume_target(checkpoint: Path, work_dir: Path, config: Mapping[str, Any]) -> None:
    """A resume of ``checkpoint`` (trained with ``config``) continues in ``work_dir``:
    refuse one that holds a run other than the checkpoint's own (its checkpoints, metrics
    or config would be replaced)."""
    if checkpoint.resolve().parent == Path(work_dir).resolve():
        return
    existing = run_outputs(work_dir, config)
    if existing:
        raise ConfigError(
            f"--resume {checkpoint} would continue in {work_dir}, which holds another run "
            f"({', '.join(existing)}): give --work-dir {checkpoint.parent} to continue where "
            "that checkpoint is, or a --work-dir without a run"
        )


def remove_stale_temporaries(work_dir: Path) -> list[Path]:
    """Delete checkpoint temporaries (``.last.pt.PID.tmp``) left by a killed process."""
    removed = []
    for path in Path(work_dir).glob(".*.pt.*.tmp"):
        pid = path.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # another live process is writing it
        path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.info("removed %d stale checkpoint temporary file(s) from %s", len(removed), work_dir)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def _safe(key: str) -> bool:
    return any(key == safe or key.startswith(safe + ".") for safe in SAFE_TO_CHANGE_ON_RESUME)


def config_differences(
    stored: Mapping[str, Any], current: Mapping[str, Any], ignore=lambda key: False
) -> list[str]:
    """``"key: stored -> current"`` for each dotted key whose value differs (``ignore``
    says which keys may). A schema key the stored config predates counts as unchanged when
    the current value is its default: a release that adds a setting keeps its old
    behaviour under the default, so it does not orphan older runs."""
    old, new = flatten(stored), flatten(current)
    keys = sorted(
        k
        for k in set(old) | set(new)
        if old.get(k, _MISSING) != new.get(k, _MISSING)
        and not ignore(k)
        and not _added(k, old, new)
    )
    return [f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in keys]


_MISSING = object()


def _added(key: str, old: dict, new: dict) -> bool:
    """``key`` is absent from ``old`` and holds its schema default in ``new``."""
    if key in old or key not in new or "." not in key:
        return False
    section, name = key.split(".", 1)
    schema = SCHEMA.get(section)
    fields = {f.name: f for f in dataclasses.fields(schema)} if schema else {}
    if name not in fields:
        return False
    field = fields[name]
    if field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        return False
    return new[key] == default


def resume_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"key: stored -> current"`` for each key that differs and is not safe to change."""
    return config_differences(stored, current, ignore=_safe)


def check_resumable(path: Path, stored: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """Raise unless ``current`` is the config ``path`` was trained with (up to safe keys)."""
    differences = resume_differences(stored, current)
    if differences:
        listed = "; ".join(differences[:6]) + ("; ..." if len(differences) > 6 else "")
        raise ConfigError(
            f"cannot resume {path}: it was trained with another config ({listed}). Resume with "
            f"its own config ({path.parent / 'config.yaml'}), or start a new run in another "
            f"--work-dir. Safe to change on a resume: {', '.join(SAFE_TO_CHANGE_ON_RESUME)}"
        )


def launch_command(world_size: int, local_world_size: int, config: Path) -> str:
    """The command that continues this run as it was started (launcher and processes)."""
    if world_size <= 1:
        launcher = "python"
    else:
        nodes = max(world_size // max(local_world_size, 1), 1)
        launcher = f"torchrun --nproc_per_node {local_world_size}"
        if nodes > 1:
            launcher += f" --nnodes {nodes} (and your rendezvous options)"
    return f"{launcher} tools/train.py {config} --resume"


def append_curve(work_dir: Path, iteration: int, seconds: float, metrics: Mapping) -> None:
    """One validation during training as a line of ``WORK_DIR/curve.jsonl``: the
    iteration, the training seconds so far (validation excluded) and the scores; the
    learning curves of a study are drawn from it (a validation repeated after a resume
    appears twice; readers keep the later one)."""
    point = {
        "iteration": int(iteration),
        "seconds": round(float(seconds), 3),
        **{key: float(metrics[key]) for key in ("mIoU", "mBIoU", "mAcc", "aAcc")},
    }
    path = Path(work_dir) / CURVE
    with open(path, "a+b") as handle:  # appended at the end whatever was read
        torn = False
        if handle.seek(0, os.SEEK_END) > 0:
            handle.seek(-1, os.SEEK_END)
            torn = handle.read(1) != b"\n"  # a killed append cut the last line short
        handle.write((("\n" if torn else "") + json.dumps(point) + "\n").encode())
