"""seg.engine.study: study files, budget checks, finished runs on disk, aggregation, tables."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import yaml

from seg.engine import rundir
from seg.engine.study import (
    FAILED_FILE,
    SETTINGS_FILE,
    TITLE_SIZE,
    Study,
    StudyError,
    Sweep,
    Variant,
    aggregate,
    check_budgets,
    choose_points,
    claim_run,
    equal_time_study,
    final_study,
    find_finished,
    held_runs,
    hold_run,
    is_collapsed,
    is_held,
    markdown,
    mean_ci,
    mean_std,
    paired_differences,
    plan_run,
    plot_per_class,
    read_curve,
    read_failure,
    read_study,
    refresh_records,
    results_header,
    study_from_configs,
    sweep_study,
    with_options,
    write_failure,
    write_results,
)
from seg.engine.study import _fitted as fitted_title


@pytest.fixture
def config(tmp_path, tiny_raw) -> Path:
    path = tmp_path / "configs" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(tiny_raw(train={"iters": 3})))
    return path


def _study(config: Path, out: Path, *variants: tuple[str, list[str]], **options) -> Study:
    chosen = [Variant(name, config, overrides) for name, overrides in variants]
    return Study(chosen, options.pop("seeds", [0, 1]), out, root=config.parent, **options)


# ---------------------------------------------------------------- the study definition


def test_read_study_resolves_configs_from_the_root_then_beside_the_file(tmp_path, config):
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "beside.yaml").write_text(config.read_text())
    path = folder / "mine.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "config": "configs/tiny.yaml",  # from the root
                "seeds": [3, 1, 3],
                "set": ["train.iters=2"],
                "split": "test",
                "images": 0,
                "variants": {
                    "a": ["model.down=max"],
                    "b": {"config": "beside.yaml", "set": ["model.up=bilinear"]},
                    "c": None,
                },
            }
        )
    )
    study = read_study(path, root=tmp_path)
    assert isinstance(study, Study)
    assert [(v.name, v.config, v.overrides) for v in study.variants] == [
        ("a", config.resolve(), ["model.down=max"]),
        ("b", (folder / "beside.yaml").resolve(), ["model.up=bilinear"]),
        ("c", config.resolve(), []),
    ]
    assert study.seeds == [3, 1] and study.overrides == ["train.iters=2"]
    assert study.split == "test" and study.num_images == 0 and study.checkpoint == "last"
    assert study.title == "mine" and study.out == tmp_path / "results" / "mine"
    assert study.root == tmp_path


def test_read_study_defaults_to_the_study_files_folder(tmp_path, config):
    path = config.parent / "study.yaml"
    path.write_text(yaml.safe_dump({"config": "tiny.yaml", "out": "here", "title": "T",
                                    "variants": {"a": []}}))  # fmt: skip
    study = read_study(path)
    assert study.variants[0].config == config.resolve() and study.out == config.parent / "here"
    assert study.seeds == [0, 1, 2] and study.num_images == 4 and study.title == "T"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"config": "tiny.yaml", "variant": {"a": []}}, r"unknown key\(s\) \['variant'\]"),
        ({"config": "tiny.yaml", "variants": {}}, "'variants' is empty"),
        ({"variants": {"a": []}}, "variant 'a' has no config"),
        ({"variants": {"a": {"config": "nowhere.yaml"}}}, "config nowhere.yaml not found"),
    ],
)
def test_read_study_refuses_what_it_cannot_run(config, content, message):
    path = config.parent / "study.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(StudyError, match=message):
        read_study(path)


def test_a_study_of_config_files_and_the_command_lines_choices(tmp_path, config, monkeypatch):
    monkeypatch.chdir(config.parent)
    study = study_from_configs(["tiny.yaml"], [["k3", "model.kernel_size=3"], ["plain"]], tmp_path)
    assert [(v.name, v.config, v.overrides) for v in study.variants] == [
        ("k3", config.resolve(), ["model.kernel_size=3"]),
        ("plain", config.resolve(), []),
    ]
    assert study.out == tmp_path / "results" / "tiny" and study.title == "tiny"
    assert [v.name for v in study_from_configs(["tiny.yaml"]).variants] == ["tiny"]
    with pytest.raises(StudyError, match="exactly one config"):
        study_from_configs(["tiny.yaml", "tiny.yaml"], [["a"]])
    with pytest.raises(StudyError, match="config file not found"):
        study_from_configs(["missing.yaml"])

    chosen = with_options(study, overrides=["train.iters=2"], seeds=[1, 1, 0], title=None,
                          only=["plain"])  # fmt: skip
    assert chosen.seeds == [1, 0] and chosen.title == "tiny"
    assert chosen.overrides == ["train.iters=2"] and [v.name for v in chosen.selected] == ["plain"]
    with pytest.raises(StudyError, match=r"no variant\(s\) \['nope'\]"):
        with_options(study, only=["nope"])


def test_the_printed_command_holds_the_settings_that_change_the_digits(
    tmp_path, config, monkeypatch
):
    study = _study(config, tmp_path / "out", ("a", []))
    budget = check_budgets(study)
    for name in ("OMP_NUM_THREADS", "SEG_OPS_BACKEND", "SEG_OPS_CPP"):
        monkeypatch.delenv(name, raising=False)
    command = "python tools/compare.py --study s.yaml"
    assert results_header(study, budget, command)["command"] == command
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("SEG_OPS_CPP", "0")
    assert (
        results_header(study, budget, command)["command"]
        == f"OMP_NUM_THREADS=1 SEG_OPS_CPP=0 {command}"
    )
    given = f"SEG_OPS_CPP=0 {command}"  # already said: not twice
    assert results_header(study, budget, given)["command"] == f"OMP_NUM_THREADS=1 {given}"
    # Rewriting the tables only (no variant run): the header still says how the runs ran.
    ran = results_header(study, budget, given)
    (tmp_path / "out").mkdir()
    elsewhere = {"date": "2026-01-02", "threads": 7, "machine": "cpu elsewhere (7 threads)"}
    (tmp_path / "out" / "results.json").write_text(json.dumps({**ran, **elsewhere}))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("SEG_OPS_BACKEND", "reference")
    reread = results_header(with_options(study, only=[]), budget, command)
    assert reread["command"] == ran["command"]
    assert {key: reread[key] for key in elsewhere} == elsewhere
    assert results_header(study, budget, command)["command"].startswith(
        "OMP_NUM_THREADS=2 SEG_OPS_BACKEND=reference"
    )  # a process that runs variants records its own


def test_check_budgets_refuses_variants_that_would_not_compare(tmp_path, config):
    same = _study(
        config,
        tmp_path,
        ("a", ["model.down=max", "model.up=bilinear"]),
        ("b", []),
        overrides=["train.iters=4"],
    )
    assert check_budgets(same) == {"iters": 4, "batch_size": 2}
    budgets = _study(config, tmp_path, ("short", ["train.iters=2"]), ("long", ["train.iters=5"]))
    with pytest.raises(StudyError, match="don't share a budget .short: 2 iters x batch 2, long: 5"):
        check_budgets(budgets)
    batches = _study(config, tmp_path, ("a", []), ("b", ["train.batch_size=4"]))
    with pytest.raises(StudyError, match="don't share a budget"):
        check_budgets(batches)
    splits = _study(config, tmp_path, ("a", []), ("b", ["eval.split=test"]))
    with pytest.raises(StudyError, match="not scored on the same data .a: val split, 4 classes"):
        check_budgets(splits)
    assert check_budgets(_study(config, tmp_path, ("a", []), ("b", ["eval.split=test"]),
                                split="test"))  # fmt: skip
    with pytest.raises(StudyError, match="variant 'a': .*unknown key 'nope'"):
        check_budgets(_study(config, tmp_path, ("a", ["train.nope=1"])))
    with pytest.raises(StudyError, match="names must differ"):
        check_budgets(_study(config, tmp_path, ("a/b", []), ("a b", [])))


# ---------------------------------------------------------------- runs on disk


def _finish(run, miou: float) -> None:
    """What a finished run leaves: the trainer's metrics.json (scored on its own split)."""
    figures = {"mIoU": miou, "mBIoU": 0.1, "aAcc": 0.9, "mAcc": 0.5,
               "classes": ["a", "b"], "IoU": [miou, None]}  # fmt: skip
    cost = {"params": 10, "seconds_per_iter": 0.5, "peak_memory_mib": 100.0,
            "memory": "cpu_max_rss", "device": "cpu"}  # fmt: skip
    (run.folder / "metrics.json").write_text(json.dumps({**figures, "train": cost}))


def test_find_finished_returns_only_runs_that_finished_with_the_same_training(tmp_path, config):
    study = _study(config, tmp_path / "out", ("a", ["model.down=max", "model.up=bilinear"]))
    variant = study.variants[0]
    assert find_finished(study, variant, 0) is None  # never started
    run = plan_run(study, variant, 0)
    assert run.folder == tmp_path / "out" / "runs" / "a" / "seed0"
    assert run.settings["config"] == "tiny.yaml"  # relative to the study's root
    assert run.settings["resolved"]["train"]["seed"] == 0
    claim_run(study, run)
    assert (run.folder / SETTINGS_FILE).is_file()
    assert find_finished(study, variant, 0) is None  # started, not finished
    failed = run.record(status="failed", returncode=1, error="boom")
    before = time.time()
    assert write_failure(run, failed) is failed
    assert find_finished(study, variant, 0) is None  # failed: not finished
    assert read_failure(run, since=before - 60) == failed
    assert read_failure(run, since=time.time() + 60) is None  # older than asked for
    (run.folder / FAILED_FILE).unlink()  # as tools/compare.py does when it tries again
    _finish(run, 0.4)
    record = find_finished(study, variant, 0)
    assert record["status"] == "ok" and record["seed"] == 0 and record["split"] == "val"
    assert record["metrics"]["mIoU"] == 0.4 and record["train"]["params"] == 10
    assert record["dir"] == str(run.folder)

    # Scoring the best checkpoint reuses the training but needs its own evaluation.
    best = with_options(study, checkpoint="best")
    assert find_finished(best, variant, 0) is None
    scored = plan_run(best, variant, 0).result
    assert scored == run.folder / "eval_val_best" / "metrics.json"
    scored.parent.mkdir()
    scored.write_text(json.dumps({"mIoU": 0.5}))
    assert find_finished(best, variant, 0)["metrics"] == {"mIoU": 0.5}

    # The same folder trained otherwise is refused, not mixed in.
    changed = with_options(study, overrides=["train.lr=0.01"])
    with pytest.raises(StudyError, match="the study changed"):
        find_finished(changed, variant, 0)
    with pytest.raises(StudyError, match="trained with other settings"):
        claim_run(changed, plan_run(changed, variant, 0))


def test_refresh_records_reads_the_other_processes_runs_again_in_study_order(
    tmp_path, config, caplog
):
    """A process running --only b tabulates its own records with what the others finished
    by now, seed by seed in the variants' order; another process's folder it can't read
    (other settings, a record being written) is left out with a warning, never an error."""
    plain = ["model.down=max", "model.up=bilinear"]
    study = _study(config, tmp_path, ("a", plain), ("b", plain), ("c", plain))
    mine = with_options(study, only=["b"])
    a, _, c = study.variants
    own = [_record("b", 1, 0.3, None, 0.1), _record("b", 0, 0.2, None, 0.1)]
    assert refresh_records(mine, own) == [own[1], own[0]]  # nobody else finished
    finished = plan_run(study, a, 0)
    claim_run(study, finished)
    _finish(finished, 0.4)
    claim_run(study, plan_run(study, a, 1))  # started, not finished
    changed = with_options(study, overrides=["train.lr=0.5"])
    claim_run(changed, plan_run(changed, c, 0))  # the folder holds other settings
    being_written = plan_run(study, c, 1)
    claim_run(study, being_written)
    _finish(being_written, 0.5)
    (being_written.folder / "metrics.json").write_text('{"mIoU": 0.')
    with caplog.at_level("WARNING", logger="seg"):
        found = refresh_records(mine, own)
    assert [(r["variant"], r["seed"]) for r in found] == [("a", 0), ("b", 0), ("b", 1)]
    assert found[0]["metrics"]["mIoU"] == 0.4
    assert "c, seed 0 left out" in caplog.text and "c, seed 1 left out" in caplog.text
    _finish(plan_run(study, a, 1), 0.45)  # the other process finishes a's seed 1
    found = refresh_records(mine, own)
    assert [(r["variant"], r["seed"]) for r in found] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]


def test_records_name_the_run_folder_and_checkpoint_relative_to_the_root(tmp_path, config):
    """Committed results must resolve on another clone: inside the study's root, the run's
    folder and the checkpoint tools/eval.py names are relative; outside it, as given."""
    study = _study(config, tmp_path / "out", ("a", ["model.down=max", "model.up=bilinear"]))
    study = with_options(study, checkpoint="best")
    rooted = replace(study, root=tmp_path)
    variant = study.variants[0]
    run = plan_run(rooted, variant, 0)
    claim_run(rooted, run)
    _finish(run, 0.4)
    run.result.parent.mkdir()
    run.result.write_text(json.dumps({"mIoU": 0.5, "checkpoint": str(run.folder / "best.pt")}))
    record = find_finished(rooted, variant, 0)
    assert record["dir"] == "out/runs/a/seed0"
    assert record["metrics"]["checkpoint"] == "out/runs/a/seed0/best.pt"
    outside = replace(study, root=tmp_path / "elsewhere")
    record = find_finished(outside, variant, 0)
    assert record["dir"] == str(run.folder)
    assert record["metrics"]["checkpoint"] == str(run.folder / "best.pt")
    # Scored in another worktree (or machine) of the repository: named as this clone's file.
    run.result.write_text(
        json.dumps({"mIoU": 0.5, "checkpoint": "/elsewhere/out/runs/a/seed0/best.pt"})
    )
    assert find_finished(rooted, variant, 0)["metrics"]["checkpoint"] == "out/runs/a/seed0/best.pt"
    run.result.write_text(json.dumps({"mIoU": 0.5, "checkpoint": "/some/other/best.pt"}))
    assert find_finished(rooted, variant, 0)["metrics"]["checkpoint"] == "/some/other/best.pt"


# ---------------------------------------------------------------- aggregating


def _record(variant: str, seed: int, miou: float, iou_b: float | None, spi: float) -> dict:
    metrics = {"mIoU": miou, "mBIoU": miou / 2, "aAcc": 0.9, "mAcc": None,
               "classes": ["sky", "road"], "IoU": [miou, iou_b]}  # fmt: skip
    cost = {"params": 2_500_000, "seconds_per_iter": spi, "peak_memory_mib": 300.0 + seed,
            "memory": "cpu_max_rss", "device": "cpu"}  # fmt: skip
    return {"variant": variant, "seed": seed, "dir": f"runs/{variant}/seed{seed}",
            "split": "val", "status": "ok", "metrics": metrics, "train": cost}  # fmt: skip


def _failed(variant: str, seed: int) -> dict:
    return {"variant": variant, "seed": seed, "dir": f"runs/{variant}/seed{seed}",
            "split": "val", "status": "failed", "returncode": 1,
            "error": "Traceback\nValueError: out of cheese"}  # fmt: skip


@pytest.fixture
def records() -> list[dict]:
    return [
        _record("a", 0, 0.50, 0.2, 0.10),
        _record("a", 1, 0.60, None, 0.12),
        _record("a", 2, 0.65, 0.4, 0.11),
        _record("b", 0, 0.30, 0.1, 0.20),
        _failed("b", 1),
        _failed("c", 0),
    ]


def test_aggregate_is_the_mean_and_sample_std_of_the_runs_that_finished(tmp_path, records):
    study = _study(Path("x.yaml"), tmp_path, ("a", []), ("b", []), ("c", []), ("d", []),
                   seeds=[0, 1, 2])  # fmt: skip
    rows = {row["variant"]: row for row in aggregate(study, records)}
    assert list(rows) == ["a", "b", "c"]  # d: no record, no row
    a = rows["a"]
    assert a["runs"] == 3 and a["planned"] == 3 and a["seeds"] == [0, 1, 2] and a["failed"] == []
    mious = np.array([0.50, 0.60, 0.65])
    assert a["mIoU"] == pytest.approx((mious.mean(), mious.std(ddof=1)))
    assert a["mBIoU"] == pytest.approx((mious.mean() / 2, mious.std(ddof=1) / 2))
    assert a["aAcc"][0] == pytest.approx(0.9) and a["aAcc"][1] == pytest.approx(0.0)
    assert all(math.isnan(v) for v in a["mAcc"])  # no run had it
    assert a["IoU"][1] == pytest.approx((0.3, np.std([0.2, 0.4], ddof=1)))  # None left out
    spi = np.array([0.10, 0.12, 0.11])
    assert a["seconds_per_iter"] == pytest.approx((spi.mean(), spi.std(ddof=1)))
    assert a["peak_memory_mib"][0] == pytest.approx(301.0) and a["params"] == 2_500_000
    assert a["classes"] == ["sky", "road"] and a["memory"] == "cpu_max_rss"
    b = rows["b"]
    assert b["runs"] == 1 and b["failed"] == [1] and b["mIoU"][0] == pytest.approx(0.3)
    assert math.isnan(b["mIoU"][1])  # one run: no spread
    c = rows["c"]
    assert c["runs"] == 0 and c["failed"] == [0] and c["params"] is None and c["IoU"] == []
    assert all(math.isnan(v) for v in c["mIoU"])


def test_mean_std_leaves_out_missing_values():
    assert mean_std([0.5, math.nan, 0.7]) == pytest.approx((0.6, statistics.stdev([0.5, 0.7])))
    mean, std = mean_std([0.5])
    assert mean == 0.5 and math.isnan(std)
    assert all(math.isnan(v) for v in mean_std([math.nan]))


def _header(**extra) -> dict:
    return {"command": "python tools/compare.py x", "date": "2024-01-01", "machine": "cpu",
            "budget": {"iters": 3, "batch_size": 2}, "split": "val", **extra}  # fmt: skip


def test_markdown_holds_a_row_per_variant_the_classes_and_the_failures(tmp_path, records):
    study = _study(Path("x.yaml"), tmp_path, ("a", []), ("b", []), ("c", []), seeds=[0, 1, 2],
                   title="My study")  # fmt: skip
    rows = aggregate(study, records)
    # done/planned of the header count one process's runs; the tables, the whole study's
    text = markdown(study, rows, records, _header(done=1, planned=1))
    lines = text.splitlines()
    assert lines[0] == "# My study"
    assert "- budget: 3 iterations x batch 2, seeds 0 1 2, scored once on the val split" in text
    assert "- **incomplete**: 4 of 9 runs finished (2 failed)" in lines
    assert (
        "| variant | runs | collapsed | mIoU | mBIoU | aAcc | mAcc | params (M) | s/iter "
        "| peak RSS, MiB |" in lines
    )
    # mean ± the 95 % t interval's half-width: t(0.975, 2) * s / sqrt(3)
    mious = np.array([0.50, 0.60, 0.65])
    mean = 100 * mious.mean()
    half = 100 * scipy.stats.t.ppf(0.975, 2) * mious.std(ddof=1) / math.sqrt(3)
    assert (
        f"| a | 3/3 | 0 | {mean:.2f} ± {half:.2f} | {mean / 2:.2f} ± {half / 2:.2f} "
        f"| 90.00 ± 0.00 | - | 2.500 | 0.110 | 301 |"
    ) in lines
    assert "| b | 1/3 | 0 | 30.00 | 15.00 | 90.00 | - | 2.500 | 0.200 | 300 |" in lines
    assert "| c | 0/3 | 0 | - | - | - | - | - | - | - |" in lines
    assert "| class | a | b | c |" in lines
    # per class, too: mean ± the t interval's half-width (a's road: 2 of 3 runs had it)
    road = 100 * scipy.stats.t.ppf(0.975, 1) * np.std([0.2, 0.4], ddof=1) / math.sqrt(2)
    assert f"| road | 30.00 ± {road:.2f} | 10.00 | - |" in lines
    assert "- b seed 1: exit 1, ValueError: out of cheese" in lines
    assert "  (log: runs/c/seed0/compare.log)" in lines
    # a vs b: one common seed, no interval; a vs c: none
    too_few = "too few seeds for an interval"
    assert f"| b | 1 | +20.00 | {too_few} | +10.00 | {too_few} |" in lines
    assert "incomplete" in markdown(study, rows, records[:4], _header(done=4, planned=4))
    only_a = _study(Path("x.yaml"), tmp_path, ("a", []), seeds=[0, 1, 2], title="a")
    finished = markdown(only_a, aggregate(only_a, records[:3]), records[:3], _header())
    assert "incomplete" not in finished and "Failed runs" not in finished


def test_mean_ci_is_the_t_interval():
    values = [0.31, 0.35, 0.29, 0.40, 0.33]
    mean, half = mean_ci(values)
    expected = scipy.stats.t.interval(0.95, 4, loc=np.mean(values), scale=scipy.stats.sem(values))
    assert (mean - half, mean + half) == pytest.approx(expected)
    assert math.isnan(mean_ci([0.5])[1]) and mean_ci([0.5])[0] == 0.5
    assert mean_ci([0.2, math.nan, 0.4])[0] == pytest.approx(0.3)


def test_paired_differences_claim_only_what_the_interval_supports():
    ref = [_record("lift", s, m, 0.1, 0.2) for s, m in enumerate([0.50, 0.52, 0.55, 0.51])]
    ahead = [_record("max", s, m, 0.1, 0.1) for s, m in enumerate([0.40, 0.41, 0.46, 0.42])]
    level = [_record("skip", s, m, 0.1, 0.1) for s, m in enumerate([0.55, 0.45, 0.60, 0.48])]
    rows = paired_differences("lift", [*ref, *ahead, *level], ["max", "skip"])
    by = {row["variant"]: row for row in rows}
    diffs = np.array([0.10, 0.11, 0.09, 0.09])
    low, high = scipy.stats.t.interval(0.95, 3, loc=diffs.mean(), scale=scipy.stats.sem(diffs))
    assert by["max"]["mIoU"]["mean"] == pytest.approx(diffs.mean())
    assert (by["max"]["mIoU"]["low"], by["max"]["mIoU"]["high"]) == pytest.approx((low, high))
    assert by["max"]["verdict"] == "lift ahead" and by["max"]["seeds"] == [0, 1, 2, 3]
    assert by["skip"]["verdict"] == "no significant difference"
    assert by["max"]["verdicts"] == {"mIoU": "lift ahead", "mBIoU": "lift ahead"}
    # mBIoU has its own verdict: level in mIoU, behind lift's boundaries on every seed
    for record in level:
        record["metrics"]["mBIoU"] = 0.1
    skip = paired_differences("lift", [*ref, *level], ["skip"])[0]
    assert skip["verdicts"] == {"mIoU": "no significant difference", "mBIoU": "lift ahead"}
    assert skip["verdict"] == "no significant difference"  # the headline: mIoU's
    behind = paired_differences("max", [*ref, *ahead], ["lift"])[0]
    assert behind["verdict"] == "lift ahead"  # the other way round: the interval is below 0
    # a seed without a figure (a run from before mBIoU was scored) counts for none
    ref[3]["metrics"]["mBIoU"] = None
    row = paired_differences("lift", [*ref, *ahead], ["max"])[0]
    assert (row["mIoU"]["n"], row["mBIoU"]["n"]) == (4, 3)
    assert row["mBIoU"]["mean"] == pytest.approx(np.mean([0.05, 0.055, 0.045]))  # seeds 0-2
    ref[1]["metrics"]["mBIoU"] = ref[2]["metrics"]["mBIoU"] = None
    row = paired_differences("lift", [*ref, *ahead], ["max"])[0]
    assert row["mBIoU"]["n"] == 1 and row["verdicts"]["mBIoU"] == "too few seeds for an interval"


def test_a_run_predicting_one_class_is_flagged_collapsed():
    prior = {"confusion_matrix": [[900, 0], [95, 5]]}  # 995 of 1000 predicted as class 0
    learned = {"confusion_matrix": [[880, 20], [40, 60]]}
    assert is_collapsed(prior) and not is_collapsed(learned)
    assert not is_collapsed({"confusion_matrix": [[0, 0], [0, 0]]})


def test_read_curve_keeps_one_point_per_iteration(tmp_path):
    lines = [
        {"iteration": 100, "seconds": 10.0, "mIoU": 0.1, "mBIoU": 0.05},
        {"iteration": 200, "seconds": 20.0, "mIoU": 0.2, "mBIoU": 0.1},
        {"iteration": 200, "seconds": 21.0, "mIoU": 0.25, "mBIoU": 0.1},  # again, after a resume
        {"iteration": 300, "seconds": 30.0, "mIoU": 0.3, "mBIoU": 0.2},
    ]
    (tmp_path / "curve.jsonl").write_text("".join(json.dumps(p) + "\n" for p in lines))
    curve = read_curve(tmp_path)
    assert [p["iteration"] for p in curve] == [100, 200, 300] and curve[1]["mIoU"] == 0.25
    assert read_curve(tmp_path / "none") == []


def test_a_curve_line_cut_short_by_a_kill_loses_only_itself(tmp_path):
    metrics = {"mIoU": 0.1, "mBIoU": 0.05, "mAcc": 0.2, "aAcc": 0.3}
    rundir.append_curve(tmp_path, 100, 10.0, metrics)
    with open(tmp_path / "curve.jsonl", "a") as handle:
        handle.write('{"iteration": 200, "seco')  # the process died here
    rundir.append_curve(tmp_path, 200, 21.0, {**metrics, "mIoU": 0.25})  # after the resume
    curve = read_curve(tmp_path)
    assert [p["iteration"] for p in curve] == [100, 200] and curve[1]["mIoU"] == 0.25


def test_sweep_chooses_each_variants_best_point_on_its_own(tmp_path, config):
    sweep = Sweep(grid={"train.lr": [0.01, 0.05]}, overrides=["train.iters=2"], seed=7)
    study = _study(
        config,
        tmp_path,
        ("a", ["model.down=max", "model.up=bilinear"]),
        ("b", []),
        sweep=sweep,
        split="test",  # tuned on val, reported on test
    )
    tuning = sweep_study(study)
    assert [v.name for v in tuning.variants] == [
        "a @ train.lr=0.01", "a @ train.lr=0.05", "b @ train.lr=0.01", "b @ train.lr=0.05",
    ]  # fmt: skip
    assert tuning.variants[1].overrides == [
        "model.down=max", "model.up=bilinear", "train.iters=2", "train.lr=0.05"
    ]  # fmt: skip
    assert tuning.seeds == [7] and tuning.split == "val" and tuning.out == tmp_path / "sweep"
    scores = {"a @ train.lr=0.01": 0.3, "a @ train.lr=0.05": 0.4, "b @ train.lr=0.01": 0.5}
    records = [_record(name, 7, m, None, 0.1) for name, m in scores.items()]
    records.append(_failed("b @ train.lr=0.05", 7))
    chosen = choose_points(study, records)
    assert chosen["a"]["point"] == {"train.lr": 0.05} and chosen["a"]["score"] == 0.4
    assert chosen["b"]["point"] == {"train.lr": 0.01}
    assert chosen["b"]["scores"] == [({"train.lr": 0.01}, 0.5), ({"train.lr": 0.05}, None)]
    final = final_study(study, chosen)
    assert final.variants[0].overrides == ["model.down=max", "model.up=bilinear", "train.lr=0.05"]
    assert check_budgets(final)["iters"] == 3  # the full budget, not the sweep's
    # Half of a's grid (another process still tuning it): no choice for a yet.
    assert "a" not in choose_points(study, records[1:])
    assert choose_points(study, records[1:])["b"] == chosen["b"]
    with pytest.raises(StudyError, match="every sweep run of 'a' failed"):
        choose_points(study, [_failed("a @ train.lr=0.01", 7), _failed("a @ train.lr=0.05", 7)])


def test_equal_time_gives_each_variant_the_references_training_time(tmp_path, config):
    study = _study(
        config,
        tmp_path,
        ("lift", []),
        ("max", ["model.down=max", "model.up=bilinear"]),
        seeds=[0, 1],
    )
    records = [_record("lift", s, 0.5, None, 0.30) for s in (0, 1)]
    records += [_record("max", s, 0.4, None, spi) for s, spi in ((0, 0.10), (1, 0.20))]
    timed = equal_time_study(study, records)
    assert [v.name for v in timed.variants] == ["max (equal time)"]
    assert timed.variants[0].overrides[-1] == "train.iters=6"  # 3 iters x 0.30 / 0.15
    assert timed.out == tmp_path / "equal_time"
    assert equal_time_study(study, records[:2]) is None  # max not timed yet
    # One of max's seeds (another --only process still runs the other): not yet, the
    # ratio must be that of all the seeds in every process.
    assert equal_time_study(study, records[:3]) is None
    # A seed that failed counts as done: the ratio comes from the runs that finished.
    failed = equal_time_study(study, [*records[:3], _failed("max", 1)])
    assert failed.variants[0].overrides[-1] == "train.iters=9"  # 3 iters x 0.30 / 0.10


def test_equal_time_iterations_fixed_in_the_study_file_are_trained_as_given(tmp_path, config):
    study = _study(config, tmp_path, ("lift", []), ("max", ["model.down=max", "model.up=bilinear"]),
                   seeds=[0, 1],
                   equal_time={"max": 7})  # fmt: skip
    records = [_record("lift", s, 0.5, None, 0.30) for s in (0, 1)]
    records += [_record("max", s, 0.4, None, spi) for s, spi in ((0, 0.10), (1, 0.20))]
    timed = equal_time_study(study, records)  # measured: 6 (test above); fixed: 7
    assert timed.variants[0].overrides[-1] == "train.iters=7"
    rows = aggregate(study, records)
    timed_records = [_record("max (equal time)", s, 0.45, None, 0.1) for s in (0, 1)]
    fixed = markdown(study, rows, records, _header(), {"equal_time": (timed, timed_records)})
    assert "the iterations the study file fixes" in fixed and "fix them in" not in fixed
    measured = replace(study, equal_time=True)
    text = markdown(measured, rows, records, _header(), {"equal_time": (timed, timed_records)})
    # the measured iterations, printed as the study-file entry that trains them again
    assert "`equal_time: {max: 7}`" in text
    # Fixed: nothing to measure, so no wait for max's seeds (another process may run them).
    early = equal_time_study(study, records[:2])
    assert early is not None and early.variants[0].overrides[-1] == "train.iters=7"
    # ... but max must be in the study (with a sweep: tuned), else no run is planned yet.
    assert equal_time_study(replace(study, variants=study.variants[:1]), records) is None
    untuned_reference = replace(study, variants=study.variants[1:], reference=None)
    assert equal_time_study(untuned_reference, records) is None


@pytest.mark.parametrize(
    "equal_time",
    [{"max": 5}, {"b": 5, "max": 5, "z": 5}, {"b": 5, "max": 5, "lift": 5}, {"b": 0, "max": 5},
     {"b": "5", "max": 5}, {1: 5, "max": 5}, "yes"],
)  # fmt: skip
def test_read_study_refuses_equal_time_iterations_that_miss_or_add_a_variant(config, equal_time):
    path = config.parent / "study.yaml"
    variants = {
        "lift": [],
        "b": ["model.up=bilinear"],
        "max": ["model.down=max", "model.up=bilinear"],
    }
    path.write_text(yaml.safe_dump({"config": "tiny.yaml", "variants": variants,
                                    "reference": "lift", "equal_time": equal_time}))  # fmt: skip
    with pytest.raises(StudyError, match=r"'equal_time' must be .*\['b', 'max'\]"):
        read_study(path)
    path.write_text(yaml.safe_dump({"config": "tiny.yaml", "variants": variants,
                                    "reference": "lift", "equal_time": {"max": 4, "b": 3}}))  # fmt: skip
    assert read_study(path).equal_time == {"max": 4, "b": 3}
    path.write_text(yaml.safe_dump({"config": "tiny.yaml", "variants": variants,
                                    "equal_time": None}))  # fmt: skip
    assert read_study(path).equal_time is False  # an empty key: no equal-time phase


def test_read_study_takes_the_protocol(tmp_path, config):
    path = tmp_path / "fair.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "config": str(config),
                "variants": {"a": [], "b": ["model.down=max", "model.up=bilinear"]},
                "sweep": {"grid": {"train.lr": ["1e-3", 0.01]}, "set": ["train.iters=2"]},
                "reference": "b",
                "equal_time": True,
            }
        ).replace("'1e-3'", "1e-3")
    )
    study = read_study(path)
    assert study.sweep.grid == {"train.lr": [0.001, 0.01]}  # 1e-3 read as a number
    assert study.sweep.overrides == ["train.iters=2"] and study.sweep.split == "val"
    assert study.reference_name == "b" and study.equal_time
    path.write_text(path.read_text().replace("reference: b", "reference: z"))
    with pytest.raises(StudyError, match="reference 'z' is not a variant"):
        read_study(path)


def test_write_results_writes_the_tables_and_the_plot(tmp_path, records):
    study = _study(Path("x.yaml"), tmp_path, ("a", []), ("b", []), ("c", []), seeds=[0, 1, 2])
    rows = write_results(study, records, _header(title="study"))
    assert [row["variant"] for row in rows] == ["a", "b", "c"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["runs"] == json.loads(json.dumps(records))
    assert saved["variants"][2]["mIoU"] == [None, None]  # NaN as null: strict JSON
    assert (saved["planned"], saved["done"], saved["failed"]) == (9, 4, 2)  # the whole study
    assert (tmp_path / "results.md").read_text().startswith("# study")
    assert (tmp_path / "results.png").stat().st_size > 0
    assert (tmp_path / "per_class.png").stat().st_size > 0  # every variant's classes in one


def test_rewriting_the_tables_never_drops_a_finished_run(tmp_path, records):
    study = _study(Path("x.yaml"), tmp_path, ("a", []), ("b", []), ("c", []), seeds=[0, 1, 2])
    write_results(study, records, _header(title="study"))
    before = (tmp_path / "results.md").read_text()
    tables_only = with_options(study, only=[])
    # a seed 0's folder is gone: its row would lose a run, so nothing is rewritten
    with pytest.raises(StudyError, match=r"1 finished run\(s\).*\(a seed 0\).*nothing was"):
        write_results(tables_only, records[1:], _header(date="2030-01-01"))
    assert (tmp_path / "results.md").read_text() == before
    write_results(tables_only, records, _header(date="2030-01-01"))  # every run still there
    assert "- date: 2030-01-01;" in (tmp_path / "results.md").read_text()
    # a process that runs variants writes what it has (a folder removed to train it again)
    write_results(study, records[1:], _header())
    assert "| a | 2/3 |" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("size", [(6, 4), (12, 4), (4, 3)])
def test_plot_titles_fit_their_figure(size):
    """A study's long title, broken to fit: its rendered box lies inside the figure (the
    unbroken one overflows the narrow figures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    text = (
        "CamVid test, fair protocol (SegNet vgg16_bn x1/4 from scratch, 180x240 crops, "
        "AdamW tuned per variant): per-class IoU, mean ± std over seeds"
    )

    def inside(title: str) -> bool:
        fig, ax = plt.subplots(figsize=size)
        ax.set_title(title, fontsize=TITLE_SIZE)
        fig.tight_layout()
        fig.canvas.draw()
        box = ax.title.get_window_extent()
        width = fig.bbox.width
        plt.close(fig)
        return box.x0 >= 0 and box.x1 <= width

    figure = plt.figure(figsize=size)
    assert inside(fitted_title(figure, text))
    plt.close(figure)
    if size[0] <= 6:
        assert not inside(text)


@pytest.mark.parametrize(("variants", "classes"), [(5, 11), (25, 11), (3, 150)])
def test_per_class_chart_stays_readable(tmp_path, variants, classes, monkeypatch):
    """Grouped bars while there are few; a sweep's 25 points or ADE20K's 150 classes get a
    heat map of bounded size (grouped bars were 15 000 pixels wide for a CamVid sweep).
    Means missing as NaN or as None (rows read back from results.json) are drawn empty,
    and the title stays inside the figure."""
    import matplotlib.figure
    from PIL import Image

    saved = []
    savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "savefig",
        lambda fig, *a, **k: (saved.append(fig), savefig(fig, *a, **k)),
    )
    rng = np.random.default_rng(0)
    names = [f"class {c}" for c in range(classes)]
    rows = [
        {"variant": f"max/maxunpool+skip @ train.lr=0.000{v}", "runs": 1, "classes": names,
         "IoU": [(float(rng.uniform(0, 1)), math.nan) for _ in names]}
        for v in range(variants)
    ]  # fmt: skip
    rows[0]["IoU"][1] = (None, None)
    rows[-1]["IoU"][0] = (math.nan, math.nan)
    study = _study(Path("x.yaml"), tmp_path, ("a", []))
    study = replace(
        study,
        title="CamVid test, fair protocol (SegNet vgg16_bn x1/4 from scratch, 180x240 crops, AdamW tuned per variant)",
    )
    plot_per_class(study, rows, tmp_path / "per_class.png")
    image = Image.open(tmp_path / "per_class.png")
    assert image.width <= 30 * 110 and image.height <= 30 * 110
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 20  # drawn, not blank
    if variants * classes <= 60:  # bars: about half an inch per bar
        assert image.width >= 0.5 * variants * classes * 110
    (fig,) = saved
    fig.canvas.draw()
    titles = [t for t in (fig._suptitle, *(ax.title for ax in fig.axes)) if t and t.get_text()]
    assert titles and "CamVid test" in titles[0].get_text()
    for title in titles:
        box = title.get_window_extent()
        assert 0 <= box.x0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height


def test_a_run_is_held_by_one_process_at_a_time_and_freed_however_it_ends(tmp_path, config):
    study = _study(config, tmp_path / "out", ("a", []), ("b", []), seeds=[0])
    folder = tmp_path / "out" / "runs" / "a" / "seed0"
    assert not is_held(folder) and not folder.exists()  # looking creates nothing
    with hold_run(folder) as held:
        assert held is not None and is_held(folder)
        assert [(v.name, s) for v, s in held_runs(study)] == [("a", 0)]
        with hold_run(folder) as again:  # a second hold (another process's) is refused
            assert again is None
        assert is_held(folder)
    assert not is_held(folder) and held_runs(study) == []
    # A process killed while it holds a run leaves no stale lock behind.
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time; from pathlib import Path; from seg.engine.study import hold_run\n"
            "with hold_run(Path(sys.argv[1])) as held:\n"
            "    print(held is not None, flush=True); time.sleep(600)"
        ), str(folder)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "True"
        assert is_held(folder)
        with hold_run(folder) as held:
            assert held is None
    finally:
        holder.kill()
        holder.wait()
    assert not is_held(folder)
    with hold_run(folder) as held:
        assert held is not None
