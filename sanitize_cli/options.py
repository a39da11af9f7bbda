"""The run's config from the command line: ``--config``, ``--set`` and the named flags."""

from __future__ import annotations

import argparse

from sanitize.config import SanitizeConfig
from sanitize.errors import ConfigError

# Named options of `sanitize run` and `inspect`: (section, field, attribute of args).
_CONFIG_FLAGS = (
    ("data", "image_column", "image_column"),
    ("data", "label_column", "label_column"),
    ("data", "id_column", "id_column"),
    ("data", "image_size", "image_size"),
    ("data", "channels", "channels"),
    ("data", "batch_rows", "batch_rows"),
    ("data", "allow_external_paths", "allow_external_paths"),
    ("bootstrap", "checkpoint", "checkpoint"),
    ("bootstrap", "epochs", "epochs"),
    ("bootstrap", "clean_epochs", "clean_epochs"),
    ("bootstrap", "train_steps", "train_steps"),
    ("bootstrap", "fit_loss", "fit_loss"),
    ("bootstrap", "batch_size", "batch_size"),
    ("bootstrap", "lr", "lr"),
    ("bootstrap", "width", "width"),
    ("bootstrap", "max_train_rows", "max_train_rows"),
    ("bootstrap", "device", "device"),
    ("decision", "min_votes", "min_votes"),
    ("decision", "max_removal_fraction", "max_removal"),
)


def config_from_args(args: argparse.Namespace) -> SanitizeConfig:
    """The run's config: the ``--config`` TOML, then each ``--set``, then the named flags."""
    raw: dict = {}
    if getattr(args, "config", None):
        raw = SanitizeConfig.from_toml(args.config).to_dict()
    for item in getattr(args, "set", None) or []:
        _set_option(raw, item)
    for section, key, attr in _CONFIG_FLAGS:
        value = getattr(args, attr, None)
        if value is not None:
            raw.setdefault(section, {})[key] = value
    if getattr(args, "detectors", None):
        raw["detectors"] = [d.strip() for d in args.detectors.split(",") if d.strip()]
        raw["detector_params"] = {
            k: v for k, v in raw.get("detector_params", {}).items() if k in raw["detectors"]
        }
    if getattr(args, "seed", None) is not None:
        raw["seed"] = args.seed
    config = SanitizeConfig.from_dict(raw)
    if getattr(args, "expected_classes", None):
        from sanitize.data.expected import read_expected_counts  # pyarrow, fsspec: on use

        counts = read_expected_counts(args.expected_classes, config.data)
        decision = config.decision.replace(expected_class_counts=counts)
        config = config.replace(decision=decision)
    return config


def _set_option(raw: dict, item: str) -> None:
    """Apply one ``--set KEY=VALUE`` (``bootstrap.lr=1e-3``) to the nested config ``raw``.

    Values parse as ``--param`` values; one with a comma is a list (``detectors=spectral,cbd``,
    ``decision.weight_clip=0.05,1``); ``none`` is None.
    """
    key, sep, text = item.partition("=")
    parts = [p.strip() for p in key.split(".")]
    if not sep or not all(parts):
        raise ConfigError(f"--set expects section.key=value, got {item!r}")
    text = text.strip()
    if "," in text:
        value: object = [param_value(v.strip()) for v in text.split(",") if v.strip()]
    elif text.lower() == "none":
        value = None
    else:
        value = param_value(text)
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def param_value(text: str) -> bool | int | float | str:
    """A ``--param`` value as bool ("true"/"false"), int, float, or else the string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def attack_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param expects key=value, got {item!r}")
        params[key.strip()] = param_value(value.strip())
    return params
