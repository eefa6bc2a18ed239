"""seg.config: includes, --set overrides, and errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from seg import registry
from seg.config import ConfigError, config_from_dict, load_config
from seg.data import build_dataset
from seg.engine import losses
from seg.models import build_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))

BASE = {
    "model": {"name": "segnet", "num_classes": 8, "width": 0.25},
    "data": {"name": "synthetic", "size": 64},
}


def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_include_merges_nested_keys_and_file_wins(tmp_path):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "schedule.yaml", {"train": {"iters": 100, "lr": 0.5, "seed": 3}})
    write(tmp_path / "base" / "model.yaml", {"model": BASE["model"], "data": BASE["data"]})
    path = write(
        tmp_path / "exp.yaml",
        {"include": ["base/model.yaml", "base/schedule.yaml"], "train": {"lr": 0.02}},
    )
    cfg = load_config(path)
    assert (cfg.train.iters, cfg.train.lr, cfg.train.seed) == (100, 0.02, 3)
    assert cfg.model == BASE["model"]
    assert cfg.name == "exp"
    assert cfg.work_dir == Path("work_dirs/exp")


def test_set_reaches_nested_keys_with_yaml_types(tmp_path):
    path = write(tmp_path / "c.yaml", BASE)
    cfg = load_config(
        path,
        [
            "train.lr=0.02",
            "model.up=bilinear",
            "data.num_samples={train: 5, val: 2}",
            "eval.crop_size=[32, 48]",
            "train.grad_clip=null",
            "train.loss={ce: 1.0, dice: 0.5}",
            "output.work_dir=/tmp/x",
        ],
    )
    assert cfg.train.lr == 0.02 and isinstance(cfg.train.lr, float)
    assert cfg.model["up"] == "bilinear"
    assert cfg.data["num_samples"] == {"train": 5, "val": 2}
    assert cfg.eval.crop_size == [32, 48]
    assert cfg.train.grad_clip is None
    assert cfg.train.loss == {"ce": 1.0, "dice": 0.5}
    assert cfg.work_dir == Path("/tmp/x")


def test_int_is_accepted_for_a_float():
    cfg = config_from_dict({**BASE, "train": {"lr": 1}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize(
    "override, pattern",
    [
        (
            "train.lrr=0.1",
            r"^train: unknown key 'lrr'; did you mean 'lr'\? Choose one of: accumulate, amp, ",
        ),
        ("train.iter=5", r"train: unknown key 'iter'; did you mean 'iters'\?"),
        ("model.widht=0.5", r"model: unknown key 'widht'; did you mean 'width'\?"),
        ("data.sise=32", r"data: unknown key 'sise'; did you mean 'size'\?"),
        ("evl.mode=whole", r"config: unknown section 'evl'; did you mean 'eval'\?"),
        ("train.loss.dise=1.0", r"train.loss: unknown loss 'dise'; did you mean 'dice'\?"),
        (
            "model.name=segnett",
            r"model.name: unknown model 'segnett'; did you mean 'segnet'\? "
            r"Choose one of: deeplabv3plus, segnet$",
        ),
        ("data.name=vocc", r"data.name: unknown data set 'vocc'; did you mean 'voc'\?"),
        ("model.name=null", r"model.name: no model given. Choose one of: deeplabv3plus, segnet"),
        ("train.iters=abc", r"train.iters must be int, got 'abc' \(str\)"),
        ("train.iters=2.5", r"train.iters must be int, got 2.5"),
        ("train.sync_bn=1", r"train.sync_bn must be bool, got 1"),
        ("train.amp=fp32", r"train.amp must be 'bf16' \| 'fp16' \| 'none'"),
        ("eval.crop_size=512", r"eval.crop_size must be list\[int\] or null"),
        ("train.iters=0", r"train.iters must be >= 1, got 0"),
        ("train.lr", r"--set expects key=value"),
        ("train=[]", r"^'train' must be a mapping of keys, got \[\]$"),
        ("eval=0", r"^'eval' must be a mapping of keys, got 0$"),
        ("train=false", r"^'train' must be a mapping of keys, got False$"),
    ],
)
def test_errors_name_the_key_and_the_fix(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        config_from_dict(BASE, [override])


def test_an_empty_section_means_its_defaults(tmp_path):
    empty = load_config(write(tmp_path / "c.yaml", {**BASE, "train": None, "eval": None}))
    assert empty.train == config_from_dict(BASE).train
    assert empty.eval == config_from_dict(BASE).eval


def test_missing_file_and_include_cycle(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    write(tmp_path / "a.yaml", "include: b.yaml\n")
    write(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(tmp_path / "a.yaml")


def test_round_trip_through_a_dict_and_yaml(tmp_path):
    cfg = config_from_dict(BASE, ["train.lr=0.3", "eval.tta=flip"])
    cfg.dump(tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_configs_load_and_their_name_says_what_they_are(path):
    cfg = load_config(path)
    model, backbone_pooling, dataset_size, iters = path.stem.split("_")
    assert model == cfg.model["name"]
    pooling = backbone_pooling.split("-", 1)[1]
    if cfg.model["name"] == "segnet":
        assert f"{cfg.model['down']}-{cfg.model['up']}" == pooling
        backbone = backbone_pooling.split("-", 1)[0]
        width = float(backbone.split("x", 1)[1]) if "x" in backbone else 1.0
        assert cfg.model.get("width", 1.0) == width
    else:
        assert cfg.model["up"] == pooling
    dataset, size = dataset_size.split("-")
    assert {"voc12aug": "voc"}.get(dataset, dataset) == cfg.data["name"]
    crop = cfg.data["crop_size"]
    crop = crop if isinstance(crop, list) else [crop, crop]
    assert size == f"{crop[0]}x{crop[1]}"
    assert iters == f"{cfg.train.iters // 1000}k"


@pytest.mark.parametrize("path", [p for p in SHIPPED if "x0." in p.name])
def test_cpu_sized_configs_build(path):
    cfg = load_config(path)
    model = build_model(cfg.model)
    assert model.num_classes == cfg.model["num_classes"]


def test_sliding_window_defaults_to_the_training_crop():
    cfg = config_from_dict(BASE, ["data.crop_size=[48, 64]", "eval.mode=slide"])
    assert cfg.eval.crop_size == [48, 64]
    assert config_from_dict(BASE, ["data.crop_size=40"]).eval.crop_size == [40, 40]
    assert config_from_dict(BASE, ["eval.crop_size=[8, 8]"]).eval.crop_size == [8, 8]


# ---------------------------------------------------------------- one way to check a name


def test_one_error_type_importable_from_config_and_registry():
    assert ConfigError is registry.ConfigError and issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    "section, bad, build",
    [
        ("model", {"widht": 0.5}, lambda cfg: build_model(cfg.model)),
        ("model", {"name": "segnett"}, lambda cfg: build_model(cfg.model)),
        ("data", {"sise": 32}, lambda cfg: build_dataset(cfg.data, "val")),
        ("data", {"name": "vocc"}, lambda cfg: build_dataset(cfg.data, "val")),
        ("data", {"crop_size": -4}, lambda cfg: build_dataset(cfg.data, "train")),
    ],
)
def test_config_and_builders_say_the_same_thing(section, bad, build):
    raw = {**BASE, section: {**BASE[section], **bad}}
    with pytest.raises(ConfigError) as from_config:
        config_from_dict(raw)
    good = config_from_dict(BASE)
    setattr(good, section, raw[section])  # what a builder gets when nobody checked first
    with pytest.raises(ConfigError) as from_builder:
        build(good)
    assert str(from_builder.value) == str(from_config.value)


def test_loss_names_are_checked_against_the_loss_registry(monkeypatch):
    with pytest.raises(
        ConfigError, match=r"^train.loss: unknown loss 'focal'\. Choose one of: ce,"
    ):
        config_from_dict(BASE, ["train.loss={ce: 1.0, focal: 0.5}"])
    monkeypatch.setitem(losses.LOSSES, "focal", losses.cross_entropy)
    cfg = config_from_dict(BASE, ["train.loss={ce: 1.0, focal: 0.5}"])
    built = losses.build_losses(cfg.train, num_classes=8, ignore_index=255)
    assert list(built) == ["ce", "focal"] and built["focal"][0] == 0.5


def test_check_keys_suggests_only_close_names():
    with pytest.raises(ConfigError, match=r"^x.y: unknown thing 'zzz'\. Choose one of: a, b$"):
        registry.check_keys("x.y", ["a", "zzz"], {"b": 1, "a": 2}, what="thing")
    with pytest.raises(ConfigError, match=r"^x: unknown key 3\. Choose one of: a$"):
        registry.check_keys("x", {3: "int keys are never valid"}, ["a"])
    registry.check_keys("x", [], ["a"])


def test_config_error_puts_what_a_builder_raised_on_one_line_after_the_key():
    raised = ValueError("2 validation errors for InitSchema\nmin_height\n  Input should be >= 1")
    error = registry.config_error("data", raised)
    assert isinstance(error, ConfigError)
    assert str(error) == "data: 2 validation errors for InitSchema min_height Input should be >= 1"
