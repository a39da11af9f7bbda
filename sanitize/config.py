"""One validated, frozen configuration object for a sanitize run.

The config is split in sections that follow the data flow (``data``, ``bootstrap``, ``decision``)
beside the detector list. Every section is a frozen pydantic model: its constraints are declared
on its fields, a bad value is a one-line :class:`~sanitize.errors.ConfigError`, and its JSON
schema types the Prefect flows' ``config`` parameter. :meth:`SanitizeConfig.fingerprint` keys
cached stage outputs; the whole config is written next to every output (``report.json``).
Evidence for the defaults: ``docs/defaults.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import pydantic
from pydantic import Field, field_validator, model_validator

from sanitize.errors import ConfigError

# Run when a config does not list its detectors, in this order: every registered one but the
# model probes (why they are off: docs/defaults.md, "detectors").
DEFAULT_DETECTORS = (
    "activation_clustering",
    "spectral",
    "spectre",
    "contrast_spectral",
    "early_loss",
    "cbd",
    "pixel_spectral",
    "stamp",
    "shared_direction",
)
# Detectors that read the bootstrap model itself (its channel maps, its adversarial examples).
MODEL_PROBES = ("linf_activation", "adversarial_overlap")
# The registry's names (a test keeps them equal), known without importing the detectors: that
# would load torch wherever a config is checked, and tie every stage's resume key to every
# detector's code.
KNOWN_DETECTORS = DEFAULT_DETECTORS + MODEL_PROBES
# The decision's class rules that a config can leave out, in the order they run (the names of
# ``sanitize.decision.rules.RULES``; a test keeps them equal).
RULE_NAMES = ("orient", "size_orient", "refine", "growth", "settled")


# Smallest side the bootstrap network takes: it halves the image three times
# (sanitize.model.net), and a 1 x 1 map cannot be pooled again.
MIN_IMAGE_SIZE = 8
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"
# Largest side chosen when data.image_size is unset: bounds the cost (bootstrap time grows
# with pixels) and the decoded images' size on disk (rows x channels x 64 x 64 bytes).
MAX_WORKING_SIZE = 64


class Options(pydantic.BaseModel):
    """A frozen group of options; unknown keys and bad values raise a one-line ConfigError."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    section: ClassVar[str] = ""

    def __init__(self, /, **values: Any) -> None:
        try:
            super().__init__(**values)
        except pydantic.ValidationError as exc:
            raise ConfigError(one_line_error(exc, type(self))) from None

    def __hash__(self) -> int:
        return hash(json.dumps(self.model_dump(mode="json"), sort_keys=True, default=str))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        """Options from nested plain data (a parsed TOML or JSON file)."""
        try:
            return cls.model_validate(raw)
        except pydantic.ValidationError as exc:
            raise ConfigError(one_line_error(exc, cls)) from None

    def replace(self, **changes: Any) -> Self:
        """A validated copy with the named fields changed (``cfg.replace(seed=1)``)."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**values, **changes})

    def to_dict(self) -> dict[str, Any]:
        """The options as plain data (lists, dicts), as a TOML or JSON file holds them."""
        return self.model_dump(mode="json")


class DataConfig(Options):
    """How the source is read and decoded."""

    section: ClassVar[str] = "data"

    image_column: str = Field(
        "image", description="Column holding the image (HF struct<bytes, path>, bytes or a path)."
    )
    label_column: str = Field(
        "label", description="Column holding the class label (integers, or strings sorted)."
    )
    id_column: str = Field(
        "sample_id",
        description="Column of every output's sample_id (another name must exist); none: ordinal.",
    )
    image_size: int | None = Field(
        None,
        ge=MIN_IMAGE_SIZE,
        le=512,
        description="Side every image is resized to, pixels in [8, 512]; None: median side, <= 64.",
    )
    channels: Literal[1, 3] | None = Field(
        None, description="1 (grey) or 3 (RGB); None: the mode most of the first images have."
    )
    batch_rows: int = Field(
        2048, ge=1, description="Rows read and decoded at a time, >= 1 (bounds the read's memory)."
    )
    allow_external_paths: bool = Field(
        False, description="Read image paths outside the source's directory (absolute, .., URLs)."
    )


class BootstrapConfig(Options):
    """The bootstrap model f_B, trained briefly on the set itself so it learns the backdoor."""

    section: ClassVar[str] = "bootstrap"

    checkpoint: str | None = Field(
        None, description="Weights (.safetensors or torch.save state dict) used, not trained."
    )
    epochs: int | None = Field(
        None, ge=1, description="Epochs of f_B training, >= 1; None: until the loss is fit_loss."
    )
    clean_epochs: int | None = Field(
        None, ge=0, description="Epochs of the deconfounded f_C (CBD), >= 0; None: as f_B; 0: none."
    )
    train_steps: int = Field(
        1500, ge=10, description="Optimizer-step budget of the automatic epoch count, >= 10."
    )
    fit_loss: float = Field(
        0.2, gt=0, description="Mean training cross-entropy (nats, > 0) that stops training."
    )
    batch_size: int = Field(128, ge=2, description="Training batch size in rows, >= 2.")
    lr: float = Field(2e-3, gt=0, lt=1, description="Adam learning rate, in (0, 1).")
    width: int = Field(
        32, ge=4, description="Channels of the first conv block, >= 4; each block doubles it."
    )
    device: str = Field(
        "auto",
        json_schema_extra={"pattern": DEVICE_PATTERN},
        description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.",
    )
    max_train_rows: int = Field(
        50000, ge=100, description="Cap on training rows, >= 100 (a stratified sample above it)."
    )
    precise_bn: bool = Field(
        False, description="Recompute the BatchNorm statistics of the final weights."
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not re.fullmatch(DEVICE_PATTERN, device):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {device!r}")
        return device


def _rule_choices(schema: dict[str, Any]) -> None:
    schema["items"] = {"enum": list(RULE_NAMES), "type": "string"}


class DecisionConfig(Options):
    """How detector scores become one poison_score, flags and sample weights."""

    section: ClassVar[str] = "decision"

    min_votes: int | None = Field(
        1, ge=1, description="Detector flags a row needs to be removed, >= 1; None: a majority."
    )
    max_removal_fraction: float = Field(
        0.25, gt=0, le=1, description="Cap on the share of rows removed, in (0, 1]."
    )
    min_class_rows: int = Field(
        10,
        ge=1,
        description="Fewest flagged rows, >= 1, that make a group in a class (every rule).",
    )
    rules: tuple[str, ...] = Field(
        RULE_NAMES,
        description="The class rules to run; they run in the declared order whatever this one.",
        json_schema_extra=_rule_choices,
    )
    weight_clip: tuple[float, float] = Field(
        (0.05, 1.0), description="Clip range (0 < lo < hi <= 1) of the raw CBD weight."
    )
    weight_suspect_only: bool = Field(
        True, description="Weigh rows by CBD only in the classes judged poisoned."
    )
    weight_min_agreement: float = Field(
        0.75,
        ge=0,
        le=1,
        description="AUROC in [0, 1] with which a class's weights must rank its removed rows low.",
    )
    size_suspect: bool | None = Field(
        None, description="Judge an inflated class with few flags by its splits; None: auto."
    )
    expected_class_counts: dict[str, float] = Field(
        default_factory=dict,
        description="A clean delivery's count or share (> 0) per class name or label value.",
    )
    size_gain: float = Field(
        1.25, gt=1, description="Rows-to-expected ratio (> 1) above which a class has gained rows."
    )
    size_z: float = Field(
        3.5, gt=0, description="Robust z (> 0) of a class's log size that makes it inflated."
    )
    growth_share: float = Field(
        0.5, gt=0, le=1, description="Share of its flags, in (0, 1], a class must have grown by."
    )
    growth_spreads: float = Field(
        2.0, ge=0, description="Flags, in robust spreads of class sizes (>= 0), always kept."
    )
    growth_pixel_auc: float | None = Field(
        0.75,
        gt=0.5,
        le=1,
        description="Pixel label-disagreement AUROC, in (0.5, 1], flags need; None: sizes decide.",
    )
    growth_pixel_reference: float = Field(
        0.5, gt=0, le=1, description="Nearest-image label agreement, in (0, 1], where pixels tell."
    )
    refine_components: int = Field(
        16, ge=1, description="Principal coordinates, >= 1, that a class's discriminant uses."
    )
    refine_keep: float = Field(
        0.05, ge=0, le=0.5, description="Probability, in [0, 0.5], below which a flag is dropped."
    )
    refine_add: float = Field(
        0.15, le=1, description="Probability, in [refine_keep, 1], at which a row is flagged."
    )
    refine_min_kept: float = Field(
        0.75, ge=0, le=1, description="Share of a class's flags, in [0, 1], the refit must keep."
    )
    refine_folds: int = Field(5, ge=2, description="Cross-fitting folds, >= 2.")

    @field_validator("expected_class_counts", mode="before")
    @classmethod
    def _counts_from_pairs(cls, raw: Any) -> dict[str, float]:
        items = raw.items() if isinstance(raw, dict) else raw or ()
        out: dict[str, float] = {}
        for pair in items:
            try:
                name, count = pair
                name, count = str(name), float(count)
            except (TypeError, ValueError):
                raise ValueError(f"must map class names to counts, got {pair!r}") from None
            if not (math.isfinite(count) and count > 0):
                raise ValueError(f"class {name!r} has {count}; counts must be finite and > 0")
            out[name] = count
        return dict(sorted(out.items()))

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(names) - set(RULE_NAMES))
        if unknown:
            raise ValueError(f"unknown rule(s) {unknown}; known: {', '.join(RULE_NAMES)}")
        return tuple(name for name in RULE_NAMES if name in names)

    @model_validator(mode="after")
    def _check_pairs(self) -> Self:
        lo, hi = self.weight_clip
        if not 0 < lo < hi <= 1:
            raise ValueError(f"weight_clip must satisfy 0 < lo < hi <= 1, got {self.weight_clip}")
        if self.refine_add < self.refine_keep:
            raise ValueError(
                f"refine_add must be in [refine_keep, 1] = [{self.refine_keep}, 1], "
                f"got {self.refine_add}"
            )
        if "refine" in self.rules and self.min_class_rows < self.refine_folds:
            raise ValueError(
                f"min_class_rows must be >= refine_folds while refine runs, got "
                f"{self.min_class_rows} and {self.refine_folds}"
            )
        return self


def _detector_choices(schema: dict[str, Any]) -> None:
    """The detector list's items as a choice of the known names (a typed form in a UI)."""
    schema["items"] = {"enum": list(KNOWN_DETECTORS), "type": "string"}


class SanitizeConfig(Options):
    """Everything a run depends on, besides the source."""

    data: DataConfig = Field(default_factory=DataConfig, description="How the source is read.")
    bootstrap: BootstrapConfig = Field(
        default_factory=BootstrapConfig, description="The bootstrap model's training."
    )
    decision: DecisionConfig = Field(
        default_factory=DecisionConfig, description="How scores become flags and weights."
    )
    detectors: tuple[str, ...] = Field(
        DEFAULT_DETECTORS,
        description="Detector names to run, in order; each writes a score_<name> column.",
        json_schema_extra=_detector_choices,
    )
    detector_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Keyword arguments per detector name."
    )
    seed: int = Field(0, ge=0, description="Seeds models, data order and randomised detectors.")

    @field_validator("detectors")
    @classmethod
    def _registered(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        known = ", ".join(KNOWN_DETECTORS)
        if not names:
            raise ValueError(f"at least one detector is needed; known: {known}")
        for name in names:
            if name not in KNOWN_DETECTORS:
                raise ValueError(f"unknown detector {name!r}; known: {known}")
        if len(set(names)) != len(names):
            raise ValueError(f"detectors listed twice: {list(names)}")
        return names

    @field_validator("detector_params")
    @classmethod
    def _sorted_params(cls, params: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {name: dict(sorted(p.items())) for name, p in params.items()}

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for name in self.detector_params:
            if name not in self.detectors:
                raise ValueError(f"parameters for detector {name!r}, which is not in detectors")
        if "cbd" in self.detectors and self.bootstrap.clean_epochs == 0:
            raise ValueError("detector 'cbd' needs bootstrap.clean_epochs >= 1")
        return self

    def params_for(self, name: str) -> dict[str, Any]:
        """Keyword arguments for detector ``name`` (empty when none were given)."""
        return dict(self.detector_params.get(name, {}))

    @classmethod
    def from_toml(cls, path: str | Path) -> SanitizeConfig:
        return cls.from_dict(read_toml_options(path))

    @classmethod
    def coerce(cls, config: SanitizeConfig | dict[str, Any] | None) -> SanitizeConfig:
        """A config from a config, nested plain data, or None (the defaults)."""
        return config if isinstance(config, SanitizeConfig) else cls.from_dict(config or {})

    def fingerprint(self, *, sections: tuple[str, ...] | None = None) -> str:
        """Stable hex digest of the config, or of the named top-level fields only."""
        payload = self.to_dict()
        if sections is not None:
            payload = {k: payload[k] for k in sections}
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def one_line_error(exc: pydantic.ValidationError, model: type[Options]) -> str:
    """The first problem of ``exc`` as one line that names the option (``bootstrap.lr``)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    parent = first["loc"][:-1]
    where = ".".join(str(part) for part in (model.section, *first["loc"]) if part != "")
    if first["type"] == "extra_forbidden":
        unknown = sorted(str(e["loc"][-1]) for e in errors if e["loc"][:-1] == parent)
        owner = _model_at(model, parent)
        if owner is SanitizeConfig:
            return f"unknown config key(s) {unknown}"
        known = ", ".join(sorted(owner.model_fields))
        return f"unknown option(s) {unknown} in [{owner.section}]; known: {known}"
    if first["type"] == "value_error":
        if isinstance(first["ctx"]["error"], ConfigError):  # a section's own, already named
            return str(first["ctx"]["error"])
        return f"{where or 'config'}: {first['ctx']['error']}"
    message = first["msg"][0].lower() + first["msg"][1:]
    return f"{where or 'config'}: {message}, got {first['input']!r}"


def _model_at(model: type[Options], loc: tuple[Any, ...]) -> type[Options]:
    for part in loc:
        model = model.model_fields[str(part)].annotation  # type: ignore[assignment]
    return model


def read_toml_options(path: str | Path) -> dict[str, Any]:
    """The options a run.toml sets, as nested plain data, checked to build a valid config."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    SanitizeConfig.from_dict(raw)
    return raw
