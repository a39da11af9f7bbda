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


@pytest.mark.parametrize("flow", [sanitize_flow, ingest_flow], ids=lambda f: f.name)
def test_the_config_parameter_is_a_typed_form(flow):
    from sanitize.detect import available_detectors

    schema = parameter_schema(flow.fn).model_dump()
    assert schema["properties"]["config"]["anyOf"][0] == {"$ref": "#/definitions/SanitizeConfig"}
    sections = schema["definitions"]
    assert {"SanitizeConfig", "DataConfig", "BootstrapConfig", "DecisionConfig"} <= set(sections)
    for name, section in sections.items():
        assert section["additionalProperties"] is False, name
        undescribed = [f for f, p in section["properties"].items() if not p.get("description")]
        assert undescribed == [], name
    detectors = sections["SanitizeConfig"]["properties"]["detectors"]
    assert sorted(detectors["items"]["enum"]) == sorted(available_detectors())
    lr = sections["BootstrapConfig"]["properties"]["lr"]
    assert (lr["exclusiveMinimum"], lr["exclusiveMaximum"]) == (0, 1)


def test_a_flow_takes_the_config_as_plain_data_or_as_a_config():
    from sanitize.config import SanitizeConfig

    raw = {"seed": 4, "bootstrap": {"epochs": 3}}
    assert SanitizeConfig.coerce(raw) == SanitizeConfig.coerce(SanitizeConfig.from_dict(raw))
    assert SanitizeConfig.coerce(None) == SanitizeConfig()
    with pytest.raises(ConfigError, match=r"^bootstrap.lr: input should be less than 1, got 2$"):
        SanitizeConfig.coerce({"bootstrap": {"lr": 2}})
