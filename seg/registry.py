"""Named choices: one check, one error type and one message for every name a config picks.

Models, data sets and losses live in registries (dictionaries from a name to what it
builds), and every config section has its set of valid keys. `check_keys` is the one way
to check a name against them, so a typo reads the same wherever it is caught::

    model.name: unknown model 'segnett'; did you mean 'segnet'? Choose one of: deeplabv3plus, segnet
    train: unknown key 'lrr'; did you mean 'lr'? Choose one of: amp, batch_size, betas, ...

What a builder raises past those checks (a model's ValueError, a transform's pydantic
error) reaches the user through `config_error`: one line, after the config key.

This module imports nothing from `seg`, so the config, the models, the data sets and the
engine can all use it without importing one another.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A config that can't be used: the message names the key and the fix."""


def check_keys(path: str, given: Iterable[Any], valid: Iterable[str], what: str = "key") -> None:
    """Raise `ConfigError` for the first name of ``given`` that isn't one of ``valid``.

    Args:
        path: where the names sit, spelt as the user writes it: ``"train"`` for the keys of
            the ``train`` section, ``"model.name"`` for the value of that key.
        given: the names to check: a mapping (its keys) or ``[value]`` for one value.
        valid: the valid names, e.g. a registry dictionary.
        what: what one name is, for the message: ``"key"``, ``"model"``, ``"loss"``.
    Raises:
        ConfigError: ``"{path}: unknown {what} {name!r}; did you mean {closest!r}? Choose
            one of: {valid names}"`` (the hint only when a valid name is close), or
            ``"{path}: no {what} given. Choose one of: ..."`` for a missing (None) name.
    """
    choices = sorted(str(name) for name in valid)
    for name in given:
        if isinstance(name, str) and name in choices:
            continue
        options = f"Choose one of: {', '.join(choices)}"
        if name is None:
            raise ConfigError(f"{path}: no {what} given. {options}")
        close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else "."
        raise ConfigError(f"{path}: unknown {what} {name!r}{hint} {options}")


def config_error(context: str, error: Exception) -> ConfigError:
    """``error`` (what a builder raised: a ValueError, a pydantic error, ...) as a one-line
    `ConfigError` that starts with ``context`` (the config key, e.g. ``"data"``)."""
    return ConfigError(f"{context}: {' '.join(str(error).split())}")


__all__ = ["ConfigError", "check_keys", "config_error"]
