"""tools/compare.py through its command line: a tiny study, its tables, resuming, failures."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from seg.engine import load_checkpoint
from seg.engine.study import (
    StudyError,
    check_recorded_runs_are_here,
    find_finished,
    hold_run,
    sweep_study,
    write_results,
)

ROOT = Path(__file__).resolve().parents[2]

VARIANTS = [
    ["--variant", "lift/lift", "model.down=lift", "model.up=lift"],
    ["--variant", "max/maxunpool", "model.down=max", "model.up=maxunpool"],
    # Valid as a config, fails when training starts: a run that fails on its own.
    ["--variant", "broken", "train.class_weights=[1.0, 2.0]"],
]


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_config, compare_cli):
    out = tmp_path_factory.mktemp("study")
    args = [tiny_config, *sum(VARIANTS, []), "--seeds", 0, 1, "--images", 2, "--out", out]
    first = compare_cli(*args, check=1)  # 1: a run failed
    return out, args, first


def _study(compare, *args: str):
    """The study tools/compare.py makes of these arguments."""
    parser = compare._parser()
    return compare._study(parser.parse_args(args), parser)


def _held_until_the_first_poll(compare, monkeypatch, folder: Path) -> list[float]:
    """``folder`` held as by another process, which stops while this one waits for it:
    the seconds of each wait, as they come."""
    holder = hold_run(folder)
    assert holder.__enter__() is not None
    polls = []

    def sleep(seconds):
        polls.append(seconds)
        holder.__exit__(None, None, None)

    monkeypatch.setattr(compare, "_sleep", sleep)
    return polls


def _run_metrics(out: Path, variant: str, seed: int) -> dict:
    return json.loads((out / "runs" / variant / f"seed{seed}" / "metrics.json").read_text())


@pytest.mark.slow
def test_results_are_the_mean_and_std_of_each_run(study):
    out, _, first = study
    results = json.loads((out / "results.json").read_text())
    rows = {row["variant"]: row for row in results["variants"]}
    for variant, slug in (("lift/lift", "lift-lift"), ("max/maxunpool", "max-maxunpool")):
        runs = [_run_metrics(out, slug, seed) for seed in (0, 1)]
        assert rows[variant]["runs"] == 2 and rows[variant]["failed"] == []
        for key in ("mIoU", "mBIoU", "aAcc", "mAcc"):
            values = [run[key] for run in runs]
            mean, std = rows[variant][key]
            assert mean == pytest.approx(statistics.mean(values))
            assert std == pytest.approx(statistics.stdev(values))
        for index in range(4):
            values = [run["IoU"][index] for run in runs if run["IoU"][index] is not None]
            if values:
                assert rows[variant]["IoU"][index][0] == pytest.approx(statistics.mean(values))
        assert rows[variant]["params"] == runs[0]["train"]["params"]
        spi = statistics.mean(run["train"]["seconds_per_iter"] for run in runs)
        assert rows[variant]["seconds_per_iter"][0] == pytest.approx(spi)
    # Each run trained what its name says, with its seed, for the shared budget.
    for seed in (0, 1):
        cfg = yaml.safe_load(
            (out / "runs" / "max-maxunpool" / f"seed{seed}" / "config.yaml").read_text()
        )
        assert cfg["train"]["seed"] == seed and cfg["model"]["up"] == "maxunpool"
        assert (
            load_checkpoint(out / "runs" / "lift-lift" / f"seed{seed}" / "last.pt")["iteration"]
            == 3
        )
    lift_params = rows["lift/lift"]["params"]
    assert lift_params > rows["max/maxunpool"]["params"]  # the learned predictors
    assert "lift/lift, seed 1" in first.stdout


@pytest.mark.slow
def test_a_failed_run_is_reported_and_not_averaged(study):
    out, _, first = study
    results = json.loads((out / "results.json").read_text())
    broken = next(row for row in results["variants"] if row["variant"] == "broken")
    assert broken["runs"] == 0 and broken["failed"] == [0, 1] and broken["mIoU"] == [None, None]
    failed = [run for run in results["runs"] if run["status"] == "failed"]
    assert [run["seed"] for run in failed] == [0, 1]
    assert all("class_weights has 2 values for 4 classes" in run["error"] for run in failed)
    text = (out / "results.md").read_text()
    assert "| broken | 0/2 |" in text and "| lift/lift | 2/2 |" in text
    assert "Failed runs" in text and "class_weights has 2 values" in text
    assert "2 run(s) failed" in first.stderr


@pytest.mark.slow
def test_pictures_are_written(study):
    out, _, _ = study
    bars = Image.open(out / "results.png")
    grid = Image.open(out / "predictions.png")
    assert bars.format == grid.format == "PNG"
    # image | truth | lift/lift | max/maxunpool, 2 rows of square scenes: wider than tall.
    assert grid.width > 1.5 * grid.height
    pixels = np.asarray(grid.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10


@pytest.mark.slow
def test_running_again_reruns_only_what_did_not_finish(study, compare_cli):
    out, args, _ = study
    lift_log = out / "runs" / "lift-lift" / "seed0" / "compare.log"
    broken_log = out / "runs" / "broken" / "seed0" / "compare.log"
    before = lift_log.read_text(), broken_log.read_text().count("tools/train.py")
    mtime = (out / "runs" / "lift-lift" / "seed0" / "last.pt").stat().st_mtime_ns
    again = compare_cli(*args, check=1)
    assert lift_log.read_text() == before[0]
    assert (out / "runs" / "lift-lift" / "seed0" / "last.pt").stat().st_mtime_ns == mtime
    assert broken_log.read_text().count("tools/train.py") == before[1] + 1  # failures retry
    assert "| lift/lift | 2/2 |" in again.stdout
    # Scoring another checkpoint reuses the training; the same folder trained with other
    # settings is refused, not mixed in.
    only = compare_cli(*args, "--only", "lift/lift", check=0)  # and what else finished
    assert "| lift/lift | 2/2 |" in only.stdout and "| max/maxunpool | 2/2 |" in only.stdout
    assert "| broken |" not in only.stdout
    # --tables runs nothing (not even the failed run) and rewrites the tables; the command
    # they record is the whole study's, without the arguments that chose what to run.
    tables = compare_cli(*args, "--tables", check=0)
    assert broken_log.read_text().count("tools/train.py") == before[1] + 1
    assert "| lift/lift | 2/2 |" in tables.stdout and "| max/maxunpool | 2/2 |" in tables.stdout
    text = (out / "results.md").read_text()
    command = next(line for line in text.splitlines() if line.startswith("- command:"))
    assert "--tables" not in command and "--only" not in command and "--seeds 0 1" in command
    best = compare_cli(*args, "--checkpoint", "best", "--only", "lift/lift", check=0)
    assert lift_log.read_text().count("tools/train.py") == before[0].count("tools/train.py")
    assert "tools/eval.py" in lift_log.read_text()
    scored = json.loads((lift_log.parent / "eval_val_best" / "metrics.json").read_text())
    assert scored["checkpoint"].endswith("best.pt") and scored["num_images"] == 5
    # max/maxunpool has no best-checkpoint score: it is not mixed into that table.
    assert "| lift/lift | 2/2 |" in best.stdout and "| max/maxunpool |" not in best.stdout
    changed = compare_cli(*args, "--set", "train.lr=0.01", check=2)
    assert "the study changed" in changed.stderr


def test_a_study_never_drops_finished_runs_whose_folders_are_gone(
    tmp_path, tiny_config, compare_cli, load_tool
):
    # A clean clone holds a study's tables, not its run folders: running one variant there
    # would rewrite the tables with that run alone. Refused before anything is trained.
    variants = [*VARIANTS[0], *VARIANTS[1]]
    done = tmp_path / "done"
    compare_cli(tiny_config, *variants, "--seeds", 0, "--images", 0, "--out", done, check=0)
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("results.json", "results.md"):
        (clone / name).write_bytes((done / name).read_bytes())
    args = [tiny_config, *variants, "--seeds", 0, "--images", 0, "--out", clone]
    refused = compare_cli(*args, "--only", "max/maxunpool", check=2)
    assert "lists 1 finished run(s) the new tables would lose" in refused.stderr
    assert "lift/lift seed 0" in refused.stderr and "nothing was trained" in refused.stderr
    assert (clone / "results.json").read_bytes() == (done / "results.json").read_bytes()
    assert not (clone / "runs").exists()
    # Nor by scoring another split there (the val tables could not be made again).
    other_split = compare_cli(*args, "--only", "max/maxunpool", "--split", "test", check=2)
    assert "lift/lift seed 0" in other_split.stderr and not (clone / "runs").exists()
    # The whole study may run again; its tables never trade a finished run for a failure.
    compare = load_tool("compare")
    whole = _study(compare, *map(str, args))
    failed = {"variant": "lift/lift", "seed": 0, "status": "failed"}
    with pytest.raises(StudyError, match=r"lists 1 finished run\(s\) .*\(lift/lift seed 0\)"):
        write_results(whole, [failed], {})
    # A damaged record in a run folder: one line naming it and the fix, no traceback.
    damaged = done / "runs" / "lift-lift" / "seed0" / "metrics.json"
    damaged.write_text('{"mIoU": 0.')
    again = compare_cli(tiny_config, *variants, "--seeds", 0, "--images", 0, "--out", done, check=2)
    assert f"{damaged} is not a JSON object" in again.stderr and "Traceback" not in again.stderr


def test_what_would_score_a_choice_or_a_wrong_split_is_refused_before_training(
    tmp_path, tiny_config, compare_cli, ab_study
):
    out = tmp_path / "out"
    # Settings tuned on the split the study reports: that split is no longer scored once.
    study_file = ab_study(tmp_path / "s.yaml", tiny_config, [], [0], sweep_iters=1, split="val")
    tuned = compare_cli("--study", study_file, "--out", out, check=2)
    assert "the sweep chooses each variant's settings on the val split" in tuned.stderr
    # best.pt, chosen among several validations on val, scored on val again.
    variant = VARIANTS[1]
    best = compare_cli(
        tiny_config, *variant, "--checkpoint", "best", "--out", out,
        "--set", "train.val_interval=1", check=2,
    )  # fmt: skip
    assert "best.pt is the checkpoint that scored best on the val split" in best.stderr
    # On test it is scored once; a val_interval of 0 validates only at the end: no choice.
    for allowed in (["--split", "test"], []):
        assert (
            "best.pt is the"
            not in compare_cli(
                tiny_config, *variant, "--checkpoint", "best", "--tables", "--out", out, *allowed
            ).stderr
        )
    # A misspelt split: refused before anything trains, not after every run.
    typo = compare_cli(tiny_config, *variant, "--split", "tset", "--out", out, check=2)
    assert "unknown synthetic split 'tset'; did you mean 'test'?" in typo.stderr
    assert not (out / "runs").exists()


def test_a_tuning_run_whose_folder_is_gone_is_found_before_training(
    tmp_path, tiny_config, ab_study, load_tool
):
    compare = load_tool("compare")
    study_file = ab_study(tmp_path / "s.yaml", tiny_config, [], [0], sweep_iters=1, split="test")
    args = ["--study", str(study_file), "--out", str(tmp_path / "out")]
    study = _study(compare, *args, "--only", "a")
    tuned = next(v for v in sweep_study(study).variants if v.base == "b")
    sweep = tmp_path / "out" / "sweep"
    sweep.mkdir(parents=True)
    runs = [{"variant": tuned.name, "seed": 0, "status": "ok"}]
    (sweep / "results.json").write_text(
        json.dumps({"split": "val", "checkpoint": "last", "runs": runs})
    )
    with pytest.raises(StudyError, match=r"sweep/results.json lists 1 finished run"):
        check_recorded_runs_are_here(study)
    check_recorded_runs_are_here(_study(compare, *args))  # the whole study trains it again


def test_variants_must_share_a_budget_and_a_test_set(tiny_config, tmp_path, compare_cli):
    done = compare_cli(
        tiny_config,
        *["--variant", "short", "train.iters=2", "--variant", "long", "train.iters=5"],
        *["--out", tmp_path],
        check=2,
    )
    assert "don't share a budget" in done.stderr and "short: 2 iters" in done.stderr
    assert not (tmp_path / "runs").exists()
    done = compare_cli(tiny_config, "--variant", "a", "--variant", "b", "eval.split=test",
                       "--out", tmp_path, check=2)  # fmt: skip
    assert "not scored on the same data" in done.stderr and "b: test split" in done.stderr


def test_the_command_line_takes_one_way_of_naming_variants(tmp_path, tiny_config, compare_cli):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"config": str(tiny_config), "variants": {"a": []}}))
    done = compare_cli("--study", study, tiny_config, check=2)
    assert "either --study or configs/--variant" in done.stderr
    done = compare_cli(tiny_config, tiny_config, "--variant", "a", check=2)
    assert "--variant needs exactly one config" in done.stderr
    done = compare_cli("--study", study, "--only", "b", "--out", tmp_path, check=2)
    assert "--only: no variant(s) ['b']; the variants are ['a']" in done.stderr
    done = compare_cli(tmp_path / "missing.yaml", check=2)
    assert "config file not found" in done.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_the_fair_protocol_tunes_on_val_scores_test_once_and_compares_at_equal_time(
    tmp_path, tiny_config, compare_cli
):
    study_file = tmp_path / "fair.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "config": str(tiny_config),
                "set": ["train.iters=4", "train.val_interval=2", "train.optimizer=adamw"],
                "seeds": [0, 1],
                "split": "test",
                "reference": "lift/lift",
                "equal_time": True,
                "images": 0,
                "sweep": {"grid": {"train.lr": [0.001, 0.01]}, "set": ["train.iters=2"]},
                "variants": {
                    "lift/lift": ["model.down=lift", "model.up=lift"],
                    "max/bilinear": ["model.down=max", "model.up=bilinear"],
                },
            }
        )
    )
    out = tmp_path / "out"
    done = compare_cli("--study", study_file, "--out", out, check=0)
    results = json.loads((out / "results.json").read_text())
    # Tuning: every variant at every point, 2 iterations, one seed, scored on val.
    sweep = results["sweep"]
    assert len(sweep["runs"]) == 4 and {r["split"] for r in sweep["runs"]} == {"val"}
    for name, choice in sweep["chosen"].items():
        scores = {json.dumps(p): s for p, s in choice["scores"]}
        assert choice["score"] == max(scores.values())
        lr = choice["point"]["train.lr"]
        folder = out / "sweep" / "runs" / (name.replace("/", "-") + f"-train.lr-{lr}") / "seed0"
        tuned = yaml.safe_load((folder / "config.yaml").read_text())
        assert tuned["train"]["iters"] == 2 and tuned["train"]["lr"] == lr
        # The seeds ran at the full budget with that point, scored once on test.
        for seed in (0, 1):
            run = out / "runs" / name.replace("/", "-") / f"seed{seed}"
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            assert cfg["train"]["iters"] == 4 and cfg["train"]["lr"] == lr
            assert (run / "eval_test_last" / "metrics.json").is_file()
            assert [p["iteration"] for p in _curve(run)] == [2, 4]
    assert {r["split"] for r in results["runs"]} == {"test"}
    # Paired differences over both seeds, and the equal-time runs of the other variant.
    (difference,) = results["differences"]
    assert difference["variant"] == "max/bilinear" and difference["seeds"] == [0, 1]
    mine = {r["seed"]: r for r in results["runs"] if r["variant"] == "lift/lift"}
    theirs = {r["seed"]: r for r in results["runs"] if r["variant"] == "max/bilinear"}
    diffs = [mine[s]["metrics"]["mIoU"] - theirs[s]["metrics"]["mIoU"] for s in (0, 1)]
    assert difference["mIoU"]["mean"] == pytest.approx(np.mean(diffs))
    timed = results["equal_time"]
    assert [row["variant"] for row in timed["variants"]] == ["max/bilinear (equal time)"]
    spi = {
        name: np.mean(
            [r["train"]["seconds_per_iter"] for r in results["runs"] if r["variant"] == name]
        )
        for name in ("lift/lift", "max/bilinear")
    }
    iters = max(1, round(4 * spi["lift/lift"] / spi["max/bilinear"]))
    timed_cfg = yaml.safe_load(
        (
            out / "equal_time" / "runs" / "max-bilinear-equal-time" / "seed0" / "config.yaml"
        ).read_text()
    )
    assert timed_cfg["train"]["iters"] == iters
    text = (out / "results.md").read_text()
    assert "Tuning (mIoU in % on the val split" in text and "Equal training time" in text
    assert "Paired differences, per seed: lift/lift minus each variant" in text
    for picture in ("results.png", "curves.png", "sweep.png"):
        assert (out / picture).stat().st_size > 1000
    assert "== tuning: 4 run(s)" in done.stdout


def _curve(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "curve.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_tables_hold_what_another_only_process_finished_while_this_one_ran(
    tmp_path, tiny_config, load_tool, monkeypatch
):
    """Two processes with disjoint --only lists: the one that finishes last writes tables
    holding every run that finished, also those the other finished after this one started."""
    compare = load_tool("compare")
    monkeypatch.chdir(ROOT)
    args = [str(tiny_config), "--variant", "a", "model.up=maxunpool", "model.down=max",
            "--variant", "b", "model.up=bilinear", "model.down=max",
            "--seeds", "0", "--images", "0", "--out", str(tmp_path)]  # fmt: skip
    mine, other = _study(compare, *args, "--only", "b"), _study(compare, *args, "--only", "a")
    real_run_one = compare.run_one

    def run_one(study, variant, seed):
        # a (first in the study) is looked up before b runs, not finished yet; the other
        # process finishes it while b trains.
        (a,) = other.selected
        assert find_finished(other, a, seed) is None
        real_run_one(other, a, seed)
        return real_run_one(study, variant, seed)

    monkeypatch.setattr(compare, "run_one", run_one)
    assert compare.run_study(mine, "python tools/compare.py") == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["variant"], r["runs"]) for r in results["variants"]] == [("a", 1), ("b", 1)]
    assert "| a | 1/1 |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_a_process_that_finishes_last_tabulates_the_whole_protocol(
    tmp_path, tiny_config, ab_study, load_tool, monkeypatch
):
    """The fair protocol split over two --only processes: b's process chose its rate before
    a's tuning had finished, a's process then tuned and ran a's seeds while b trained. b's
    process, last to finish, tables a's choice and seeds too, and runs b's equal-time runs
    (a's process left them: b's seeds were not all done, so the time ratio was not known)."""
    compare = load_tool("compare")
    monkeypatch.chdir(ROOT)
    study_file = ab_study(
        tmp_path / "fair.yaml",
        tiny_config,
        ["train.iters=2", "train.optimizer=adamw"],
        [0],
        sweep_iters=1,
        split="test",
    )
    args = ["--study", str(study_file), "--out", str(tmp_path / "out")]
    mine, other = _study(compare, *args, "--only", "b"), _study(compare, *args, "--only", "a")
    real_run_one = compare.run_one
    others_turn = []

    def run_one(study, variant, seed):
        if variant.name == "b" and not others_turn:  # b's first seed: a's process runs now
            others_turn.append(compare._protocol(other, "python tools/compare.py"))
        return real_run_one(study, variant, seed)

    monkeypatch.setattr(compare, "run_one", run_one)
    assert compare.run_study(mine, "python tools/compare.py") == 0
    (theirs,) = others_turn
    assert "equal_time" not in theirs[3]  # a's process could not size b's equal-time runs
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(r["variant"], r["runs"]) for r in results["variants"]] == [("a", 1), ("b", 1)]
    assert set(results["sweep"]["chosen"]) == {"a", "b"}
    assert [r["variant"] for r in results["equal_time"]["variants"]] == ["b (equal time)"]
    text = (tmp_path / "out" / "results.md").read_text()
    assert "| a | 1/1 |" in text and "| b (equal time) |" in text


@pytest.mark.slow
def test_a_run_another_process_holds_is_left_to_it_and_continued_if_it_stops(
    tmp_path, tiny_config, load_tool, monkeypatch, capsys
):
    """Run a is held (another process is training it): this one runs b, then waits for a;
    the holder stops without finishing, so this one trains a itself."""
    compare = load_tool("compare")
    monkeypatch.chdir(ROOT)
    args = [str(tiny_config), "--variant", "a", "model.up=maxunpool", "model.down=max",
            "--variant", "b", "model.up=bilinear", "model.down=max",
            "--seeds", "0", "--images", "0", "--out", str(tmp_path)]  # fmt: skip
    study = _study(compare, *args)
    polls = _held_until_the_first_poll(compare, monkeypatch, tmp_path / "runs" / "a" / "seed0")
    assert compare.run_study(study, "python tools/compare.py") == 0
    out = capsys.readouterr().out
    assert out.index("another process is running it") < out.index("b, seed 0")
    assert "waiting for 1 run(s) other processes are running: a seed 0" in out
    assert polls == [compare.POLL_SECONDS]
    for name in ("a", "b"):
        log = (tmp_path / "runs" / name / "seed0" / "compare.log").read_text()
        assert log.count("tools/train.py") == 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["variant"], r["runs"]) for r in results["variants"]] == [("a", 1), ("b", 1)]


@pytest.mark.slow
def test_an_only_process_waits_for_the_seeds_that_size_its_equal_time_runs(
    tmp_path, tiny_config, ab_study, load_tool, monkeypatch, capsys
):
    """--only b finishes b's seed while another process still trains a's (it holds it):
    rather than stop without equal-time runs, b's process waits for a, then runs them."""
    compare = load_tool("compare")
    monkeypatch.chdir(ROOT)
    study_file = ab_study(tmp_path / "timed.yaml", tiny_config, ["train.iters=2"], [0])
    args = ["--study", str(study_file), "--out", str(tmp_path / "out")]
    mine, other = _study(compare, *args, "--only", "b"), _study(compare, *args, "--only", "a")
    (a,) = other.selected
    holder = hold_run(tmp_path / "out" / "runs" / "a" / "seed0")
    assert holder.__enter__() is not None
    real_run_one = compare.run_one

    polls = []

    def sleep(seconds):  # meanwhile the other process finishes a's seed
        if not polls:
            holder.__exit__(None, None, None)
            real_run_one(other, a, 0)
        polls.append(seconds)

    monkeypatch.setattr(compare, "_sleep", sleep)
    assert compare.run_study(mine, "python tools/compare.py") == 0
    assert "equal time: waiting for the 1 run(s) other processes are running" in (
        capsys.readouterr().out
    )
    assert polls == [compare.POLL_SECONDS]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["variant"] for r in results["equal_time"]["variants"]] == ["b (equal time)"]


@pytest.mark.slow
def test_a_run_another_process_failed_is_not_tried_again_until_the_next_command(
    tmp_path, tiny_config, load_tool, monkeypatch
):
    compare = load_tool("compare")
    monkeypatch.chdir(ROOT)
    args = [str(tiny_config), "--variant", "broken", "train.class_weights=[1.0, 2.0]",
            "--variant", "b", "model.up=bilinear", "model.down=max",
            "--seeds", "0", "--images", "0", "--out", str(tmp_path)]  # fmt: skip
    study = _study(compare, *args)
    broken = study.variants[0]
    # Another process sharing the study (started with this one) tries it first and fails.
    assert compare.run_one(study, broken, 0)["status"] == "failed"
    log = tmp_path / "runs" / "broken" / "seed0" / "compare.log"
    assert log.read_text().count("tools/train.py") == 1
    assert compare.run_study(study, "python tools/compare.py") == 1
    assert log.read_text().count("tools/train.py") == 1  # its failure stands, not retried
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["variant"], r["status"]) for r in results["runs"]] == [
        ("broken", "failed"),
        ("b", "ok"),
    ]
    # The next command (started after that failure) tries it again.
    monkeypatch.setattr(compare, "STARTED", compare.time.time() + 1)
    assert compare.run_study(study, "python tools/compare.py") == 1
    assert log.read_text().count("tools/train.py") == 2


def test_the_tools_get_paths_relative_to_the_repository(tmp_path, tiny_config, load_tool,
                                                        monkeypatch):  # fmt: skip
    """The tools run in the repository: the config, work dir and checkpoint they are given
    (and so config.yaml, metrics.json and the logs) name paths inside it relatively, so a
    committed run folder holds no path of the machine that ran it."""
    compare = load_tool("compare")
    config = tmp_path / "configs" / "tiny.yaml"
    config.parent.mkdir()
    config.write_text(tiny_config.read_text())
    out = str(tmp_path / "results" / "s")
    study = _study(compare, str(config), "--out", out, "--seeds", "0", "--split", "test")
    study = replace(study, root=tmp_path)
    calls = []
    monkeypatch.setattr(compare, "_run_logged", lambda args, log, hold: calls.append(args) or 0)
    monkeypatch.setattr(compare, "read_record", lambda run: {"status": "ok"})
    run = compare.plan_run(study, study.variants[0], 0)
    run.folder.mkdir(parents=True)
    compare._train_and_score(study, run, hold=0)
    train, evaluate = calls
    folder = f"results/s/runs/{study.variants[0].slug}/seed0"
    assert train[1:4] == ["configs/tiny.yaml", "--work-dir", folder]
    assert evaluate[1] == f"{folder}/last.pt"
    assert evaluate[evaluate.index("--out") + 1] == f"{folder}/eval_test_last"


@pytest.mark.slow
def test_predictions_train_again_a_run_whose_checkpoint_is_gone(tmp_path, tiny_config,
                                                                compare_cli):  # fmt: skip
    """As on a clone (checkpoints are not committed): --predictions trains the run again
    beside it, with its recorded settings, leaves the run's folder as it was, and the copy
    scores exactly what the run recorded; a second call reuses the copy."""
    out = tmp_path / "study"
    args = [tiny_config, "--variant", "lift/lift", "model.down=lift", "model.up=lift",
            "--variant", "max/bilinear", "model.down=max", "model.up=bilinear",
            "--seeds", 0, 1, "--images", 2, "--out", out]  # fmt: skip
    compare_cli(*args, check=0)
    run = out / "runs" / "max-bilinear" / "seed0"
    (run / "last.pt").unlink()
    (out / "predictions.png").unlink()
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    first = compare_cli(*args, "--predictions", check=0)
    assert "max/bilinear, seed 0: no seed0/last.pt; training it again" in first.stdout
    columns = {
        c["variant"]: c for c in json.loads((out / "predictions.json").read_text())["columns"]
    }
    assert columns["lift/lift"] == {"variant": "lift/lift", "seed": 0, "retrained": False,
                                    "checkpoint": str(out / "runs/lift-lift/seed0/last.pt")}  # fmt: skip
    copy = out / "retrained" / "max-bilinear" / "seed0"
    assert columns["max/bilinear"]["retrained"] and columns["max/bilinear"]["same_scores"]
    assert columns["max/bilinear"]["checkpoint"] == str(copy / "last.pt")
    recorded = _run_metrics(out, "max-bilinear", 0)
    again = json.loads((copy / "metrics.json").read_text())
    assert (again["mIoU"], again["mBIoU"]) == (recorded["mIoU"], recorded["mBIoU"])
    assert again["confusion_matrix"] == recorded["confusion_matrix"]
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before
    assert Image.open(out / "predictions.png").size[0] > 0
    trained = (copy / "last.pt").stat().st_mtime_ns
    second = compare_cli(*args, "--predictions", check=0)
    assert "training it again" not in second.stdout and "its copy in" in second.stdout
    assert (copy / "last.pt").stat().st_mtime_ns == trained
    # On another clone the copy's checkpoint is gone too: trained again, same scores.
    (copy / "last.pt").unlink()
    third = compare_cli(*args, "--predictions", check=0)
    assert "training it again" in third.stdout and (copy / "last.pt").is_file()
    assert json.loads((copy / "metrics.json").read_text())["mIoU"] == recorded["mIoU"]


def test_a_retrained_copy_continues_when_interrupted_and_starts_over_when_stale(
    tmp_path, tiny_config, load_tool, monkeypatch
):
    """--predictions' copy of a run: an interrupted one (last.pt, no metrics) continues
    from its last.pt; one trained with other settings (the study changed) is replaced."""
    compare = load_tool("compare")
    study = _study(compare, str(tiny_config), "--out", str(tmp_path / "s"), "--seeds", "0")
    variant = study.variants[0]
    calls = []
    monkeypatch.setattr(compare, "_run_logged", lambda args, log, hold: calls.append(args) or 0)
    monkeypatch.setattr(compare, "read_record", lambda run: {"status": "ok"})
    copy = study.out / "retrained" / variant.slug / "seed0"
    copy.mkdir(parents=True)
    (copy / "last.pt").write_bytes(b"weights so far")
    compare._retrain(study, variant, 0)
    assert "--resume" in calls[0] and (copy / "last.pt").read_bytes() == b"weights so far"
    settings = json.loads((copy / "compare_run.json").read_text())
    settings["resolved"]["train"]["lr"] = 123.0  # trained by another version of the study
    (copy / "compare_run.json").write_text(json.dumps(settings))
    (copy / "metrics.json").write_text("{}")  # finished and scored, with those settings
    calls.clear()
    compare._retrain(study, variant, 0)
    assert "--resume" not in calls[0] and not (copy / "last.pt").exists()
    assert not (copy / "metrics.json").exists()
    assert json.loads((copy / "compare_run.json").read_text())["resolved"]["train"]["lr"] != 123.0


def test_two_predictions_processes_share_the_copies(
    tmp_path, tiny_config, load_tool, monkeypatch, capsys
):
    """a's copy is held (another --predictions process trains it): this one trains b's,
    then waits for a's; the holder stops without finishing it, so this one trains it. c's
    run still has its checkpoint: no copy of it."""
    compare = load_tool("compare")
    pairs = {"a": "maxunpool", "b": "bilinear", "c": "bilinear+skip"}
    variants = sum(
        (["--variant", n, f"model.up={up}", "model.down=max"] for n, up in pairs.items()), []
    )
    study = _study(
        compare, str(tiny_config), *variants, "--out", str(tmp_path / "s"), "--seeds", "0"
    )
    study = replace(study, root=tmp_path)
    trained = []  # the run folder of each tool call (train, then eval)
    monkeypatch.setattr(
        compare, "_run_logged", lambda args, log, hold: trained.append(log.parent.parent.name) or 0
    )
    monkeypatch.setattr(compare, "read_record", lambda run: {"status": "ok", "dir": run.folder})
    polls = _held_until_the_first_poll(
        compare, monkeypatch, study.out / "retrained" / "a" / "seed0"
    )
    (tmp_path / "runs" / "c" / "seed0").mkdir(parents=True)
    (tmp_path / "runs" / "c" / "seed0" / "last.pt").write_bytes(b"weights")
    chosen = {name: {"dir": f"runs/{name}/seed0", "seed": 0} for name in pairs}
    copies = compare._retrain_all(study, chosen)
    assert list(copies) == ["a", "b"]
    assert copies["a"]["dir"] == study.out / "retrained" / "a" / "seed0"
    assert trained == ["b", "b", "a", "a"] and polls == [compare.POLL_SECONDS]
    out = capsys.readouterr().out
    assert "a: another process is training it again; back to it at the end" in out
    assert "waiting for 1 copies other processes are training: a" in out


def test_the_recorded_command_drops_every_spelling_of_only(load_tool):
    compare = load_tool("compare")
    argv = ["c.yaml", "--only=a", "--seeds", "0", "--only", "b", "c", "--tables"]
    assert compare._study_arguments(argv) == ["c.yaml", "--seeds", "0"]
    with pytest.raises(SystemExit):  # an abbreviation would slip past it: not accepted
        compare._parser().parse_args(["c.yaml", "--onl", "a"])
