"""What a training run may do to a work dir: never replace a run unasked, resume only its
own checkpoint with its own config, lose no step to a failing validation or a scheduler's
SIGTERM, clean what a killed save left."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from seg.config import ConfigError
from seg.engine import load_checkpoint, rundir, train
from seg.engine import trainer as trainer_module

ROOT = Path(__file__).resolve().parents[2]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_new_run_never_replaces_a_run_unasked(tmp_path, make_config):
    train(make_config(tmp_path, ["train.iters=3"]))
    (tmp_path / "notes.txt").write_text("mine")
    before = _snapshot(tmp_path)
    with pytest.raises(
        ConfigError, match=r"already holds a run \(last.pt, best.pt, metrics.json\)"
    ):
        train(make_config(tmp_path, ["train.iters=3"]))
    assert _snapshot(tmp_path) == before  # not even config.yaml or train.log was touched
    # --force replaces the run's outputs, and nothing the trainer did not write.
    train(make_config(tmp_path, ["train.iters=2"]), force=True)
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 2
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1


def test_force_never_deletes_the_weights_the_new_run_starts_from(tmp_path, make_config):
    train(make_config(tmp_path, ["train.iters=2"]))
    weights = tmp_path / "best.pt"
    before = _snapshot(tmp_path)
    with pytest.raises(ConfigError, match=r"--force would delete .*best.pt, the weights"):
        train(make_config(tmp_path, ["train.iters=2", f"train.load_from={weights}"]), force=True)
    assert _snapshot(tmp_path) == before


def test_force_deletes_nothing_for_a_run_that_cannot_start(tmp_path, make_config):
    train(make_config(tmp_path, ["train.iters=2"]))
    before = _snapshot(tmp_path)
    with pytest.raises(ConfigError, match="set model.num_classes=4"):  # found building data
        train(make_config(tmp_path, ["train.iters=2", "model.num_classes=5"]), force=True)
    broken = tmp_path.parent / f"{tmp_path.name}-broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load"):  # found loading the weights
        train(make_config(tmp_path, ["train.iters=2", f"train.load_from={broken}"]), force=True)
    assert _snapshot(tmp_path) == before
    # The run that can start replaces it.
    train(make_config(tmp_path, ["train.iters=1"]), force=True)
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 1
    log = (tmp_path / "train.log").read_text()  # logged before the file was opened
    assert log.count("--force: removed the previous run's last.pt") == 1


def test_a_new_run_never_writes_over_a_config_it_did_not_write(tmp_path, make_config):
    (tmp_path / "config.yaml").write_text("mine: true\n")
    with pytest.raises(ConfigError, match=r"already holds a run \(config.yaml\)"):
        train(make_config(tmp_path, ["train.iters=1"]))
    assert _snapshot(tmp_path) == {"config.yaml": b"mine: true\n"}
    # The same run started again before its first checkpoint goes on without --force,
    # whatever changed in where it writes or how it is watched (the resume rule).
    (tmp_path / "config.yaml").write_text(make_config(tmp_path, ["train.iters=1"]).to_yaml())
    train(make_config(f"{tmp_path}/", ["train.iters=1", "output.tensorboard=false"]))
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 1
    # Nor does a resume into another folder write over a config that is not its own.
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text("mine: true\n")
    with pytest.raises(ConfigError, match=r"which holds another run \(config.yaml\)"):
        train(make_config(other, ["train.iters=1"]), resume=tmp_path / "last.pt")
    assert _snapshot(other) == {"config.yaml": b"mine: true\n"}


def test_a_resume_into_another_folder_takes_the_whole_run(tmp_path, make_config, load_tool):
    mine, moved, done = tmp_path / "mine", tmp_path / "moved", tmp_path / "done"
    train(make_config(mine), stop_after=3)  # validated at 3: best.pt holds iteration 3
    config = tmp_path / "config.yaml"
    config.write_text(make_config(mine).to_yaml())
    tool = load_tool("train")
    assert (
        tool.main([str(config), "--resume", str(mine / "last.pt"), "--work-dir", str(moved)]) == 0
    )
    best = load_checkpoint(moved / "best.pt")
    assert best["best_miou"] == load_checkpoint(moved / "last.pt")["best_miou"]
    assert best["iteration"] in (3, 6)
    # A finished run resumed into another folder: scored again, and both checkpoints there.
    assert (
        tool.main([str(config), "--resume", str(moved / "last.pt"), "--work-dir", str(done)]) == 0
    )
    assert load_checkpoint(done / "last.pt")["iteration"] == 6
    assert (done / "best.pt").read_bytes() == (moved / "best.pt").read_bytes()
    assert "checkpoints: " + str(done / "last.pt") in (done / "train.log").read_text()


def test_resume_names_what_a_file_lacks_to_be_resumed(tmp_path, make_config):
    weights = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, weights)
    with pytest.raises(ConfigError, match=r"not a training checkpoint .*train.load_from="):
        train(make_config(tmp_path / "run"), resume=weights)
    assert not (tmp_path / "run").exists()


def test_set_may_be_given_more_than_once(tmp_path, make_config, load_tool):
    config = tmp_path / "config.yaml"
    config.write_text(make_config(tmp_path / "run").to_yaml())
    argv = [str(config), "--set", "train.iters=1", "--set", "train.lr=0.02"]
    assert load_tool("train").main(argv) == 0
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]
    assert (stored["iters"], stored["lr"]) == (1, 0.02)


def test_resume_never_continues_into_another_runs_work_dir(tmp_path, make_config, load_tool):
    mine, other = tmp_path / "mine", tmp_path / "other"
    train(make_config(mine), stop_after=3)
    train(make_config(other, ["train.iters=2"]))
    before = _snapshot(other)
    with pytest.raises(ConfigError, match=r"would continue in .*other, which holds another run"):
        train(make_config(other), resume=mine / "last.pt")
    assert _snapshot(other) == before
    # the command line continues a named checkpoint in its own folder, whatever the
    # config's work dir
    config = tmp_path / "config.yaml"
    config.write_text(make_config(other).to_yaml())
    assert load_tool("train").main([str(config), "--resume", str(mine / "last.pt")]) == 0
    assert load_checkpoint(mine / "last.pt")["iteration"] == 6
    assert _snapshot(other) == before


def test_resume_needs_a_checkpoint(tmp_path, make_config):
    with pytest.raises(ConfigError, match="there is no last.pt in .* to continue"):
        train(make_config(tmp_path), resume=True)
    assert not (tmp_path / "best.pt").exists()
    # Only best.pt (killed before the first periodic save): said, not a loop of refusals.
    train(make_config(tmp_path, ["train.iters=3"]))
    (tmp_path / "last.pt").unlink()
    with pytest.raises(ConfigError, match=r"--resume .*best.pt, or start anew with --force"):
        train(make_config(tmp_path, ["train.iters=3"]), resume=True)


def test_resume_refuses_a_changed_setting_instead_of_recording_it(tmp_path, make_config):
    train(make_config(tmp_path), stop_after=2)
    with pytest.raises(ConfigError, match=r"train.lr: 0.05 -> 0.5"):
        train(make_config(tmp_path, ["train.lr=0.5"]), resume=True)
    stored = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert stored["train"]["lr"] == 0.05  # nothing recorded the refused value
    # Keys that change nothing the weights depend on may change.
    train(make_config(tmp_path, ["train.log_interval=2", "eval.batch_size=1"]), resume=True)
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 6


def test_resume_differences_ignore_only_the_safe_keys():
    stored = {"train": {"lr": 0.1, "workers": 2}, "output": {"work_dir": "a"}, "name": "x"}
    current = {"train": {"lr": 0.1, "workers": 0}, "output": {"work_dir": "b"}, "name": "y"}
    assert rundir.resume_differences(stored, current) == []
    current["train"]["lr"] = 0.2
    current["train"]["new_key"] = 1
    assert rundir.resume_differences(stored, current) == [
        "train.lr: 0.1 -> 0.2",
        "train.new_key: '(unset)' -> 1",
    ]
    # A setting added to the schema after the checkpoint: unchanged at its default only.
    del current["train"]["new_key"]
    current["train"]["lr"] = 0.1
    current["train"]["accumulate"] = 1
    assert rundir.resume_differences(stored, current) == []
    current["train"]["accumulate"] = 2
    assert rundir.resume_differences(stored, current) == ["train.accumulate: '(unset)' -> 2"]


def test_the_final_step_is_saved_before_the_final_validation(tmp_path, make_config, monkeypatch):
    real = trainer_module.validate_and_log

    def failing_at_the_end(run, *args, **kwargs):
        if run.iteration == run.cfg.train.iters:
            raise RuntimeError("validation broke")
        return real(run, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "validate_and_log", failing_at_the_end)
    with pytest.raises(RuntimeError, match="validation broke"):
        train(make_config(tmp_path))
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 6


def test_stale_checkpoint_temporaries_are_removed_on_start(tmp_path, make_config):
    tmp_path.mkdir(exist_ok=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".last.pt.{dead.pid}.tmp"
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f".best.pt.{os.getppid()}.tmp"  # a live process's write in progress
    live.write_bytes(b"y")
    train(make_config(tmp_path, ["train.iters=1"]))
    assert not stale.exists() and live.exists()


def test_a_second_signal_aborts_and_a_changed_world_size_warns(tmp_path, make_config):
    stop = trainer_module._Stop()
    stop(signal.SIGINT, None)
    assert stop.signum == signal.SIGINT
    # the same request twice (the process group's signal and a parent's forwarded one)
    stop(signal.SIGTERM, None)
    assert stop.signum == signal.SIGINT
    stop.at -= stop.same_request_s  # a later, deliberate second signal
    with pytest.raises(KeyboardInterrupt):
        stop(signal.SIGINT, None)

    train(make_config(tmp_path, ["train.iters=1"]))
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["world_size"] == 1
    cfg = make_config(tmp_path, ["train.iters=1"])
    losses = trainer_module.build_losses(cfg.train, 4, 255)
    run = trainer_module.build_run(cfg, trainer_module.DistInfo(), state["meta"], losses)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("seg").addHandler(handler)
    try:
        run.load_state_dict({**state, "world_size": 4})
    finally:
        logging.getLogger("seg").removeHandler(handler)
    assert any("started on 4" in r.getMessage() for r in records)


def test_launch_command_names_the_launcher():
    config = Path("w/config.yaml")
    assert rundir.launch_command(1, 1, config) == "python tools/train.py w/config.yaml --resume"
    assert rundir.launch_command(4, 4, config).startswith("torchrun --nproc_per_node 4 tools/")
    assert "--nnodes 2" in rundir.launch_command(8, 4, config)


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_workers_saves_and_exits(tmp_path, tiny_raw):
    raw = tiny_raw(
        train={"iters": 100000, "workers": 2, "log_interval": 1, "val_interval": 0},
        output={"work_dir": str(tmp_path / "run"), "progress": True},
    )
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    log_path = tmp_path / "stderr.txt"
    with open(log_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "tools/train.py", str(config), "--device", "cpu"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group, as under a scheduler
        )
        deadline = time.monotonic() + 300
        while "iter 3/" not in log_path.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()
            time.sleep(0.5)
        os.killpg(process.pid, signal.SIGTERM)  # the main process and its loader workers
        code = process.wait(timeout=300)
    text = log_path.read_text()
    assert code == 128 + signal.SIGTERM, text
    assert "DataLoader worker" not in text and "Traceback" not in text
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["iteration"] >= 3
    assert "Resume with: python tools/train.py" in text
    assert "\r" not in text  # no progress-bar frames in a file: log lines instead
    assert torch.isfinite(torch.tensor(state["best_miou"])) or state["best_miou"] == float("-inf")


def test_each_validation_adds_a_point_to_the_learning_curve(tmp_path, make_config):
    from seg.engine.study import read_curve

    train(make_config(tmp_path))  # 6 iterations, validation every 3
    curve = read_curve(tmp_path)
    assert [p["iteration"] for p in curve] == [3, 6]
    assert 0 < curve[0]["seconds"] < curve[1]["seconds"]
    final = yaml.safe_load((tmp_path / "metrics.json").read_text())
    assert curve[1]["mIoU"] == pytest.approx(final["mIoU"])
    cost = load_checkpoint(tmp_path / "last.pt")["cost"]
    assert curve[1]["seconds"] == pytest.approx(cost["train_seconds"], abs=1e-3)
