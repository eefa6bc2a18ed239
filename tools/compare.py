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

A study file can ask for the fair protocol: ``sweep: {grid: {train.lr: [1e-3, 2e-3, 5e-3]},
set: [train.iters=300]}`` first trains every variant at every grid point (short budget, one
seed) and scores it on the sweep's split (val), then runs the seeds at the full budget with
each variant's own best point and scores them once on ``split`` (test); ``reference: NAME``
is the variant the others are compared with seed by seed (95 % intervals; a difference is
claimed only where the interval excludes 0); ``equal_time: true`` also trains every other
variant for the reference's training time (iterations scaled by the measured seconds per
iteration, once every variant has all its seeds). Validations during training
(``train.val_interval``) give the learning curves.

Resumable: a run that finished is not run again, an interrupted one (Ctrl-C or SIGTERM:
the run saves its ``last.pt`` first) continues from there; run the same command again. A
finished run is reused when only the scoring changes (``--split``, ``--checkpoint``); a run
folder trained with other settings is refused, not mixed in.

Processes share a study: run the same command twice (``OMP_NUM_THREADS=1`` each) to use
two cores. A process holds a run's folder while it trains and scores it (a lock the system
drops when the process ends, however it ends); another skips a held run, comes back to it
at the end of the phase and waits for it there, since what follows (the tuning choice, the
equal-time budgets) needs every run; if its holder stopped, the waiting one continues it.
The trainer inherits the lock, so a run stays held while it trains even if its
``compare.py`` was killed. A run one of them failed is not tried again by the other (its
record is kept in the run's folder); the next command tries it again.
``--only NAME ...`` runs those variants and tabulates them with whatever the others have
finished; ``--tables`` runs nothing and rewrites the tables and pictures from the runs that
finished; ``--predictions`` draws predictions.png again, training again (in
``OUT/retrained/``, with the recorded settings) a run whose checkpoint is gone, and says in
predictions.json whether that copy scores what the run recorded (two such processes
side by side share the copies: each trains one the other does not hold, then waits for
the rest). The command recorded in
``results.md`` leaves them out: it is the one that reproduces the whole study. A run that fails is
reported in the tables and in the exit status (1), never averaged in; the others go on.
Paths in ``--set`` values (``data.root=...``) are read from the repository root, where the
tools run. ``OUT`` holds::

    runs/VARIANT/seedN/   the training work dir (checkpoints, train.log, tb/, curve.jsonl,
                          metrics.json: the final validation), compare.log (the tools'
                          output), compare.lock, compare_failed.json (a failed
                          attempt's record) and, for another split or checkpoint,
                          eval_SPLIT_CHECKPOINT/metrics.json
    results.md            mean ± 95 % interval over seeds: mIoU, mean Boundary IoU, aAcc,
                          mAcc; collapsed runs; paired differences with the reference;
                          per-class IoU, parameters, training s/iter, peak memory; the
                          tuning table and the equal-time table when asked
    results.json          every run's figures, the aggregates and the differences
    results.png           mIoU and mBIoU per variant, bars with the 95 % interval
    per_class.png         per-class IoU of every variant in one chart
    curves.png            validation mIoU against iterations and training seconds
    sweep.png             the tuning metric at each sweep point, per variant
    predictions.png       the same SPLIT images predicted by every variant, with the truth
    retrained/            (--predictions) runs trained again for predictions.png
    sweep/, equal_time/   the tuning and equal-time runs, with their own tables

The study itself (study files, budget checks, finished runs, tables, plots) is the library
``seg.engine.study``; this tool runs tools/train.py and tools/eval.py for it, one at a time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from seg.config import ConfigError
from seg.engine.checkpoint import BEST, find_latest, write_text_atomic
from seg.engine.evaluator import json_ready
from seg.engine.study import (
    FAILED_FILE,
    LOCK_FILE,
    Run,
    Study,
    StudyError,
    Variant,
    check_budgets,
    check_recorded_runs_are_here,
    check_split,
    checkpoint_path,
    choose_points,
    claim_run,
    equal_time_study,
    final_study,
    first_finished,
    held_runs,
    hold_run,
    metric,
    plan_run,
    point_label,
    prediction_grid,
    read_failure,
    read_record,
    read_study,
    refresh_records,
    relative_to,
    results_header,
    study_from_configs,
    sweep_study,
    with_options,
    write_failure,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
INTERRUPTED = (128 + 2, 128 + 15)  # tools/train.py after SIGINT / SIGTERM: resumable
# how often a process looks again at the runs other processes hold
POLL_SECONDS = float(os.environ.get("SEG_COMPARE_POLL_S", "30"))
STARTED = time.time()  # a run another process failed since then is not tried again


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


# ---------------------------------------------------------------- running


def _tail(path: Path, lines: int = 8) -> str:
    if not path.is_file():
        return ""
    text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return "\n".join(text[-lines:])


def _run_logged(args: list[str], log_path: Path, hold: int) -> int:
    """Run a tool, its output appended to ``log_path``; on Ctrl-C / SIGTERM let it save first.
    It inherits ``hold``, the descriptor that holds the run (`hold_run`): should this process
    die first, the run stays held while the tool works on it."""
    with open(log_path, "a") as log:
        started = datetime.datetime.now().isoformat(timespec="seconds")
        log.write(f"\n# {started}, tools/compare.py pid {os.getpid()}\n")
        log.write(f"$ python {shlex.join(args)}\n")
        log.flush()
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(hold,),
        )
        try:
            return process.wait()
        except KeyboardInterrupt:
            # tools/train.py finishes its step and writes last.pt on SIGINT (the group's own
            # signal, arriving at the same moment, counts as the same request): wait, stop.
            process.send_signal(signal.SIGINT)
            process.wait()
            raise


def _run_step(study: Study, log_path: Path, hold: int, *args: str) -> int:
    """A tool on the study's device; an interrupted one stops the study (it resumes)."""
    device = ["--device", study.device] if study.device else []
    code = _run_logged([*args, *device], log_path, hold)
    if code in INTERRUPTED:
        raise KeyboardInterrupt
    return code


def run_one(study: Study, variant: Variant, seed: int) -> dict | None:
    """Train and score one (variant, seed), skipping what already finished; its record
    (status ok / failed), or None when another process holds the run (running it now)."""
    run = plan_run(study, variant, seed)
    with hold_run(run.folder) as hold:
        if hold is None:
            return None
        # failed by another process sharing this study (since this one started): not again
        failed = read_failure(run, since=STARTED)
        if failed is not None:
            return failed
        (run.folder / FAILED_FILE).unlink(missing_ok=True)  # an earlier command's: try again
        record = _train_and_score(study, run, hold)
        return write_failure(run, record) if record["status"] != "ok" else record


def _train_and_score(study: Study, run: Run, hold: int) -> dict:
    claim_run(study, run)
    log_path = run.folder / "compare.log"
    if not run.trained:
        # An interrupted run continues from its last.pt, or from best.pt where it was
        # killed after a validation and before its first periodic save; tools/train.py
        # refuses --resume without either.
        best = run.folder / BEST
        if find_latest(run.folder):
            resume = ["--resume"]
        elif best.is_file():
            resume = ["--resume", run.relative(best)]
        else:
            resume = []
        code = _run_step(
            study,
            log_path,
            hold,
            # Paths relative to the repository (the tools run there): config.yaml,
            # metrics.json and the logs name them so, for another clone.
            "tools/train.py", run.settings["config"], "--work-dir", run.relative(run.folder),
            *resume,
            "--set", *run.settings["set"], "output.progress=false",
        )  # fmt: skip
        if code != 0:
            return run.record(status="failed", returncode=code, error=_tail(log_path))
    if not run.scored:
        code = _run_step(
            study,
            log_path,
            hold,
            "tools/eval.py", run.relative(run.folder / f"{study.checkpoint}.pt"),
            "--split", run.split, "--out", run.relative(run.result.parent),
        )  # fmt: skip
        if code != 0:
            return run.record(status="failed", returncode=code, error=_tail(log_path))
    return read_record(run)


def _report(record: dict) -> None:
    if record["status"] == "ok":
        print(
            f"    mIoU {100 * metric(record, 'mIoU'):.2f}  mBIoU {100 * metric(record, 'mBIoU'):.2f}"
        )
    else:
        print(f"    FAILED (exit {record['returncode']}): see {record['dir']}/compare.log")


def _run_all(study: Study, header: dict, records: list[dict], extra: dict | None = None) -> None:
    """Every (variant, seed) of the selected variants (``--only``'s, else all), seed-major:
    after the first seed every variant has a result. A run another process holds is left
    to it and waited for at the end. ``records`` ends with those and, looked up again at
    each table written, what other processes finished meanwhile."""
    planned = [(variant, seed) for seed in study.seeds for variant in study.selected]
    held = []
    for position, (variant, seed) in enumerate(planned, 1):
        print(f"[{position}/{header['planned']}] {variant.name}, seed {seed}", flush=True)
        record = run_one(study, variant, seed)
        if record is None:
            print("    another process is running it; back to it at the end", flush=True)
            held.append((position, variant, seed))
            continue
        _finished(study, header, records, record, extra)
    # wait for them: what comes next (a choice, a time ratio) needs them all
    for (position, variant, seed), record in _when_free(
        held,
        lambda run: run_one(study, run[1], run[2]),  # theirs, or this one's if they stopped
        lambda run: f"{run[1].name} seed {run[2]}",
        "run(s) other processes are running",
    ):
        print(f"[{position}/{header['planned']}] {variant.name}, seed {seed}", flush=True)
        _finished(study, header, records, record, extra)
    records[:] = refresh_records(study, records)


def _when_free(held: list, attempt, name, what: str):
    """``attempt(item)`` for each of ``held`` (items another process holds) again every
    POLL_SECONDS until it returns a result rather than None (the holder finished it, or
    stopped and this process did it): yields (item, result) as each ends."""
    waiting_for = 0
    while held:
        if len(held) != waiting_for:
            names = ", ".join(map(name, held))
            print(f"waiting for {len(held)} {what}: {names}", flush=True)
            waiting_for = len(held)
        _sleep(POLL_SECONDS)
        still = []
        for item in held:
            result = attempt(item)
            if result is None:
                still.append(item)
            else:
                yield item, result
        held = still


def _finished(study: Study, header: dict, records: list, record: dict, extra) -> None:
    records.append(record)
    header["done"] += 1
    _report(record)
    # the tables so far, while it runs
    write_results(study, refresh_records(study, records), header, extra)


def _phase(study: Study, command: str, title: str, budget: dict) -> list[dict]:
    """Run a phase's study (tuning or equal time) to the end, its tables in its own folder."""
    print(f"== {title}: {len(study.selected) * len(study.seeds)} run(s) in {study.out}", flush=True)
    study.out.mkdir(parents=True, exist_ok=True)
    header = results_header(study, budget, command)
    records: list[dict] = []
    _run_all(study, header, records)
    write_results(study, records, header)
    return records


def _chosen(tuned: Study, sweep_records: list[dict]) -> tuple[Study, dict]:
    """Each variant at its best sweep point, and the tuning records the tables add."""
    chosen = choose_points(tuned, sweep_records)
    return final_study(tuned, chosen), {"sweep": sweep_records, "chosen": chosen}


def _protocol(study: Study, command: str) -> tuple[Study, list[dict], dict, dict]:
    """Tuning on val (with a sweep), the seeds at the full budget, then (with equal_time)
    the others at the reference's training time. Returns the final study, its records,
    its header and what the tables add."""
    extra: dict = {}
    tuned = study
    if tuned.sweep is not None:
        tuning = sweep_study(tuned)
        sweep_records = _phase(tuning, command, "tuning", check_budgets(tuning))
        study, extra = _chosen(tuned, sweep_records)
        for name, choice in extra["chosen"].items():
            print(f"    {name}: {point_label(choice['point'])} ({100 * choice['score']:.2f})")
    header = results_header(study, check_budgets(study), command)
    records: list[dict] = []
    print(f"== final: {header['planned']} run(s) in {study.out}", flush=True)
    _run_all(study, header, records, extra)
    idle, waiting = 0, False  # idle: looks in a row that found no run held by another
    while True:
        if tuned.sweep is not None:
            # Another --only process may have finished tuning its variants since: their
            # choice and their finished seeds go into the tables too.
            study, extra = _chosen(tuned, refresh_records(tuning, sweep_records))
        records = refresh_records(study, records)
        timed = equal_time_study(study, records) if study.equal_time else None
        if timed is not None or not _runs_at_equal_time(study):
            break
        # Their seeds size the equal-time runs: wait while other processes hold runs. A
        # process holds none for a moment between two runs: stop after two looks in a row.
        others = held_runs(study) + (held_runs(tuning) if tuned.sweep is not None else [])
        idle = 0 if others else idle + 1
        if idle >= 2:
            break
        if others and not waiting:
            print(
                f"equal time: waiting for the {len(others)} run(s) other processes are running",
                flush=True,
            )
            waiting = True
        _sleep(POLL_SECONDS)
    if study.equal_time:
        if timed is None:
            print(
                "equal time: not yet, every variant needs its tuning choice and (unless the "
                "study file fixes the iterations) all its seeds first (another --only process "
                "may still be running some); run this command again once they finish",
                file=sys.stderr,
            )
        else:
            budget = {"iters": "per variant", "batch_size": header["budget"]["batch_size"]}
            extra["equal_time"] = (timed, _phase(timed, command, "equal time", budget))
    return study, records, header, extra


def _runs_at_equal_time(study: Study) -> bool:
    """Whether this process has equal-time runs to do (the reference has none)."""
    return study.equal_time and any(v.name != study.reference_name for v in study.selected)


def run_study(study: Study, command: str) -> int:
    check_budgets(study)  # before anything is written
    check_recorded_runs_are_here(study)
    if study.selected:  # it trains: --tables on a clone without the data still works
        check_split(study)
    study.out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []  # filled once the protocol has run (interrupts: see below)
    header: dict = {}
    extra: dict = {}
    try:
        study, records, header, extra = _protocol(study, command)
        write_results(study, records, header, extra)
        try:
            if prediction_grid(study, records, study.out / "predictions.png"):
                print(f"wrote {study.out / 'predictions.png'}")
        except (OSError, ValueError, RuntimeError, ConfigError) as error:
            print(
                f"warning: no predictions.png ({error}); --predictions draws it, training "
                "again a run whose checkpoint is gone",
                file=sys.stderr,
            )
    except KeyboardInterrupt:
        if records:  # interrupted while writing the final tables: write them whole
            write_results(study, records, header, extra)
        print(
            "interrupted; run the same command again to continue where it stopped",
            file=sys.stderr,
        )
        return 130
    print((study.out / "results.md").read_text())
    print(f"wrote {study.out}/results.{{md,json,png}}")
    failed = [r for r in records if r["status"] != "ok"]
    for phase in (extra.get("sweep") or [], (extra.get("equal_time") or (None, []))[1]):
        failed += [r for r in phase if r["status"] != "ok"]
    if failed:
        print(f"{len(failed)} run(s) failed; see results.md", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- predictions.png again

RETRAINED = "retrained"  # in OUT: copies of runs whose checkpoint is gone, for the pictures
# A retrained copy scores what its run recorded when mIoU and mBIoU agree to this (the
# tables' last digit, in %).
SAME_SCORE = 5e-5


def draw_predictions(study: Study, command: str) -> int:
    """``--predictions``: predictions.png from each variant's first finished seed. A run
    whose checkpoint is gone (not committed, another machine) is trained again with its
    recorded settings in ``OUT/retrained/VARIANT/seedN`` (its run folder is not touched)
    and scored like it; ``predictions.json`` says which columns are retrained copies and
    whether each scores what its run recorded (the picture is of that copy either way)."""
    try:
        return _draw_predictions(study, command)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return 130


def _draw_predictions(study: Study, command: str) -> int:
    if study.num_images <= 0:
        print("error: --images 0 leaves nothing to draw; give 1 or more", file=sys.stderr)
        return 2
    # only=[]: trains nothing, rewrites the tables as --tables does
    study, records, _, _ = _protocol(study, command)
    chosen = first_finished(records)
    copies = _retrain_all(study, chosen)
    failed = [copy for copy in copies.values() if copy["status"] != "ok"]
    if failed:
        for copy in failed:
            print(f"error: retraining failed; see {copy['dir']}/compare.log", file=sys.stderr)
        return 1
    checkpoints, titles, columns = {}, {}, []
    for name, record in chosen.items():
        column = {"variant": name, "seed": record["seed"], "retrained": name in copies}
        path = checkpoint_path(study, copies.get(name, record))
        if column["retrained"]:
            column.update(_scores_compared(record, copies[name]))
            titles[name] = f"{name} (retrained)"
        column["checkpoint"] = relative_to(path, study.root)
        checkpoints[name] = path
        columns.append(column)
    if not prediction_grid(study, records, study.out / "predictions.png", checkpoints, titles):
        print("error: no finished run to draw", file=sys.stderr)
        return 1
    split = next(iter(chosen.values()))["split"]
    payload = {"split": split, "checkpoint": study.checkpoint, "columns": columns}
    text = json.dumps(json_ready(payload), indent=2, allow_nan=False)
    write_text_atomic(study.out / "predictions.json", text + "\n")
    print(f"wrote {study.out / 'predictions.png'}, {study.out / 'predictions.json'}")
    return 0


def _retrain_all(study: Study, chosen: dict[str, dict]) -> dict[str, dict]:
    """The copies of the chosen runs whose checkpoint is gone, by variant name. A copy
    another ``--predictions`` process is training is left to it and waited for at the end
    (two processes started side by side share the work); one it stopped, this one trains."""
    variants = {variant.name: variant for variant in study.variants}
    gone = [name for name, record in chosen.items() if not checkpoint_path(study, record).is_file()]

    def retrain(name: str) -> dict | None:
        return _retrain(study, variants[name], chosen[name]["seed"])

    copies, held = {}, []
    for name in gone:
        copy = retrain(name)
        if copy is None:
            print(
                f"{name}: another process is training it again; back to it at the end", flush=True
            )
            held.append(name)
        else:
            copies[name] = copy
    copies.update(_when_free(held, retrain, str, "copies other processes are training"))
    return {name: copies[name] for name in gone}


def _retrain(study: Study, variant: Variant, seed: int) -> dict | None:
    """(variant, seed) trained and scored again in ``OUT/retrained/VARIANT/seedN`` (or
    what an earlier --predictions left there), its record; None while another process
    holds that folder (training the copy)."""
    run = plan_run(study, variant, seed)
    folder = study.out / RETRAINED / variant.slug / f"seed{seed}"
    copy = replace(run, folder=folder, result=folder / run.result.relative_to(run.folder))
    with hold_run(folder) as hold:
        if hold is None:
            return None
        where = f"{variant.name}, seed {seed}: no {run.folder.name}/{study.checkpoint}.pt;"
        try:
            claim_run(study, copy)
            # trained, but its checkpoint gone too (the copy was made on another clone)
            stale = copy.trained and not (folder / f"{study.checkpoint}.pt").is_file()
        except StudyError:  # trained with other settings: the study changed since
            stale = True
        if stale:  # this tool's own folder: emptied for a fresh copy
            for path in folder.iterdir():
                if path.name != LOCK_FILE:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        elif copy.trained and copy.scored:
            print(f"{where} its copy in {copy.relative(folder)}", flush=True)
            return read_record(copy)
        # an interrupted copy continues from its last.pt
        print(f"{where} training it again in {copy.relative(folder)}", flush=True)
        return _train_and_score(study, copy, hold)


def _scores_compared(record: dict, copy: dict) -> dict:
    recorded = {key: metric(record, key) for key in ("mIoU", "mBIoU")}
    again = {key: metric(copy, key) for key in ("mIoU", "mBIoU")}
    same = all(
        abs(recorded[key] - again[key]) < SAME_SCORE
        or (math.isnan(recorded[key]) and math.isnan(again[key]))
        for key in recorded
    )
    print(
        "    scores "
        + ", ".join(f"{k} {100 * again[k]:.2f} (run: {100 * recorded[k]:.2f})" for k in again)
        + ("" if same else ": NOT the scores of the run the tables hold"),
        flush=True,
    )
    return {"recorded": recorded, "retrained_scores": again, "same_scores": same}


# ---------------------------------------------------------------- command line


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train and compare variants over seeds with the same budget.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
        allow_abbrev=False,  # the recorded command drops --only; no --onl to slip past it
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
    parser.add_argument(
        "--only", action="extend", nargs="+", metavar="NAME", help="run only these variants"
    )
    parser.add_argument(
        "--tables",
        action="store_true",
        help="run nothing: rewrite the tables and pictures from the runs that finished",
    )
    parser.add_argument(
        "--predictions",
        action="store_true",
        help="draw predictions.png (and predictions.json) again, training nothing but a run "
        "whose checkpoint is gone, again with its settings in OUT/retrained/",
    )
    parser.add_argument("--seeds", action="extend", nargs="+", type=int, help="default: 0 1 2")
    parser.add_argument(
        "--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help="for all"
    )
    parser.add_argument("--split", help="score on this split (default: each config's eval.split)")
    parser.add_argument("--checkpoint", choices=("last", "best"), help="default: last")
    parser.add_argument("--images", type=int, help="images in predictions.png (default 4)")
    parser.add_argument("--title", help="the study's name in results.md")
    parser.add_argument(
        "--out", help="output folder (default: the study's out, else results/<study or config>)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available")
    return parser


def _study(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Study:
    """The study the arguments describe; relative paths in a study file from the repo root."""
    if args.study:
        if args.configs or args.variant:
            raise StudyError("give either --study or configs/--variant, not both")
        study = read_study(Path(args.study), root=ROOT)
    elif args.configs or args.variant:
        study = study_from_configs(args.configs, args.variant, root=ROOT)
    else:
        parser.error("give config files, one config with --variant, or --study")
    return with_options(
        study,
        overrides=args.set,
        seeds=args.seeds,
        out=Path(args.out).resolve() if args.out else None,
        split=args.split,
        checkpoint=args.checkpoint,
        title=args.title,
        device=args.device,
        num_images=args.images,
        only=[] if args.tables or args.predictions else args.only,
    )


def _study_arguments(argv: list[str]) -> list[str]:
    """The arguments without ``--only NAME ...``, ``--tables`` and ``--predictions``, which
    choose what this process does, not what the study is: the command recorded reproduces
    the whole study."""
    kept, skipping = [], False
    for arg in argv:
        if arg.startswith("--only="):
            continue
        if arg in ("--only", "--tables", "--predictions"):
            skipping = arg == "--only"
            continue
        if skipping and not arg.startswith("--"):
            continue
        skipping = False
        kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command = shlex.join(
        [
            "python",
            "tools/compare.py",
            *_study_arguments(argv if argv is not None else sys.argv[1:]),
        ]
    )
    try:
        study = _study(args, parser)
        os.chdir(ROOT)  # the tools run here: relative data roots mean the same to all
        signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C: the run saves first
        if args.predictions:
            return draw_predictions(study, command)
        return run_study(study, command)
    except (StudyError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
