"""The shape every detector shares: context in, one result per row out, a registry by name.

A detector looks at the penultimate-layer features of the usable rows (and, where it says
so in ``requires``, at per-sample losses of the bootstrap model) and returns a per-row
``score`` in [0, 1], the rows it ``flagged``, and an ``info`` dict with the thresholds it
actually used. The contract that ties them together: ``score >= 0.5`` exactly where
``flagged``, so any later stage can rank by score and still know what was flagged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from sanitize.detect.class_stats import ClassStatistics
from sanitize.errors import InputError
from sanitize.registry import Registry, keyword_params

_CONTEXT_ARRAYS = ("loss_history", "loss_bootstrap", "loss_clean")

_FINITE_CHECK_ROWS = 65_536

# One robust standard deviation in units of the median absolute deviation (Gaussian data).
MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class AdversarialProbe:
    """Adversarial examples of the bootstrap model on a sample of the scored rows.

    Parameters
    ----------
    rows : ndarray of shape (n_probe,)
        int indices, into the scored rows, of the rows the probe perturbed.
    features : ndarray of shape (n_probe, n_features)
        float32 penultimate features of the adversarial example of each of those rows.
    predicted : ndarray of shape (n_probe,)
        int class the bootstrap model gives each adversarial example.
    info : dict, default={}
        JSON-serialisable settings of the probe (budget, steps, seconds).
    """

    rows: np.ndarray
    features: np.ndarray
    predicted: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DetectorContext:
    """What a detector may use besides the features and the labels.

    The optional inputs in full:

    - ``loss_history``: float32 per-sample cross-entropy of the bootstrap model f_B during
      each training epoch; NaN where a row was not trained on in that epoch.
    - ``pixels``: float32 block means in [0, 1] of each row's image
      (:func:`sanitize.detect.pixel_spectral.block_means`), for detectors that look at the
      input rather than the features.
    - ``images``: uint8 decoded images of the rows (a memory map may be given), for
      detectors that read exact pixel values.
    - ``class_stats``: per-class means and top scatter eigenpairs of the same rows, computed
      once for every detector that reads them; a detector computes its own when this is None
      or describes other rows (:func:`sanitize.detect.class_stats.class_statistics`).
    - ``channel_norms``: float32 l_1, l_2 and l_inf norms of each channel map of the
      bootstrap model's last conv block (:func:`sanitize.model.net.channel_norms`), recorded
      by the embedding pass.
    - ``adversarial_probe``: PGD examples of the bootstrap model on a sample of the rows
      (:func:`sanitize.model.probe.adversarial_probe`).

    Parameters
    ----------
    n_classes : int
        Number of classes; labels are class indices in ``[0, n_classes)``.
    seed : int, default=0
        Seeds every randomised step of a detector (k-means, subsamples, mixtures).
    loss_history : ndarray of shape (n_rows, n_epochs) or None, default=None
        float32 per-row cross-entropy of f_B in each training epoch; NaN where not trained on.
    loss_bootstrap : ndarray of shape (n_rows,) or None, default=None
        float32 final cross-entropy of f_B on each row.
    loss_clean : ndarray of shape (n_rows,) or None, default=None
        float32 final cross-entropy of the deconfounded model f_C on each row.
    pixels : ndarray of shape (n_rows, k) or None, default=None
        float32 block means in [0, 1] of each row's image, for detectors that look at the input.
    images : ndarray of shape (n_rows, channels, height, width) or None, default=None
        uint8 decoded images of the rows (a memory map may be given), for exact pixel values.
    class_stats : ClassStatistics or None, default=None
        Per-class means and top scatter eigenpairs of the same rows; None: each detector's own.
    channel_norms : ndarray of shape (n_rows, 3, n_channels) or None, default=None
        float32 l_1, l_2 and l_inf norms of each last-conv-block channel map of f_B.
    adversarial_probe : AdversarialProbe or None, default=None
        PGD examples of the bootstrap model on a sample of the rows.
    """

    n_classes: int
    seed: int = 0
    loss_history: np.ndarray | None = None
    loss_bootstrap: np.ndarray | None = None
    loss_clean: np.ndarray | None = None
    pixels: np.ndarray | None = None
    images: np.ndarray | None = None
    class_stats: ClassStatistics | None = None
    channel_norms: np.ndarray | None = None
    adversarial_probe: AdversarialProbe | None = None


def _row_array(name: str, value: Any, n: int, dtype: Any) -> np.ndarray | None:
    """An optional per-row array of a result as ``dtype``, or ValueError if not ``n`` rows."""
    if value is None:
        return None
    value = np.asarray(value, dtype=dtype)
    if value.shape != (n,):
        raise ValueError(f"{name} has shape {value.shape}, score has ({n},)")
    return value


@dataclass(frozen=True)
class DetectorTraits:
    """How the decision treats a detector's flags (the class attributes of the same names
    on :class:`Detector` document each)."""

    oriented: bool = False
    votes: str = "rows"
    feature_space: bool = True
    settles_classes: bool = False


@dataclass
class DetectorResult:
    """One detector's verdict on every row it was given.

    The class-level outputs in full:

    - ``candidate``: bool; rows in the group each class would lose if it were judged
      poisoned (the minor mixture component, the smaller cluster), whether or not this
      detector judged it so on its own. Detectors that compare classes set it, with a numeric
      ``info["per_class"][c]["evidence"]`` per class; the decision's orientation and size
      rules read both (:mod:`sanitize.decision.rules`).
    - ``oriented``: bool, within ``flagged``; flags whose side the detector's own signal
      settles in a class where a group test alone would not (a class whose flags are the rest
      of a group, turned over). The decision treats them as it treats the flags of a detector
      with ``Detector.oriented``.
    - ``traits``: how the decision treats these flags; :meth:`Detector.score` sets its
      detector's. None (a result built by hand): the registered detector's of the same name,
      or the defaults.

    Parameters
    ----------
    score : ndarray of shape (n_rows,)
        float32 in [0, 1], higher when more likely poisoned; ``>= 0.5`` exactly where ``flagged``.
    flagged : ndarray of shape (n_rows,)
        bool; the rows the detector would remove on its own.
    info : dict
        JSON-serialisable: thresholds actually used, per-class figures keyed by class index string.
    weight : ndarray of shape (n_rows,) or None, default=None
        float32 raw training weight in (0, 1]; only detectors that produce one set it (CBD).
    candidate : ndarray of shape (n_rows,) or None, default=None
        bool; the rows each class would lose if judged poisoned (its minor group); see above.
    oriented : ndarray of shape (n_rows,) or None, default=None
        bool, within ``flagged``; flags whose side the detector's own signal settles; see above.
    traits : DetectorTraits or None, default=None
        How the decision treats these flags; None: the registered detector's, or the defaults.

    Raises
    ------
    ValueError
        When shapes disagree, a score is outside [0, 1], a weight outside (0, 1], or the
        contract ``score >= 0.5 <=> flagged`` is broken (a bug in the detector).
    """

    score: np.ndarray
    flagged: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    weight: np.ndarray | None = None
    candidate: np.ndarray | None = None
    oriented: np.ndarray | None = None
    traits: DetectorTraits | None = None

    def __post_init__(self) -> None:
        self.score = np.asarray(self.score, dtype=np.float32)
        self.flagged = np.asarray(self.flagged, dtype=bool)
        if self.score.ndim != 1:
            raise ValueError(f"score must be 1-D, got shape {self.score.shape}")
        n = self.score.shape[0]
        if self.flagged.shape != (n,):
            raise ValueError(f"flagged has shape {self.flagged.shape}, score has ({n},)")
        if not np.all((self.score >= 0.0) & (self.score <= 1.0)):
            raise ValueError("score must lie in [0, 1] (and not be NaN)")
        if not np.array_equal(self.score >= 0.5, self.flagged):
            raise ValueError("contract broken: score >= 0.5 must hold exactly where flagged")
        if not isinstance(self.info, dict):
            raise ValueError(f"info must be a dict, got {type(self.info).__name__}")
        self.weight = _row_array("weight", self.weight, n, np.float32)
        if self.weight is not None and not np.all((self.weight > 0.0) & (self.weight <= 1.0)):
            raise ValueError("weight must lie in (0, 1] (and not be NaN)")
        self.candidate = _row_array("candidate", self.candidate, n, bool)
        self.oriented = _row_array("oriented", self.oriented, n, bool)
        if self.oriented is not None and np.any(self.oriented & ~self.flagged):
            raise ValueError("oriented rows must be flagged")


class Detector(ABC):
    """Base of every detector: keyword parameters in ``__init__``, work in ``score``.

    Subclasses set ``name`` (the registry key and the ``score_<name>`` column suffix) and,
    when they need losses, ``requires`` (names of :class:`DetectorContext` fields). Their
    ``__init__`` stores keyword parameters and nothing else; ``_check_params`` validates
    them; ``_score`` does the work on inputs that :meth:`score` has already validated.
    """

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    # Whether the detector reads ``context.class_stats``: the pipeline then computes them
    # once, in a stage of their own, for every such detector.
    shares_class_stats: ClassVar[bool] = False
    # Whether the detector's own signal says which side of a class is poisoned (an early
    # loss: the side learned first), rather than calling the smaller side the poison. The
    # decision orients a class by such a detector's flags when they are most of the class
    # (``sanitize.decision.orient``).
    oriented: ClassVar[bool] = False
    # How the detector's flags vote in the decision: "rows", every flag; "groups", only
    # flags in classes where it flags a group (``decision.min_class_rows``), for a
    # detector whose isolated flags are noise of its statistic rather than poison (CBD).
    votes: ClassVar[str] = "rows"
    # Whether the detector reads the features (or the losses of a model of them). A group
    # only an input-space detector found is not re-drawn by the decision's refinement,
    # which fits its discriminant on feature coordinates.
    feature_space: ClassVar[bool] = True
    # Whether the detector's flags are exact evidence of a trigger (a stamp read off the
    # pixels): in a class where it flags a group, the decision keeps exactly its flags.
    settles_classes: ClassVar[bool] = False

    @classmethod
    def traits(cls) -> DetectorTraits:
        """The traits its results carry (:class:`DetectorTraits`)."""
        return DetectorTraits(cls.oriented, cls.votes, cls.feature_space, cls.settles_classes)

    def get_params(self) -> dict[str, Any]:
        """The keyword parameters of ``__init__`` and their current values."""
        return {k: getattr(self, k) for k in keyword_params(type(self))}

    def _check_params(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Raise :class:`~sanitize.errors.ConfigError` for a parameter out of range."""

    def score(
        self, features: np.ndarray, labels: np.ndarray, context: DetectorContext
    ) -> DetectorResult:
        """Score every row; higher means more likely poisoned.

        Parameters
        ----------
        features : ndarray of shape (n_rows, n_features)
            Finite float penultimate-layer features of the usable rows.
        labels : ndarray of shape (n_rows,)
            Integer class indices in ``[0, context.n_classes)``.
        context : DetectorContext
            Number of classes, seed, and the loss arrays named in ``requires``.

        Returns
        -------
        DetectorResult
            ``score`` and ``flagged`` of shape (n_rows,), with ``score >= 0.5`` exactly
            where flagged, and ``info`` holding the thresholds used.

        Raises
        ------
        InputError
            Non-finite features (naming the first bad row), labels out of range, shapes that
            disagree, or a context field this detector requires is missing.
        ConfigError
            A parameter of the detector is out of range.
        """
        self._check_params()
        features, labels = self._validate(features, labels, context)
        result = self._score(features, labels, context)
        result.traits = self.traits()
        return result

    @abstractmethod
    def _score(
        self, features: np.ndarray, labels: np.ndarray, context: DetectorContext
    ) -> DetectorResult:
        """Do the work on validated inputs (see :meth:`score`)."""

    def _validate(
        self, features: np.ndarray, labels: np.ndarray, context: DetectorContext
    ) -> tuple[np.ndarray, np.ndarray]:
        who = f"detector {self.name!r}"
        if not isinstance(context, DetectorContext):
            raise InputError(f"{who}: context must be a DetectorContext, got {type(context)}")
        if context.n_classes < 1:
            raise InputError(f"{who}: context.n_classes must be >= 1, got {context.n_classes}")
        features = _checked_features(who, features)
        n = features.shape[0]
        labels = _checked_labels(who, labels, n, context.n_classes)
        self._validate_context(who, context, features)
        return features, labels.astype(np.int64, copy=False)

    def _validate_context(self, who: str, context: DetectorContext, features: np.ndarray) -> None:
        n = features.shape[0]
        missing = [k for k in self.requires if getattr(context, k) is None]
        if missing:
            raise InputError(
                f"{who} requires context field(s) {', '.join(missing)}; "
                "set them on the DetectorContext"
            )
        if context.pixels is not None:
            pixels = np.asarray(context.pixels)
            if pixels.ndim != 2 or pixels.shape[0] != n:
                raise InputError(
                    f"{who}: context.pixels has shape {pixels.shape}, features have {n} rows"
                )
            if "pixels" in self.requires and not np.isfinite(pixels).all():
                raise InputError(f"{who}: context.pixels holds NaN or infinite values")
        _check_model_arrays(who, context, n)
        if context.adversarial_probe is not None:
            self._validate_probe(context.adversarial_probe, features, context.n_classes)
        for key in _CONTEXT_ARRAYS:
            if getattr(context, key) is not None:
                _check_loss_array(who, key, np.asarray(getattr(context, key)), n, self.requires)

    def _validate_probe(
        self, probe: AdversarialProbe, features: np.ndarray, n_classes: int
    ) -> None:
        who = f"detector {self.name!r}: context.adversarial_probe"
        rows = np.asarray(probe.rows)
        m = rows.shape[0] if rows.ndim == 1 else -1
        if m < 0 or not np.issubdtype(rows.dtype, np.integer):
            raise InputError(
                f"{who}.rows must be 1-D integer indices, got {rows.dtype} {rows.shape}"
            )
        if m and not ((rows >= 0) & (rows < features.shape[0])).all():
            raise InputError(f"{who}.rows index outside the {features.shape[0]} scored rows")
        if np.shape(probe.features) != (m, features.shape[1]):
            raise InputError(
                f"{who}.features has shape {np.shape(probe.features)}, expected "
                f"({m}, {features.shape[1]})"
            )
        if not np.isfinite(probe.features).all():
            raise InputError(f"{who}.features holds NaN or infinite values")
        predicted = np.asarray(probe.predicted)
        if predicted.shape != (m,) or (
            m and not ((predicted >= 0) & (predicted < n_classes)).all()
        ):
            raise InputError(f"{who}.predicted must be {m} class indices in [0, {n_classes})")


def _checked_features(who: str, features: np.ndarray) -> np.ndarray:
    """``features`` as a non-empty 2-D float array of finite values, or InputError."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise InputError(f"{who}: features must be a non-empty 2-D array, got {features.shape}")
    if not np.issubdtype(features.dtype, np.floating):
        features = features.astype(np.float32)
    # In slices: a memory-mapped feature file is checked without a full-size mask.
    for start in range(0, features.shape[0], _FINITE_CHECK_ROWS):
        finite_rows = np.isfinite(features[start : start + _FINITE_CHECK_ROWS]).all(axis=1)
        if not finite_rows.all():
            bad = start + int(np.flatnonzero(~finite_rows)[0])
            raise InputError(f"{who}: features of row {bad} are not finite (NaN or inf)")
    return features


def _checked_labels(who: str, labels: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    """``labels`` as ``n`` integer class indices in ``[0, n_classes)``, or InputError."""
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise InputError(f"{who}: labels have shape {labels.shape}, features have {n} rows")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{who}: labels must be integer class indices, got {labels.dtype}")
    in_range = (labels >= 0) & (labels < n_classes)
    if not in_range.all():
        bad = int(np.flatnonzero(~in_range)[0])
        raise InputError(
            f"{who}: label {int(labels[bad])} of row {bad} is outside "
            f"[0, {n_classes}) (n_classes={n_classes})"
        )
    return labels


def _check_model_arrays(who: str, context: DetectorContext, n: int) -> None:
    """InputError unless the context's images and channel norms, when set, cover ``n`` rows
    in their documented shapes."""
    if context.images is not None:
        shape, dtype = np.shape(context.images), np.asarray(context.images[:0]).dtype
        if len(shape) != 4 or shape[0] != n or dtype != np.uint8:
            raise InputError(
                f"{who}: context.images must be uint8 of shape (rows, channels, height, "
                f"width) with {n} rows, got {dtype} {shape}"
            )
    if context.channel_norms is not None:
        shape = np.shape(context.channel_norms)
        if len(shape) != 3 or shape[0] != n or shape[1] != 3:
            raise InputError(
                f"{who}: context.channel_norms must have shape (rows, 3, channels) with "
                f"{n} rows, got {shape}"
            )


def _check_loss_array(
    who: str, key: str, value: np.ndarray, n: int, requires: tuple[str, ...]
) -> None:
    """InputError unless a context loss array covers ``n`` rows and, when required, holds
    finite losses >= 0."""
    ndim = 2 if key == "loss_history" else 1
    if value.ndim != ndim or value.shape[0] != n:
        raise InputError(f"{who}: context.{key} has shape {value.shape}, features have {n} rows")
    if key in requires and key != "loss_history":
        ok = np.isfinite(value) & (value >= 0)
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            raise InputError(
                f"{who}: context.{key} of row {bad} is not a finite loss >= 0 (got {value[bad]})"
            )


_DETECTORS: Registry[Detector] = Registry("detector")


def register(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make a detector available by its ``name``."""
    return _DETECTORS.register(cls)


def available_detectors() -> tuple[str, ...]:
    """Names of the registered detectors, sorted."""
    return _DETECTORS.names()


def traits_of(name: str, result: DetectorResult) -> DetectorTraits:
    """``result.traits``, or for a result built by hand those of the detector registered
    as ``name`` (the defaults when there is none)."""
    if result.traits is not None:
        return result.traits
    if name in available_detectors():
        return type(get_detector(name)).traits()
    return DetectorTraits()


def get_detector(name: str, **params: Any) -> Detector:
    """Build the detector registered as ``name`` with keyword ``params``.

    Raises
    ------
    ConfigError
        Unknown name (the message lists the known ones), unknown parameter, or a parameter
        out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from sanitize.detect import DetectorContext, get_detector
    >>> x = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    >>> y = np.repeat(np.arange(4), 50)
    >>> result = get_detector("spectral").score(x, y, DetectorContext(n_classes=4))
    >>> int(result.flagged.sum()), result.score.shape
    (0, (200,))
    """
    return _DETECTORS.build(name, **params)


def robust_z(values: np.ndarray, mad_floor: float) -> tuple[np.ndarray, float, float]:
    """Robust z-scores ``(x - median) / (1.4826 * max(MAD, mad_floor))``.

    Returns the z-scores (float64, same shape), the median and the scale actually used.
    The floor keeps a near-constant sample from turning tiny differences into huge z.
    """
    values = np.asarray(values, dtype=np.float64)
    med = float(np.median(values))
    mad = float(np.median(np.abs(values - med)))
    scale = MAD_TO_SD * max(mad, mad_floor)
    return (values - med) / scale, med, scale


def ratio_score(strength: np.ndarray) -> np.ndarray:
    """Map a strength ``s >= 0`` (1 at the flag threshold) to ``s / (1 + s)`` in [0, 1).

    Monotone, and ``>= 0.5`` exactly when ``s >= 1``; negative strengths map to 0.
    """
    s = np.clip(np.asarray(strength, dtype=np.float64), 0.0, None)
    return s / (1.0 + s)


def contract_score(raw: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """float32 scores in [0, 1] with ``score >= 0.5`` exactly where ``flagged``.

    ``raw`` is already meant to satisfy the contract; this only removes float32 rounding at
    the boundary (a value 0.4999999 on a flagged row, or 0.5 on an unflagged one).
    """
    below = np.nextafter(np.float32(0.5), np.float32(0.0))
    out = np.clip(np.asarray(raw, dtype=np.float64), 0.0, 1.0).astype(np.float32)
    out = np.where(flagged, np.maximum(out, np.float32(0.5)), np.minimum(out, below))
    return out.astype(np.float32)
