"""tools/bench_model.py on CPU: every pooling pair trains a step, ratios against the baselines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seg.config import load_config
from seg.models import build_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_model(load_tool):
    return load_tool("bench_model")


def test_every_pair_and_both_models_are_benchmarked_against_their_baseline(bench_model):
    cases = bench_model.cases(quick=True)
    segnet = [c["pair"] for c in cases if c["model"] == "segnet"]
    assert segnet[0] == "max/maxunpool" and len(segnet) == 7
    assert {"lift/lift", "lift/bilinear", "soft/bilinear", "lip/bilinear"} <= set(segnet)
    assert [c["pair"] for c in cases if c["model"] == "deeplabv3plus"] == ["bilinear", "lift"]
    full = bench_model.cases(quick=False)
    # Full size: the configs' own batch and crop (SegNet on CamVid, DeepLabV3+ on VOC).
    cfg = load_config(ROOT / full[0]["config"], full[0]["set"])
    assert cfg.data["crop_size"] == [360, 480] and cfg.train.batch_size == 8


def test_ratios_are_over_the_first_case_of_the_same_model(bench_model):
    shape = {"batch": 2, "crop": [8, 8], "amp": "none", "params": 10}
    results = [
        {"model": "segnet", "pair": "max/maxunpool", "step_ms": 10.0, "peak_mib": 4.0, **shape},
        {"model": "segnet", "pair": "lift/lift", "step_ms": 25.0, "peak_mib": 6.0, **shape},
        {"model": "deeplabv3plus", "pair": "bilinear", "step_ms": 50.0, "peak_mib": 8, **shape},
        {"model": "deeplabv3plus", "pair": "lift", "error": "boom"},
    ]
    bench_model.add_ratios(results)
    assert results[1]["step_ms_ratio"] == 2.5 and results[1]["peak_mib_ratio"] == 1.5
    assert results[2]["step_ms_ratio"] == 1.0 and results[2]["baseline"] == "bilinear"
    assert results[3]["step_ms_ratio"] is None
    assert "failed: boom" in bench_model.markdown(
        {"device": "cpu", "date": "d", "steps": 1, "warmup": 1, "memory": "m", "results": results}
    )


def test_rounds_take_each_case_median_and_set_reaches_every_case(bench_model):
    runs = [{"model": "segnet", "pair": "lift/lift", "step_ms": t, "peak_mib": m}
            for t, m in ((30.0, 5.0), (10.0, 7.0), (20.0, 6.0))]  # fmt: skip
    combined = bench_model.combine_rounds(runs)
    assert combined["step_ms"] == 20.0 and combined["peak_mib"] == 6.0
    assert combined["rounds_step_ms"] == [30.0, 10.0, 20.0]
    assert bench_model.combine_rounds([runs[0], {"pair": "x", "error": "boom"}])["error"] == "boom"
    # the time ratio pairs each round with the baseline's same round: a slow round of the
    # machine cancels (the ratio of the medians would be 20 / 20 = 1.0)
    base = bench_model.combine_rounds(
        [
            {"model": "segnet", "pair": "max/maxunpool", "step_ms": t, "peak_mib": 4.0}
            for t in (10.0, 20.0, 40.0)
        ]  # fmt: skip
    )
    bench_model.add_ratios([base, combined])
    assert combined["step_ms_ratio"] == 0.5  # rounds' ratios 3.0, 0.5, 0.5
    assert combined["peak_mib_ratio"] == 1.5 and base["step_ms_ratio"] == 1.0
    cases = bench_model.cases(quick=True, extra=["model.width=0.25"])
    assert all(c["set"][-1] == "model.width=0.25" for c in cases)


@pytest.mark.slow
def test_quick_cpu_run_measures_real_training_steps(tmp_path, bench_model):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "tools/bench_model.py", "--quick", "--device", "cpu", "--only",
         "lift/lift", "--model", "segnet", "--steps", "2", "--warmup", "1", "--profile",
         "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "bench_model.json").read_text())
    rows = {(r["model"], r["pair"]): r for r in report["results"]}
    assert set(rows) == {("segnet", "max/maxunpool"), ("segnet", "lift/lift")}
    for (model, pair), row in rows.items():
        assert "error" not in row, row
        case = next(c for c in bench_model.cases(True) if (c["model"], c["pair"]) == (model, pair))
        cfg = load_config(ROOT / case["config"], case["set"])
        net = build_model(cfg.model)
        assert row["params"] == sum(p.numel() for p in net.parameters())
        assert row["batch"] == 2 and row["crop"] == [64, 64]
        assert row["step_ms"] > 0 and row["peak_mib"] > 0
    lift, base = rows[("segnet", "lift/lift")], rows[("segnet", "max/maxunpool")]
    assert lift["step_ms_ratio"] == pytest.approx(lift["step_ms"] / base["step_ms"])
    assert base["step_ms_ratio"] == 1.0
    assert "| segnet | lift/lift |" in (tmp_path / "bench_model.md").read_text()
    assert torch.__version__ == report["torch"]
    # --profile: each case's operator table, over real steps (the lift pair's backward
    # runs the fused LiftPool Functions; max/maxunpool's does not)
    lift_profile = (tmp_path / "profile-segnet-lift-lift.txt").read_text()
    base_profile = (tmp_path / "profile-segnet-max-maxunpool.txt").read_text()
    assert lift_profile.startswith("# 2 training steps") and "Self CPU" in lift_profile
    assert "LiftDown" in lift_profile and "LiftDown" not in base_profile
    assert "max_unpool" in base_profile
