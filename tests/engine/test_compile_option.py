"""train.compile: the schema, what auto resolves to, and a compiled run that trains."""

import pytest
import torch

from seg.config import ConfigError, config_from_dict
from seg.engine import load_checkpoint, train
from seg.engine.runtime import use_compile

CPU = torch.device("cpu")


def test_auto_is_eager_and_on_compiles(tiny_raw):
    assert not use_compile(config_from_dict(tiny_raw()).train, CPU)
    assert use_compile(config_from_dict(tiny_raw(train={"compile": True})).train, CPU)
    assert not use_compile(config_from_dict(tiny_raw(train={"compile": False})).train, CPU)
    on = config_from_dict(tiny_raw(), ["train.compile=on"]).train  # YAML's on/off: booleans
    assert on.compile is True and use_compile(on, CPU)
    assert config_from_dict(tiny_raw(), ["train.compile=off"]).train.compile is False
    with pytest.raises(ConfigError, match="train.compile"):
        config_from_dict(tiny_raw(train={"compile": "yes"}))


@pytest.mark.slow
def test_a_compiled_run_trains_like_the_eager_one(tmp_path, make_config):
    """Same seed, same data: the compiled forward's weights after 2 steps equal the eager
    run's to float tolerance (inductor reorders float sums), and its log says it compiled."""
    sets = ["train.iters=2", "train.val_interval=0", "model.down=max", "model.up=bilinear"]
    train(make_config(tmp_path / "eager", sets))
    train(make_config(tmp_path / "compiled", [*sets, "train.compile=on"]))
    a = load_checkpoint(tmp_path / "eager" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "compiled" / "last.pt")["model"]
    for key, tensor in a.items():
        torch.testing.assert_close(b[key], tensor, rtol=1e-4, atol=1e-5, msg=key)
    assert "torch.compile" in (tmp_path / "compiled" / "train.log").read_text()
