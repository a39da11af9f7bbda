"""The flows' parameters reach Prefect's UI and API with a description each."""

from __future__ import annotations

import pytest
from prefect.utilities.callables import parameter_schema

from flows.ingest_flow import ingest_flow
from flows.sanitize_flow import sanitize_flow
from sanitize.config import read_toml_options
from sanitize.errors import ConfigError


@pytest.mark.parametrize("flow", [sanitize_flow, ingest_flow], ids=lambda f: f.name)
def test_every_parameter_has_a_description(flow):
    properties = parameter_schema(flow.fn).model_dump()["properties"]
    assert properties
    missing = [name for name, prop in properties.items() if not prop.get("description")]
    assert missing == []


def test_a_deployment_stores_only_the_options_its_toml_sets(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("seed = 4\n[bootstrap]\nepochs = 3\n")
    assert read_toml_options(toml) == {"seed": 4, "bootstrap": {"epochs": 3}}
    toml.write_text("[bootstrap]\nepochs = -3\n")
    with pytest.raises(ConfigError, match="epochs"):
        read_toml_options(toml)
    with pytest.raises(ConfigError, match="is a directory"):
        read_toml_options(tmp_path)
    toml.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_toml_options(toml)
