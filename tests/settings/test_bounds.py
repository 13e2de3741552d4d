"""Every numeric setting has a documented range, checked once where the config is read.

The property tests draw, for every numeric key of every section, values outside its range
(below, above, arbitrarily large integers, nan and infinities) and require a `BlockQNNError`
whose one line names the key; docs/configuration.md must list every range, so the
documentation cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockqnn.errors import BlockQNNError
from blockqnn.settings.bounds import SETTINGS, Range
from blockqnn.settings.config import (
    AgentConfig,
    Config,
    DataConfig,
    NetworkConfig,
    RewardConfig,
    SearchSettings,
    TrainConfig,
    merge,
)

SECTIONS = {
    "search": SearchSettings,
    "agent": AgentConfig,
    "data": DataConfig,
    "network": NetworkConfig,
    "train": TrainConfig,
    "reward": RewardConfig,
}


def _repository_root() -> Path:
    """The folder above this file that holds pyproject.toml, wherever the tests are nested."""
    return next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())


CONFIG_DOC = _repository_root() / "docs" / "configuration.md"


def _numeric(value: Any) -> bool:
    if isinstance(value, tuple):
        return bool(value) and all(_numeric(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_every_numeric_setting_has_a_range() -> None:
    numeric = {
        f"{name}.{f.name}"
        for name, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if _numeric(getattr(cls(), f.name))
    }
    numeric.discard("network.input_shape")  # set from the data; checked per dimension
    assert numeric == set(SETTINGS)


def test_defaults_lie_inside_their_ranges() -> None:
    for key, allowed in SETTINGS.items():
        section, name = key.split(".")
        value = getattr(SECTIONS[section](), name)
        for v in value if isinstance(value, tuple) else (value,):
            assert allowed.contains(v), key


def test_the_readme_lists_every_range() -> None:
    lines = CONFIG_DOC.read_text().splitlines()
    for key, allowed in SETTINGS.items():
        assert any(f"`{key}`" in line and allowed.describe() in line for line in lines), key


def _set(key: str, value: Any) -> dict[str, dict[str, Any]]:
    section, name = key.split(".")
    if key == "train.betas":
        value = [value, 0.9]
    return {section: {name: value}}


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_both_ends_of_a_closed_range_are_accepted(key: str) -> None:
    allowed = SETTINGS[key]
    ends = [] if allowed.open_low else [allowed.low]
    ends += [] if allowed.open_high else [allowed.high]
    for end in ends:
        value: float = int(end) if allowed.integer else end
        overrides = _set(key, value)
        if key == "agent.sample_size":  # must not exceed population_size
            overrides["agent"]["population_size"] = max(int(value), 1)
        if key == "agent.population_size":
            overrides["agent"]["sample_size"] = 1
        if key == "search.workers":  # the local executor holds fewer (MAX_LOCAL_WORKERS)
            overrides["search"]["executor"] = "ray"
        if key == "search.gpus_per_trial":  # the local executor runs one GPU per evaluation
            overrides["search"]["executor"] = "ray"
        if key == "search.stop_after":  # must be below the early-stop epochs
            overrides["train"] = {"epochs": int(value) + 1}
        merge(Config(), overrides)


def _outside(allowed: Range) -> st.SearchStrategy[Any]:
    """Values that must be refused: out of range on either side, any size, or not finite."""
    options: list[st.SearchStrategy[Any]] = [
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.integers(max_value=math.ceil(allowed.low) - 1),
        st.integers(min_value=math.floor(allowed.high) + 1),
        st.integers(min_value=10**300, max_value=10**1000),  # beyond any float
    ]
    if not allowed.integer:
        finite = functools.partial(st.floats, allow_nan=False, allow_infinity=False)
        options.append(finite(max_value=allowed.low, exclude_max=not allowed.open_low))
        options.append(finite(min_value=allowed.high, exclude_min=not allowed.open_high))
    return st.one_of(options)


@st.composite
def bad_settings(draw: st.DrawFn) -> tuple[str, Any]:
    key = draw(st.sampled_from(sorted(SETTINGS)))
    return key, draw(_outside(SETTINGS[key]))


@settings(max_examples=400, deadline=None)
@given(bad_settings())
def test_any_out_of_range_or_non_finite_value_is_refused_naming_the_key(
    case: tuple[str, Any],
) -> None:
    key, value = case
    with pytest.raises(BlockQNNError) as info:
        Config.from_dict(_set(key, value))
    message = str(info.value)
    assert key in message and "\n" not in message and len(message) < 300, message


@pytest.mark.parametrize("key", sorted(k for k, r in SETTINGS.items() if not r.integer))
@pytest.mark.parametrize("literal", ["nan", "inf", "-inf", "+nan"])
def test_non_finite_toml_values_are_refused_naming_the_key(
    key: str, literal: str, tmp_path: Path
) -> None:
    section, name = key.split(".")
    value = f"[{literal}, 0.9]" if key == "train.betas" else literal
    path = tmp_path / "c.toml"
    path.write_text(f"[{section}]\n{name} = {value}\n")
    with pytest.raises(BlockQNNError, match=key.replace(".", r"\.")):
        Config.from_toml(path)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[data]\nseed = -1\n", "data.seed = -1"),
        ("[data]\nval_size = nan\n", "data.val_size = nan"),
        ("[train]\nweight_decay = nan\n", "train.weight_decay = nan"),
        ("[train]\neps = -1.0\n", "train.eps = -1.0"),
        ("[train]\neps = 0.0\n", "train.eps = 0.0"),
        ("[train]\nbetas = [2.0, 2.0]\n", "train.betas = 2.0"),
        ("[train]\nlr = 1e300\n", "train.lr = 1e+300"),
        ("[train]\nseed = 18446744073709551616\n", "train.seed = 18446744073709551616"),
        ("[network]\nhidden = 9223372036854775807\n", "network.hidden"),
        ("[network]\nfilters = 2000000000\n", "network.filters = 2000000000"),
        ("[network]\nblocks_per_stage = 100000000\n", "network.blocks_per_stage"),
        ("[agent]\nmax_depth = 100000\n", "agent.max_depth = 100000"),
        ("[search]\nbudget = 1000000000\n", "search.budget = 1000000000"),
    ],
)
def test_the_reported_values_are_refused(toml: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(BlockQNNError) as info:
        Config.from_toml(path)
    assert message in str(info.value) and "must be" in str(info.value)


@pytest.mark.parametrize("key", ["dataset", "table", "data_dir", "cache_dir"])
def test_over_long_strings_are_refused_with_a_cut_echo(key: str) -> None:
    with pytest.raises(BlockQNNError) as info:
        Config.from_dict({"data": {key: "d" * 10_000}})
    message = str(info.value)
    assert f"data.{key}" in message and "10,000 characters" in message and len(message) < 200


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[train]\nseed = " + "9" * 4301 + "\n", "invalid TOML"),  # Python's digit limit
        ("[train]\nbetas = " + "[" * 5000 + "]" * 5000 + "\n", "invalid TOML"),
        ("[search]\nbudget = 1e9\n", "search.budget = 1000000000.0: expected an integer"),
    ],
)
def test_hostile_toml_is_bad_input(toml: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(BlockQNNError) as info:
        Config.from_toml(path)
    assert message in str(info.value) and len(str(info.value)) < 300
