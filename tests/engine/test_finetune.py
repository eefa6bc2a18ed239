"""Fine-tuning: train.load_from / tools/train.py --load-from load weights only, skip by name."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from safetensors.torch import save_model

from seg.config import ConfigError
from seg.engine import load_checkpoint, train
from seg.engine import trainer as trainer_module
from seg.engine.checkpoint import CheckpointError, load_weights, read_weights
from seg.models import build_model

SIX_CLASSES = ["model.num_classes=6", "data.num_classes=6"]
HEAD = ("classifier.weight", "classifier.bias")


@pytest.fixture
def four_class_checkpoint(tmp_path, make_config):
    """A 4-class run's last.pt (one step, so its weights differ from any initialisation)."""
    train(make_config(tmp_path / "source", ["train.iters=1", "train.val_interval=0"]))
    return tmp_path / "source" / "last.pt"


def _weights_at_first_step(monkeypatch) -> dict:
    """Record the model's weights when the first step begins (after loading, before updating)."""
    seen: dict = {}
    real_step = trainer_module.train_step

    def recording_step(run, batch, stop=None):
        if not seen:
            seen.update(copy.deepcopy(run.model.state_dict()))
        return real_step(run, batch, stop)

    monkeypatch.setattr(trainer_module, "train_step", recording_step)
    return seen


def test_fine_tune_into_more_classes_loads_the_encoder_and_names_the_skipped_head(
    tmp_path, make_config, four_class_checkpoint, monkeypatch
):
    source = load_checkpoint(four_class_checkpoint)["model"]
    at_start = _weights_at_first_step(monkeypatch)
    cfg = make_config(
        tmp_path / "tuned", [*SIX_CLASSES, f"train.load_from={four_class_checkpoint}"]
    )
    train(cfg)

    for name, tensor in source.items():
        if name in HEAD:
            assert at_start[name].shape[0] == 6 and tensor.shape[0] == 4
        else:
            assert torch.equal(at_start[name], tensor), name  # loaded before any step
    tuned = load_checkpoint(tmp_path / "tuned" / "last.pt")
    assert tuned["iteration"] == 6  # the optimizer and the schedule started afresh
    assert tuned["scheduler"]["last_epoch"] == 6
    log = (tmp_path / "tuned" / "train.log").read_text()
    assert f"fine-tuning from {four_class_checkpoint}: loaded {len(source) - 2} of" in log
    assert (
        "2 shape differs (kept as initialised): classifier.weight (file [4, 4, 3, 3], "
        "model [6, 4, 3, 3]), classifier.bias (file [4], model [6])"
    ) in log


def test_command_line_load_from_and_strict(tmp_path, tiny_raw, four_class_checkpoint, load_tool):
    raw = tiny_raw(
        model={"num_classes": 6},
        data={"num_classes": 6},
        train={"iters": 1, "val_interval": 0, "num_vis": 0},
        output={"tensorboard": False, "progress": False},
    )
    config = tmp_path / "six.yaml"
    config.write_text(yaml.safe_dump(raw))
    train_tool = load_tool("train")
    work = tmp_path / "cli"
    args = [str(config), "--work-dir", str(work), "--load-from", str(four_class_checkpoint)]

    assert train_tool.main([*args, "--strict"]) == 2  # refused, nothing trained
    assert not (work / "last.pt").exists()
    assert train_tool.main(args) == 0
    log = (work / "train.log").read_text()
    assert "--strict: the weights in" not in log and "classifier.bias (file [4]" in log
    stored = yaml.safe_load((work / "config.yaml").read_text())["train"]
    assert stored["load_from"] == str(four_class_checkpoint) and stored["load_strict"] is False


def test_strict_refusal_lists_every_tensor_that_does_not_fit(
    tmp_path, make_config, four_class_checkpoint, capsys, load_tool
):
    cfg = make_config(
        tmp_path / "strict",
        [*SIX_CLASSES, f"train.load_from={four_class_checkpoint}", "train.load_strict=true"],
    )
    with pytest.raises(ConfigError) as refused:
        train(cfg)
    message = str(refused.value)
    assert "--strict: the weights in" in message
    assert "classifier.weight (file [4, 4, 3, 3], model [6, 4, 3, 3])" in message
    assert "classifier.bias (file [4], model [6])" in message
    assert "Drop --strict (train.load_strict)" in message
    # Same model, same classes: strict loads everything.
    model = build_model(make_config(tmp_path).model)
    match = load_weights(model, four_class_checkpoint, strict=True)
    assert match.complete and len(match.loaded) == len(model.state_dict())


def test_weights_from_a_state_dict_a_ddp_model_and_safetensors(
    tmp_path, make_config, four_class_checkpoint
):
    source = load_checkpoint(four_class_checkpoint)["model"]
    torch.save(source, tmp_path / "plain.pth")
    torch.save({"state_dict": source}, tmp_path / "wrapped.pth")
    torch.save({f"module.{k}": v for k, v in source.items()}, tmp_path / "ddp.pt")
    for name in ("plain.pth", "wrapped.pth", "ddp.pt"):
        weights = read_weights(tmp_path / name)
        assert list(weights) == list(source), name
        assert all(torch.equal(weights[k], v) for k, v in source.items()), name
    # safetensors' save_model keeps one name of each shared tensor (LiftUpPool holds its
    # LiftDownPool's predictors): the file still fills every tensor of the model.
    model_cfg = make_config(tmp_path).model
    trained = build_model(model_cfg)
    trained.load_state_dict(source)
    save_model(trained, str(tmp_path / "w.safetensors"))
    assert len(read_weights(tmp_path / "w.safetensors")) < len(source)
    fresh = build_model(model_cfg)
    assert load_weights(fresh, tmp_path / "w.safetensors", strict=True).complete
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, source[name]), name


def test_what_cannot_be_loaded_is_named(tmp_path, make_config, four_class_checkpoint):
    missing = make_config(tmp_path / "a", ["train.load_from=nowhere/last.pt"])
    with pytest.raises(FileNotFoundError, match="train.load_from: nowhere/last.pt not found"):
        train(missing)
    assert not (tmp_path / "a" / "config.yaml").exists()  # refused before anything is written
    torch.save({"iteration": 3, "note": "no weights"}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"odd.pt holds no model weights .*'iteration'"):
        read_weights(tmp_path / "odd.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot read .*bad.safetensors as safetensors"):
        read_weights(tmp_path / "bad.safetensors")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    model = build_model(make_config(tmp_path).model)
    with pytest.raises(ConfigError, match="none of the 1 tensors in .*other.pt fits the model"):
        load_weights(model, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="train.load_strict needs train.load_from"):
        make_config(tmp_path, ["train.load_strict=true"])


def test_a_resumed_fine_tune_keeps_its_own_weights(tmp_path, make_config, four_class_checkpoint):
    overrides = [*SIX_CLASSES, f"train.load_from={four_class_checkpoint}"]
    train(make_config(tmp_path / "straight", overrides))
    train(make_config(tmp_path / "split", overrides), stop_after=2)
    train(make_config(tmp_path / "split", overrides), resume=True)
    log = (tmp_path / "split" / "train.log").read_text()
    assert "at iteration 2; train.load_from is not applied again" in log
    assert log.count("fine-tuning from") == 1
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "split" / "last.pt")["model"]
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name
