"""seg.config: every numeric value's range, and every float spelling a user types."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seg.config import (
    ConfigError,
    EvalConfig,
    TrainConfig,
    config_from_dict,
    load_config,
    load_yaml,
)

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "model": {"name": "segnet", "num_classes": 8, "width": 0.25},
    "data": {"name": "synthetic", "size": 64},
}


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("train.grad_clip=-1", r"^train.grad_clip must be > 0 or null, got -1.0$"),
        ("train.grad_clip=0", r"^train.grad_clip must be > 0 or null, got 0.0$"),
        ("train.lr=0", r"^train.lr must be > 0, got 0.0$"),
        ("train.lr=-1e-3", r"^train.lr must be > 0, got -0.001$"),
        ("train.lr=.inf", r"^train.lr must be a finite number > 0, got inf$"),
        ("train.lr=.nan", r"^train.lr must be a finite number > 0, got nan$"),
        ("train.min_lr=-1e-5", r"^train.min_lr must be >= 0, got -1e-05$"),
        ("train.iters=0", r"^train.iters must be >= 1, got 0$"),
        ("train.batch_size=0", r"^train.batch_size must be >= 1, got 0$"),
        ("train.workers=-1", r"^train.workers must be >= 0, got -1$"),
        ("train.momentum=1", r"^train.momentum must be >= 0 and < 1, got 1.0$"),
        ("train.momentum=-0.1", r"^train.momentum must be >= 0 and < 1"),
        (
            "train.betas=[0.9, 1.0]",
            r"^train.betas must hold numbers >= 0 and < 1, got \[0.9, 1.0\]",
        ),
        ("train.betas=[0.9]", r"^train.betas must be two numbers \[beta1, beta2\]"),
        ("train.weight_decay=-1e-4", r"^train.weight_decay must be >= 0"),
        ("train.warmup_ratio=1.5", r"^train.warmup_ratio must be >= 0 and <= 1, got 1.5$"),
        ("train.warmup_iters=-1", r"^train.warmup_iters must be >= 0"),
        ("train.poly_power=0", r"^train.poly_power must be > 0"),
        ("train.lambda_u=-0.01", r"^train.lambda_u must be >= 0"),
        ("train.lambda_p=-1", r"^train.lambda_p must be >= 0"),
        ("train.val_max_images=0", r"^train.val_max_images must be >= 1 or null, got 0$"),
        ("train.val_interval=-1", r"^train.val_interval must be >= 0"),
        ("train.ckpt_interval=-1", r"^train.ckpt_interval must be >= 0"),
        ("train.log_interval=0", r"^train.log_interval must be >= 1"),
        ("train.num_vis=-1", r"^train.num_vis must be >= 0"),
        ("train.seed=-1", r"^train.seed must be >= 0"),
        ("train.loss={ce: 1.0, dice: -0.5}", r"^train.loss must hold numbers >= 0, got \{'ce'"),
        ("train.loss={}", r"^train.loss needs at least one term"),
        ("train.class_weights=[1.0, -2.0]", r"^train.class_weights must hold numbers >= 0"),
        ("train.min_lr=0.1", r"^train.min_lr \(0.1\) must be <= train.lr \(0.01\)"),
        ("eval.crop_size=[0, 32]", r"^eval.crop_size must hold numbers >= 1, got \[0, 32\]"),
        ("eval.crop_size=[32]", r"^eval.crop_size must be \[height, width\], got \[32\]"),
        ("eval.stride=[-4, 8]", r"^eval.stride must hold numbers >= 1"),
        ("eval.scales=[0.5, 0]", r"^eval.scales must hold numbers > 0, got \[0.5, 0.0\]"),
        ("eval.scales=[]", r"^eval.scales needs at least one scale"),
        ("eval.batch_size=0", r"^eval.batch_size must be >= 1"),
        ("eval.workers=-2", r"^eval.workers must be >= 0"),
        ("eval.boundary_ratio=0", r"^eval.boundary_ratio must be > 0 and <= 1"),
        ("eval.boundary_ratio=2", r"^eval.boundary_ratio must be > 0 and <= 1"),
        ("data.crop_size=-4", r"^data.crop_size must be an int >= 1 or \[height, width\]"),
        ("data.crop_size=[32, 0]", r"^data.crop_size must be an int >= 1 or \[height, width\]"),
        ("data.resize=[32]", r"^data.resize must be an int >= 1 or \[height, width\]"),
        ("data.scale=[2.0, 0.5]", r"^data.scale must be \[low, high\] with 0 < low <= high"),
        ("data.scale=[0, 1]", r"^data.scale must be \[low, high\] with 0 < low <= high"),
        ("data.mean=[123.675, 116.28, 103.53]", r"^data.mean must be 3 numbers in \[0, 1\]"),
        ("data.mean=[0.5]", r"^data.mean must be 3 numbers in \[0, 1\]"),
        ("data.std=[0, 0.2, 0.2]", r"^data.std must be 3 numbers in \(0, 1\]"),
        ("model.num_classes=0", r"^model.num_classes must be an int >= 1"),
    ],
)
def test_out_of_range_values_name_the_key_and_the_range(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        config_from_dict(BASE, [override])


def test_eval_stride_may_not_exceed_the_crop_even_when_the_crop_is_the_training_crop():
    with pytest.raises(ConfigError, match=r"^eval.stride \[64, 64\] must be <= eval.crop_size"):
        config_from_dict(BASE, ["eval.crop_size=[48, 48]", "eval.stride=[64, 64]"])
    with pytest.raises(ConfigError, match=r"\[48, 48\] \(which defaults to data.crop_size\)"):
        config_from_dict(BASE, ["data.crop_size=48", "eval.stride=[64, 32]"])
    cfg = config_from_dict(BASE, ["eval.crop_size=[48, 48]", "eval.stride=[48, 16]"])
    assert cfg.eval.stride == [48, 16]


@pytest.mark.parametrize(
    "override",
    [
        "train.grad_clip=null",
        "train.grad_clip=1e-3",
        "train.momentum=0",
        "train.warmup_ratio=0",
        "train.warmup_ratio=1",
        "train.val_max_images=1",
        "train.lambda_u=0",
        "train.min_lr=0.01",
        "train.class_weights=median_frequency",
        "eval.boundary_ratio=1",
        "data.crop_size=[1, 1]",
        "data.mean=[0, 0.5, 1]",
    ],
)
def test_the_edges_of_each_range_are_accepted(override):
    config_from_dict(BASE, [override])


@pytest.mark.parametrize(
    "text, value",
    [
        ("1e-3", 1e-3),
        ("1E-3", 1e-3),
        ("1e+3", 1e3),
        ("5e4", 5e4),
        ("-1e-3", -1e-3),
        ("+2.5e-4", 2.5e-4),
        (".5", 0.5),
        ("-.5", -0.5),
        ("1.e-3", 1e-3),
        ("1.", 1.0),
        ("0.02", 0.02),
        ("1_000.5", 1000.5),
    ],
)
def test_every_float_spelling_is_a_float(text, value):
    assert load_yaml(text) == value and isinstance(load_yaml(text), float)


def test_ints_and_strings_stay_what_they_were_and_pyyaml_is_left_alone():
    assert load_yaml("[1, 0x10, 1.2.3, 12e, e3, v1e3, 1e]") == [
        1,
        16,
        "1.2.3",
        "12e",
        "e3",
        "v1e3",
        "1e",
    ]
    assert load_yaml("a: 1e-3") == {"a": 1e-3}
    # The fix lives in ConfigLoader: yaml.safe_load everywhere else reads YAML 1.1 as before.
    assert yaml.safe_load("1e-3") == "1e-3"


@pytest.mark.parametrize("spelling", ["1e-3", "1E-3", "1.e-3", ".001", "+1e-3"])
def test_set_and_config_files_take_scientific_floats(tmp_path, spelling):
    cfg = config_from_dict(BASE, [f"train.lr={spelling}", f"train.min_lr={spelling}"])
    assert cfg.train.lr == 1e-3 and cfg.train.min_lr == 1e-3
    base = tmp_path / "base.yaml"
    base.write_text(f"train:\n  weight_decay: {spelling}\n")
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(BASE) + f"include: base.yaml\ntrain:\n  lr: {spelling}\n")
    cfg = load_config(path, [f"eval.scales=[{spelling}, 5e-1]"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.eval.scales) == (1e-3, 1e-3, [1e-3, 0.5])


def test_each_section_checks_itself_when_built_in_code():
    with pytest.raises(ConfigError, match="train.grad_clip must be > 0 or null"):
        TrainConfig(grad_clip=-1.0).check()
    with pytest.raises(ConfigError, match=r"eval.stride \[9, 9\] must be <= eval.crop_size"):
        EvalConfig(crop_size=[8, 8], stride=[9, 9]).check()
    with pytest.raises(ConfigError, match=r"train.lr must be float, got '1e-3' \(str\)"):
        TrainConfig(lr="1e-3").check()
    section = TrainConfig(lr=1)
    section.check()
    assert section.lr == 1.0 and isinstance(section.lr, float)


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.grad_clip=-1", "train.grad_clip"),
        ("data.crop_size=-4", "data.crop_size"),
        ("data.size=32.5", "data.size"),  # not silently 32
        ("data.seed=-1", "data.seed"),
    ],
)
def test_train_cli_exits_2_with_one_line_naming_the_key(tiny_raw, tmp_path, override, key):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_raw()))
    result = subprocess.run(
        [sys.executable, "tools/train.py", str(config), "--set", override],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key} must be "), result.stderr


def test_slide_evaluation_without_a_window_is_refused_when_the_config_loads():
    raw = {
        "model": {"name": "segnet", "num_classes": 4},
        "data": {"name": "synthetic", "num_classes": 4},
        "eval": {"mode": "slide"},
    }
    with pytest.raises(ConfigError, match=r"eval.mode=slide needs a window: set eval.crop_size"):
        config_from_dict(raw)
    raw["data"]["crop_size"] = 32  # the training crop is the default window
    assert config_from_dict(raw).eval.crop_size == [32, 32]
