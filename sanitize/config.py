"""One validated, frozen configuration object for a sanitize run.

The config is split in sections that follow the data flow (``data``, ``bootstrap``, ``detectors``,
``decision``). Every section is a frozen dataclass, so a config is hashable and its
:meth:`SanitizeConfig.fingerprint` can key cached stage outputs. The whole config is written next to
every output (``report.json``) with the code version. Evidence for the defaults:
``docs/defaults.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from sanitize.errors import ConfigError

KNOWN_DETECTORS = (
    "activation_clustering",
    "spectral",
    "spectre",
    "contrast_spectral",
    "early_loss",
    "cbd",
    "pixel_spectral",
    "stamp",
    "shared_direction",
    "linf_activation",
    "adversarial_overlap",
)
# Detectors that read the bootstrap model itself (its channel maps, its adversarial
# examples); known, but off by default (why: docs/defaults.md, "detectors").
MODEL_PROBES = ("linf_activation", "adversarial_overlap")
# Run when a config does not list its detectors: every one but the model probes.
DEFAULT_DETECTORS = tuple(name for name in KNOWN_DETECTORS if name not in MODEL_PROBES)


# Smallest side the bootstrap network takes: it halves the image three times
# (sanitize.model.net), and a 1 x 1 map cannot be pooled again.
MIN_IMAGE_SIZE = 8
# Largest side chosen when data.image_size is unset: bounds the cost (bootstrap time grows
# with pixels) and the decoded images' size on disk (rows x channels x 64 x 64 bytes).
MAX_WORKING_SIZE = 64


@dataclass(frozen=True)
class DataConfig:
    """How the source is read and decoded.

    image_column : str, default="image"
        Column holding the image (HF ``struct<bytes, path>``, raw bytes, or a path string).
    label_column : str, default="label"
        Column holding the class label (integers, or strings mapped to sorted class indices).
    id_column : str, default="sample_id"
        Column of every output's ``sample_id`` (another name must exist); none: the row ordinal.
    image_size : int or None, default=None
        Side every image is resized to, pixels in [8, 512]; None: first images' median, <= 64.
    channels : int or None, default=None
        1 (grey) or 3 (RGB); None: the mode most of the first images read have.
    batch_rows : int, default=2048
        Rows read and decoded at a time, >= 1 (bounds memory of the read stage).
    allow_external_paths : bool, default=False
        Read image paths outside the source's directory (absolute, ``..``, links, URLs).
    """

    image_column: str = "image"
    label_column: str = "label"
    id_column: str = "sample_id"
    image_size: int | None = None
    channels: int | None = None
    batch_rows: int = 2048
    allow_external_paths: bool = False

    def validate(self) -> None:
        if self.image_size is not None and not MIN_IMAGE_SIZE <= self.image_size <= 512:
            raise ConfigError(
                f"data.image_size must be in [{MIN_IMAGE_SIZE}, 512], got {self.image_size}"
            )
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"data.channels must be 1, 3 or None, got {self.channels}")
        if self.batch_rows < 1:
            raise ConfigError(f"data.batch_rows must be >= 1, got {self.batch_rows}")


@dataclass(frozen=True)
class BootstrapConfig:
    """The bootstrap model f_B, trained briefly on the set itself so it learns the backdoor.

    checkpoint : str or None, default=None
        Path to weights (``.safetensors`` or ``torch.save`` state dict) that skip f_B's training.
    epochs : int or None, default=None
        Epochs of f_B training, >= 1; None: until the mean loss is below ``fit_loss``.
    clean_epochs : int or None, default=None
        Epochs of the deconfounded model f_C (CBD), >= 0; None: as many as f_B; 0: no f_C.
    train_steps : int, default=1500
        Optimizer-step budget of the automatic epoch count, >= 10 (2 to 60 epochs).
    fit_loss : float, default=0.2
        Mean training cross-entropy (nats, > 0) at which automatic training stops.
    batch_size : int, default=128
        Training batch size in rows, >= 2.
    lr : float, default=2e-3
        Adam learning rate, in (0, 1).
    width : int, default=32
        Channels of the first conv block, >= 4; blocks double it (32-64-128-256).
    device : str, default="auto"
        "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".
    max_train_rows : int, default=50000
        Cap on training rows, >= 100 (a stratified sample above it); embedding covers all.
    precise_bn : bool, default=False
        Recompute the BatchNorm statistics for the final weights before embedding.
    """

    checkpoint: str | None = None
    epochs: int | None = None
    clean_epochs: int | None = None
    train_steps: int = 1500
    fit_loss: float = 0.2
    batch_size: int = 128
    lr: float = 2e-3
    width: int = 32
    device: str = "auto"
    max_train_rows: int = 50000
    precise_bn: bool = False

    def validate(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"bootstrap.epochs must be >= 1, got {self.epochs}")
        if self.clean_epochs is not None and self.clean_epochs < 0:
            raise ConfigError(f"bootstrap.clean_epochs must be >= 0, got {self.clean_epochs}")
        if self.train_steps < 10:
            raise ConfigError(f"bootstrap.train_steps must be >= 10, got {self.train_steps}")
        if not self.fit_loss > 0:
            raise ConfigError(f"bootstrap.fit_loss must be > 0, got {self.fit_loss}")
        if self.batch_size < 2:
            raise ConfigError(f"bootstrap.batch_size must be >= 2, got {self.batch_size}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"bootstrap.lr must be in (0, 1), got {self.lr}")
        if self.width < 4:
            raise ConfigError(f"bootstrap.width must be >= 4, got {self.width}")
        if self.max_train_rows < 100:
            raise ConfigError(f"bootstrap.max_train_rows must be >= 100, got {self.max_train_rows}")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:")):
            raise ConfigError(f"bootstrap.device must be auto, cpu, cuda or cuda:N, got {dev!r}")


@dataclass(frozen=True)
class DecisionConfig:
    """How detector scores become one poison_score, flags and sample weights.

    min_votes : int or None, default=1
        Detector flags a row needs to be removed, >= 1; None: a strict majority of those run.
    max_removal_fraction : float, default=0.25
        Cap on the share of rows removed, in (0, 1]; the highest poison scores fill it first.
    group_vote_min_rows : int, default=10
        Flags, >= 1, a group-voting detector (CBD) needs in a class for them to count as votes.
    weight_clip : tuple of float, default=(0.05, 1.0)
        Clip range (0 < lo < hi <= 1) of the raw CBD weight l_B / (l_B + l_C) before normalising.
    weight_suspect_only : bool, default=True
        Weigh rows by CBD only in the classes judged poisoned; other kept rows weigh the same.
    weight_min_flagged : int, default=10
        Removed rows, >= 1, that make a class judged poisoned (weighted, named in the verdict).
    weight_min_agreement : float, default=0.75
        AUROC in [0, 1] with which a class's weights must rank its removed rows below its kept.
    orient : bool, default=True
        Keep only the oriented detector's (early loss) side of a class it flags much of.
    size_orient : bool, default=True
        Turn minority flags over to the rest of an inflated class (``decision.size_orient``).
    size_suspect : bool or None, default=None
        Judge an inflated class with few flags by its splits; None: with expected counts or auto.
    expected_class_counts : tuple of (str, float) pairs, default=()
        A clean delivery's count or share (> 0) per class; class sizes are judged against it.
    size_gain : float, default=1.25
        Rows-to-expected ratio (> 1) above which a class has gained rows (expected counts only).
    size_z : float, default=3.5
        Robust z (> 0) of a class's log size among the other classes that makes it inflated.
    growth_check : bool, default=True
        Withdraw the flags of a class whose growth does not account for them.
    growth_share : float, default=0.5
        Share of its flags, in (0, 1], a class must have grown by to keep them.
    growth_spreads : float, default=2.0
        Flags, in robust spreads of the class sizes (>= 0), below which a class keeps its flags.
    growth_pixel_auc : float or None, default=0.75
        Pixel label-disagreement AUROC, in (0.5, 1], a class's flags need; None: sizes decide.
    growth_pixel_reference : float, default=0.5
        Reference classes' mean nearest-image label agreement, in (0, 1], at which pixels tell.
    refine : bool, default=True
        Re-draw each class's flagged group with a cross-fitted linear discriminant.
    refine_components : int, default=16
        Principal coordinates, >= 1, that a class's discriminant uses.
    refine_keep : float, default=0.05
        Cross-fitted probability, in [0, 0.5], below which a flagged row loses its flag.
    refine_add : float, default=0.15
        Cross-fitted probability, in [refine_keep, 1], at which an unflagged row is flagged.
    refine_min_kept : float, default=0.75
        Share of a class's flags, in [0, 1], the discriminant must keep, or all go; 0: off.
    refine_min_rows : int, default=10
        Fewest flagged rows, >= ``refine_folds``, a class needs to be refined.
    refine_folds : int, default=5
        Cross-fitting folds, >= 2.
    """

    min_votes: int | None = 1
    max_removal_fraction: float = 0.25
    group_vote_min_rows: int = 10
    weight_clip: tuple[float, float] = (0.05, 1.0)
    weight_suspect_only: bool = True
    weight_min_flagged: int = 10
    weight_min_agreement: float = 0.75
    orient: bool = True
    size_orient: bool = True
    size_suspect: bool | None = None
    expected_class_counts: tuple[tuple[str, float], ...] = ()
    size_gain: float = 1.25
    size_z: float = 3.5
    growth_check: bool = True
    growth_share: float = 0.5
    growth_spreads: float = 2.0
    growth_pixel_auc: float | None = 0.75
    growth_pixel_reference: float = 0.5
    refine: bool = True
    refine_components: int = 16
    refine_keep: float = 0.05
    refine_add: float = 0.15
    refine_min_kept: float = 0.75
    refine_min_rows: int = 10
    refine_folds: int = 5

    def validate(self) -> None:
        self._validate_vote_and_weights()
        self._validate_size_and_growth()
        self._validate_refine()

    def _validate_vote_and_weights(self) -> None:
        if self.min_votes is not None and self.min_votes < 1:
            raise ConfigError(f"decision.min_votes must be >= 1, got {self.min_votes}")
        if not 0 < self.max_removal_fraction <= 1:
            raise ConfigError(
                f"decision.max_removal_fraction must be in (0, 1], got {self.max_removal_fraction}"
            )
        if self.group_vote_min_rows < 1:
            raise ConfigError(
                f"decision.group_vote_min_rows must be >= 1, got {self.group_vote_min_rows}"
            )
        lo, hi = self.weight_clip
        if not 0 < lo < hi <= 1:
            raise ConfigError(
                f"decision.weight_clip must satisfy 0 < lo < hi <= 1, got {self.weight_clip}"
            )
        if not 0.0 <= self.weight_min_agreement <= 1.0:
            raise ConfigError(
                f"decision.weight_min_agreement must be in [0, 1], got {self.weight_min_agreement}"
            )
        if self.weight_min_flagged < 1:
            raise ConfigError(
                f"decision.weight_min_flagged must be >= 1, got {self.weight_min_flagged}"
            )

    def _validate_size_and_growth(self) -> None:
        if not self.size_z > 0:
            raise ConfigError(f"decision.size_z must be > 0, got {self.size_z}")
        if not self.size_gain > 1:
            raise ConfigError(f"decision.size_gain must be > 1, got {self.size_gain}")
        for name, count in self.expected_class_counts:
            if not (math.isfinite(count) and count > 0):
                raise ConfigError(
                    f"decision.expected_class_counts: class {name!r} has {count}; "
                    "counts must be finite and > 0"
                )
        auc = self.growth_pixel_auc
        if auc is not None and not 0.5 < auc <= 1:
            raise ConfigError(f"decision.growth_pixel_auc must be in (0.5, 1] or None, got {auc}")
        if not 0 < self.growth_pixel_reference <= 1:
            raise ConfigError(
                "decision.growth_pixel_reference must be in (0, 1], got "
                f"{self.growth_pixel_reference}"
            )
        if not 0 < self.growth_share <= 1:
            raise ConfigError(f"decision.growth_share must be in (0, 1], got {self.growth_share}")
        if not self.growth_spreads >= 0:
            raise ConfigError(f"decision.growth_spreads must be >= 0, got {self.growth_spreads}")

    def _validate_refine(self) -> None:
        if self.refine_components < 1:
            raise ConfigError(
                f"decision.refine_components must be >= 1, got {self.refine_components}"
            )
        if not 0 <= self.refine_keep <= 0.5:
            raise ConfigError(f"decision.refine_keep must be in [0, 0.5], got {self.refine_keep}")
        if not self.refine_keep <= self.refine_add <= 1:
            raise ConfigError(
                f"decision.refine_add must be in [refine_keep, 1] = [{self.refine_keep}, 1], "
                f"got {self.refine_add}"
            )
        if not 0.0 <= self.refine_min_kept <= 1.0:
            raise ConfigError(
                f"decision.refine_min_kept must be in [0, 1], got {self.refine_min_kept}"
            )
        if self.refine_folds < 2 or self.refine_min_rows < self.refine_folds:
            raise ConfigError(
                "decision.refine_folds must be >= 2 and refine_min_rows >= refine_folds, got "
                f"{self.refine_folds} and {self.refine_min_rows}"
            )


def expected_counts(raw: Any) -> tuple[tuple[str, float], ...]:
    """``decision.expected_class_counts`` from a mapping (or pairs) of class to count."""
    items = raw.items() if isinstance(raw, dict) else raw or ()
    out: dict[str, float] = {}
    for pair in items:
        try:
            name, count = pair
            out[str(name)] = float(count)
        except (TypeError, ValueError):
            raise ConfigError(
                f"decision.expected_class_counts must map class names to counts, got {pair!r}"
            ) from None
    return tuple(sorted(out.items()))


@dataclass(frozen=True)
class SanitizeConfig:
    """Everything a run depends on, besides the source.

    detectors : tuple of str, default=DEFAULT_DETECTORS
        Detector names to run, in order; each writes a ``score_<name>`` column.
    detector_params : tuple of (str, tuple of (str, value)) pairs, default=()
        Keyword arguments per detector, as tuples (hashable); :meth:`params_for` gives a dict.
    seed : int, default=0
        Seeds model initialisation, data order and every randomised detector, >= 0.
    """

    data: DataConfig = field(default_factory=DataConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    detectors: tuple[str, ...] = DEFAULT_DETECTORS
    detector_params: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        self.data.validate()
        self.bootstrap.validate()
        self.decision.validate()
        if not self.detectors:
            raise ConfigError(
                "at least one detector is needed; known: " + ", ".join(KNOWN_DETECTORS)
            )
        for name in self.detectors:
            if name not in KNOWN_DETECTORS:
                raise ConfigError(f"unknown detector {name!r}; known: {', '.join(KNOWN_DETECTORS)}")
        if len(set(self.detectors)) != len(self.detectors):
            raise ConfigError(f"detectors listed twice: {list(self.detectors)}")
        for name, _ in self.detector_params:
            if name not in self.detectors:
                raise ConfigError(
                    f"parameters given for detector {name!r}, which is not in detectors"
                )
        if "cbd" in self.detectors and self.bootstrap.clean_epochs == 0:
            raise ConfigError("detector 'cbd' needs bootstrap.clean_epochs >= 1")

    def params_for(self, name: str) -> dict[str, Any]:
        """Keyword arguments for detector ``name`` (empty when none were given)."""
        for key, params in self.detector_params:
            if key == name:
                return dict(params)
        return {}

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["detectors"] = list(self.detectors)
        out["detector_params"] = {k: dict(v) for k, v in self.detector_params}
        out["decision"]["weight_clip"] = list(self.decision.weight_clip)
        out["decision"]["expected_class_counts"] = dict(self.decision.expected_class_counts)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SanitizeConfig:
        """Build a config from nested plain data (a parsed TOML or JSON file)."""
        raw = dict(raw)
        sections = {"data": DataConfig, "bootstrap": BootstrapConfig, "decision": DecisionConfig}
        kwargs: dict[str, Any] = {}
        for key, section_cls in sections.items():
            values = dict(raw.pop(key, {}) or {})
            known = {f.name for f in dataclasses.fields(section_cls)}
            unknown = set(values) - known
            if unknown:
                known_list = ", ".join(sorted(known))
                message = f"unknown option(s) {sorted(unknown)} in [{key}]; known: {known_list}"
                raise ConfigError(message)
            if "expected_class_counts" in values:
                values["expected_class_counts"] = expected_counts(values["expected_class_counts"])
            kwargs[key] = section_cls(**_typed(key, section_cls, values))
        if "detectors" in raw:
            kwargs["detectors"] = tuple(raw.pop("detectors"))
        if "detector_params" in raw:
            params = raw.pop("detector_params") or {}
            kwargs["detector_params"] = tuple(
                (name, tuple(sorted(dict(p).items()))) for name, p in params.items()
            )
        if "seed" in raw:
            kwargs["seed"] = _typed("config", cls, {"seed": raw.pop("seed")})["seed"]
        if raw:
            raise ConfigError(f"unknown config key(s) {sorted(raw)}")
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: str | Path) -> SanitizeConfig:
        return cls.from_dict(read_toml_options(path))

    def replace(self, **sections: Any) -> SanitizeConfig:
        """A copy with top-level fields replaced (``cfg.replace(seed=1)``)."""
        return dataclasses.replace(self, **sections)

    def fingerprint(self, *, sections: tuple[str, ...] | None = None) -> str:
        """Stable hex digest of the config, or of the named top-level fields only."""
        payload = self.to_dict()
        if sections is not None:
            payload = {k: payload[k] for k in sections}
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _typed(section: str, section_cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` checked and converted to the field types of ``section_cls`` (lax, as pydantic)."""
    hints = typing.get_type_hints(section_cls)
    typed = {}
    for name, value in values.items():
        try:
            typed[name] = pydantic.TypeAdapter(hints[name]).validate_python(value)
        except pydantic.ValidationError as exc:
            wanted = getattr(hints[name], "__name__", str(hints[name]).replace("typing.", ""))
            raise ConfigError(
                f"{section}.{name} must be {wanted}, got {value!r} "
                f"({exc.errors()[0]['msg'].lower()})"
            ) from None
    return typed


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
