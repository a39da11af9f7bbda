import pytest

from sanitize.config import BootstrapConfig, DataConfig, DecisionConfig, SanitizeConfig
from sanitize.errors import ConfigError


def test_defaults_are_valid_and_hashable():
    cfg = SanitizeConfig()
    assert hash(cfg) == hash(SanitizeConfig())
    assert cfg.fingerprint() == SanitizeConfig().fingerprint()
    assert cfg.fingerprint() != cfg.replace(seed=1).fingerprint()


def test_round_trip_through_dict():
    cfg = SanitizeConfig(
        data=DataConfig(image_size=32),
        detectors=("spectral", "cbd"),
        detector_params={"spectral": {"z_threshold": 5.0}},
    )
    again = SanitizeConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.params_for("spectral") == {"z_threshold": 5.0}
    assert again.params_for("cbd") == {}


def test_expected_class_counts_from_a_toml_table(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[decision.expected_class_counts]\ncat = 300\n7 = 100\n")
    cfg = SanitizeConfig.from_toml(path)
    assert cfg.decision.expected_class_counts == {"7": 100.0, "cat": 300.0}
    assert SanitizeConfig.from_dict(cfg.to_dict()) == cfg
    assert hash(cfg) and cfg.fingerprint() != SanitizeConfig().fingerprint()


def test_from_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('seed = 3\ndetectors = ["spectral"]\n[bootstrap]\nepochs = 2\n')
    cfg = SanitizeConfig.from_toml(path)
    assert cfg.seed == 3 and cfg.bootstrap.epochs == 2 and cfg.detectors == ("spectral",)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SanitizeConfig(detectors=("nope",)), "unknown detector 'nope'; known: "),
        (lambda: SanitizeConfig(detectors=()), "at least one detector"),
        (lambda: SanitizeConfig(bootstrap=BootstrapConfig(epochs=0)), "bootstrap.epochs"),
        (lambda: SanitizeConfig(bootstrap=BootstrapConfig(device="tpu")), "bootstrap.device"),
        (lambda: SanitizeConfig(data=DataConfig(channels=2)), "data.channels"),
        (
            lambda: SanitizeConfig.from_dict({"data": {"colour": 1}}),
            r"unknown option\(s\) \['colour'\]",
        ),
        (lambda: SanitizeConfig.from_dict({"sed": 1}), "unknown config key"),
        (
            lambda: SanitizeConfig(bootstrap=BootstrapConfig(clean_epochs=0)),
            "'cbd' needs bootstrap.clean_epochs",
        ),
        (
            lambda: SanitizeConfig(decision=DecisionConfig(weight_min_agreement=1.5)),
            "decision.weight_min_agreement: input should be less than or equal to 1, got 1.5",
        ),
        (
            lambda: SanitizeConfig.from_dict({"decision": {"expected_class_counts": {"cat": 0}}}),
            "class 'cat' has 0.0; counts must be finite and > 0",
        ),
        (
            lambda: SanitizeConfig.from_dict({"decision": {"expected_class_counts": [1, 2]}}),
            "must map class names to counts",
        ),
    ],
)
def test_invalid_configs_name_the_problem(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_missing_toml_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        SanitizeConfig.from_toml(tmp_path / "none.toml")


def test_known_detectors_match_the_registry():
    from sanitize.config import KNOWN_DETECTORS
    from sanitize.detect import available_detectors

    assert sorted(KNOWN_DETECTORS) == sorted(available_detectors())
