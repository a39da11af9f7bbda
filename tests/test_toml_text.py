"""The config shown in report.html as TOML: what tomllib reads back is what was written."""

from __future__ import annotations

import math
import tomllib

import pytest

from sanitize.config import SanitizeConfig
from sanitize.report.toml_text import toml_text


def test_nested_data_round_trip_through_tomllib():
    data = {
        "seed": 3,
        "name": 'quote " backslash \\ newline \n tab \t bell \x07 del \x7f é 🦀',
        "flags": [True, False],
        "mixed": [1, 2.5, "x", [1, 2], {"a": 1}],
        "floats": [1e-05, 1e20, -0.0, math.inf, -math.inf],
        "empty_list": [],
        "section": {
            "lr": 0.002,
            "key with spaces": "v",
            "dotted.key": 1,
            "": "empty key",
            "inner": {"deep": {"x": 1}},
        },
        "only_tables": {"a": {"b": 1}},
        "empty": {},
    }
    assert tomllib.loads(toml_text(data)) == data


def test_none_is_a_comment_and_is_left_out():
    text = toml_text({"a": None, "s": {"b": None, "c": 1}})
    assert "# a is unset: the default applies" in text
    assert tomllib.loads(text) == {"s": {"c": 1}}


def test_nan_round_trips_as_nan():
    assert math.isnan(tomllib.loads(toml_text({"x": math.nan}))["x"])


def test_values_toml_cannot_hold_raise():
    with pytest.raises(TypeError, match="cannot write NoneType"):
        toml_text({"a": [1, None]})
    with pytest.raises(TypeError, match="cannot write object"):
        toml_text({"a": object()})


def test_a_config_written_as_toml_reads_back_as_the_same_config():
    config = SanitizeConfig.from_dict(
        {
            "seed": 7,
            "detectors": ["spectral", "cbd"],
            "detector_params": {"spectral": {"threshold": 0.4}},
            "bootstrap": {"epochs": 3},
            "decision": {"expected_class_counts": {"cat": 10, 'dog, "big"': 20}},
        }
    )
    assert config.decision.expected_class_counts and config.bootstrap.epochs == 3
    read = SanitizeConfig.from_dict(tomllib.loads(toml_text(config.to_dict())))
    assert read == config and read.fingerprint() == config.fingerprint()
