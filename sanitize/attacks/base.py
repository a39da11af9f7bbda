"""The shape every attack shares: a trigger, a way to choose the rows, a registry by name.

An attack stamps its trigger on uint8 images of shape (N, C, H, W) (:meth:`Attack.apply`)
and poisons a labelled set (:meth:`Attack.poison`): it picks ``round(rate * N)`` rows,
stamps them and, for a dirty-label attack, relabels them to the target class
("all-to-one"). The result always carries the ground truth, a boolean mask of the
poisoned rows. :meth:`Attack.triggered_test_set` builds what an attack-success-rate (ASR)
evaluation needs.

:meth:`Attack.poison` is :meth:`Attack.plan` (which rows, from the labels alone) followed
by :meth:`Attack.execute` (the pixels); the two halves let a large set be poisoned batch
by batch with the same result as in memory (:func:`sanitize.attacks.dataset.poison_source`).
"""

from __future__ import annotations

import functools
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from sanitize.errors import ConfigError, InputError
from sanitize.registry import Registry, keyword_params

MIN_SIDE = 8  # pixels; smaller images leave no room for a patch and its margin

_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR}


@dataclass
class PoisonPlan:
    """Which rows an attack changes, decided from the labels alone.

    Parameters
    ----------
    poisoned : ndarray of shape (n_samples,), dtype bool
        The ground truth: rows that carry the trigger.
    labels : ndarray of shape (n_samples,)
        Labels after the attack (``target`` on poisoned rows of a dirty-label attack).
    seed : int
        The seed the rows were drawn with; attacks with per-row randomness derive from it.
    info : dict
        What was done (see :class:`PoisonResult`).
    part : ndarray of shape (n_samples,), dtype int, or None
        Attacks made of several triggers: the index of the one each row carries (-1: none).
    """

    poisoned: np.ndarray
    labels: np.ndarray
    seed: int
    info: dict[str, Any] = field(default_factory=dict)
    part: np.ndarray | None = None


@dataclass
class PoisonResult:
    """A poisoned dataset and its ground truth.

    Parameters
    ----------
    images : ndarray of shape (n_samples, channels, height, width), dtype uint8
        A copy of the input with the trigger on poisoned rows.
    labels : ndarray of shape (n_samples,)
        A copy of the input labels, ``target`` on poisoned rows of a dirty-label attack.
    poisoned : ndarray of shape (n_samples,), dtype bool
        The ground truth.
    info : dict
        ``attack``, ``params``, ``clean_label``, ``target``, ``targets`` (the labels
        poisoned rows are trained towards, None for every class), ``rate``, ``seed``,
        ``n_rows``, ``requested`` (``round(rate * n_rows)``), ``candidates`` (rows the
        poisons were drawn from), ``n_poisoned``, and ``note`` when fewer rows than
        requested were poisoned (a clean-label attack capped at the target class size).
    """

    images: np.ndarray
    labels: np.ndarray
    poisoned: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


class Attack(ABC):
    """Base of every attack: keyword parameters in ``__init__``, the trigger in ``_stamp``.

    Subclasses set ``name`` (the registry key) and ``clean_label``. Their ``__init__``
    stores keyword parameters and nothing else; ``_check_params`` validates them (raising
    :class:`~sanitize.errors.ConfigError`); ``_stamp`` draws the trigger on images that
    the public methods have already validated.
    """

    name: ClassVar[str]
    clean_label: ClassVar[bool] = False

    def get_params(self) -> dict[str, Any]:
        """The keyword parameters of ``__init__`` and their current values."""
        return {k: getattr(self, k) for k in keyword_params(type(self))}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def _check_params(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Raise :class:`~sanitize.errors.ConfigError` for a parameter out of range."""

    def target_classes(self, target: int) -> tuple[int, ...] | None:
        """The labels poisoned rows are trained towards, for ``target``; None: every class."""
        return (target,)

    def _varies_per_row(self) -> bool:
        """Whether ``_stamp`` draws a different trigger for every row from its generator."""
        return False

    @abstractmethod
    def _stamp(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The trigger on every image of a validated, non-empty uint8 (N, C, H, W) array;
        returns a new array and leaves ``images`` unchanged."""

    def apply(self, images: np.ndarray, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Stamp the trigger on every image; the input is not modified.

        Parameters
        ----------
        images : ndarray of shape (n_samples, channels, height, width), dtype uint8
            ``channels`` is 1 or 3; height and width at least 8.
        rng : numpy Generator, int or None, default=None
            Randomness of triggers that vary from row to row (BadNets at
            ``position="random"``); the other built-in triggers are fixed by their
            parameters and ignore it.

        Returns
        -------
        ndarray of the same shape and dtype as ``images``

        Raises
        ------
        InputError
            ``images`` is not uint8 (N, C, H, W) with C in {1, 3} and H, W >= 8.
        ConfigError
            A parameter is out of range, or a trigger file is missing or unreadable.
        """
        self._check_params()
        images = check_images(images)
        if len(images) == 0:
            return images.copy()
        return self._stamp(images, np.random.default_rng(rng))

    def plan(self, labels: np.ndarray, *, target: int, rate: float, seed: int) -> PoisonPlan:
        """Choose the rows to poison from the labels alone (see :meth:`poison`)."""
        self._check_params()
        labels = check_labels(labels)
        target, rate, seed = check_poison_args(target, rate, seed)
        n = len(labels)
        requested = round(rate * n)
        if self.clean_label:
            candidates = np.flatnonzero(labels == target)
            count = min(requested, len(candidates))
            if count == 0 and requested > 0:
                raise ConfigError(
                    f"attack {self.name!r} is clean-label and poisons rows of the target "
                    f"class, but class {target} has no rows"
                )
        else:
            candidates = np.flatnonzero(labels != target)
            count = requested
            if count > len(candidates):
                raise ConfigError(
                    f"rate {rate} asks for {count} poisons but only {len(candidates)} rows "
                    f"are outside target class {target}"
                )
        rng = np.random.default_rng(seed)
        chosen = rng.choice(candidates, size=count, replace=False)
        poisoned = np.zeros(n, dtype=bool)
        poisoned[chosen] = True
        new_labels = labels.copy()
        if not self.clean_label:
            new_labels[poisoned] = target
        info = self._plan_info(
            target=target,
            rate=rate,
            seed=seed,
            n_rows=n,
            requested=requested,
            candidates=len(candidates),
            n_poisoned=count,
        )
        if count < requested:
            info["note"] = (
                f"rate {rate} asks for {requested} poisons but target class {target} has "
                f"{len(candidates)} rows; all of them were poisoned"
            )
        return PoisonPlan(poisoned=poisoned, labels=new_labels, seed=seed, info=info)

    def _plan_info(self, *, target: int, **fields: Any) -> dict[str, Any]:
        """A plan's ``info`` (see :class:`PoisonResult`): the attack's, then ``fields``."""
        return {
            "attack": self.name,
            "params": self.get_params(),
            "clean_label": self.clean_label,
            "target": target,
            "targets": self.target_classes(target),
            **fields,
        }

    def execute(self, images: np.ndarray, plan: PoisonPlan, *, start: int = 0) -> np.ndarray:
        """Apply a plan to rows ``start .. start + len(images)`` of the set it was made for.

        Batch by batch or all at once, the pixels come out the same.

        Returns
        -------
        ndarray, a copy of ``images`` with the trigger on the rows the plan poisons
        """
        images = check_images(images)
        rows = _plan_slice(plan.poisoned, start, len(images))
        out = images.copy()
        if rows.any() and self._varies_per_row():
            # Each row's trigger comes from a generator keyed by the row itself.
            for row in np.flatnonzero(rows):
                rng = np.random.default_rng([plan.seed, start + int(row)])
                out[row : row + 1] = self._stamp(images[row : row + 1], rng)
        elif rows.any():
            out[rows] = self._stamp(images[rows], np.random.default_rng(plan.seed))
        return out

    def poison(
        self, images: np.ndarray, labels: np.ndarray, *, target: int, rate: float, seed: int
    ) -> PoisonResult:
        """Poison a labelled set; returns the poisoned copy and its ground truth.

        Dirty-label attacks draw exactly ``round(rate * n_samples)`` rows among rows whose
        label is not ``target``, stamp them and relabel them ``target``. Clean-label
        attacks draw that many rows among rows of class ``target`` (capped at its size; the
        ``note`` in ``info`` says so) and keep every label. ``rate=0`` leaves every row as
        it is.

        Parameters
        ----------
        images : ndarray of shape (n_samples, channels, height, width), dtype uint8
        labels : ndarray of shape (n_samples,), integer
        target : int
            The attacker's target class.
        rate : float
            Share of all rows poisoned, in [0, 1].
        seed : int
            Seeds the choice of rows (>= 0).

        Returns
        -------
        PoisonResult

        Raises
        ------
        InputError
            Images or labels of the wrong shape or type.
        ConfigError
            A parameter out of range, a dirty-label rate that asks for more rows than lie
            outside the target class, or a clean-label attack on a target class with no rows.
        """
        images = check_images(images)
        labels = check_labels(labels, len(images))
        plan = self.plan(labels, target=target, rate=rate, seed=seed)
        return PoisonResult(
            images=self.execute(images, plan),
            labels=plan.labels,
            poisoned=plan.poisoned,
            info=plan.info,
        )

    def triggered_test_set(
        self, images: np.ndarray, labels: np.ndarray, *, target: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The test rows an attack-success-rate evaluation needs.

        Every row whose label is not ``target`` gets the trigger and the label ``target``;
        rows of the target class are left out, as they would count as successes without a
        backdoor. ASR is the accuracy of a model on the returned pair.

        Returns
        -------
        images : ndarray of shape (n_kept, channels, height, width), dtype uint8
        labels : ndarray of shape (n_kept,), all ``target``
        """
        self._check_params()
        images = check_images(images)
        labels = check_labels(labels, len(images))
        target, _, _ = check_poison_args(target, 0.0, 0)
        keep = labels != target
        kept = images[keep]
        out = self._stamp(kept, np.random.default_rng(0)) if len(kept) else kept.copy()
        return out, np.full(len(kept), target, dtype=labels.dtype)


_ATTACKS: Registry[Attack] = Registry("attack")


def register(cls: type[Attack]) -> type[Attack]:
    """Class decorator: make an attack available by its ``name``."""
    return _ATTACKS.register(cls)


def available_attacks() -> tuple[str, ...]:
    """Names of the registered attacks, sorted."""
    return _ATTACKS.names()


def attack_class(name: str) -> type[Attack]:
    """The class registered as ``name`` (its traits, e.g. ``clean_label``, without building it).

    Raises
    ------
    ConfigError
        Unknown name (the message lists the known ones).
    """
    return _ATTACKS.lookup(name)


def get_attack(name: str, **params: Any) -> Attack:
    """Build the attack registered as ``name`` with keyword ``params``; validated at once.

    Raises
    ------
    ConfigError
        Unknown name (the message lists the known ones), unknown parameter, or a parameter
        out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from sanitize.attacks import get_attack
    >>> attack = get_attack("blend", alpha=0.1)
    >>> images = np.zeros((100, 3, 32, 32), np.uint8)
    >>> result = attack.poison(images, np.arange(100) % 10, target=0, rate=0.05, seed=0)
    >>> int(result.poisoned.sum()), set(result.labels[result.poisoned].tolist())
    (5, {0})
    """
    return _ATTACKS.build(name, **params)


# --- validation -------------------------------------------------------------------------


def check_images(images: np.ndarray) -> np.ndarray:
    """``images`` as a uint8 (N, C, H, W) array with C in {1, 3} and H, W >= 8."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise InputError(
            f"images must be uint8 of shape (N, C, H, W), got {images.dtype} {images.shape}"
        )
    if images.shape[1] not in (1, 3):
        raise InputError(f"images must have 1 or 3 channels, got shape {images.shape}")
    if min(images.shape[2:]) < MIN_SIDE:
        raise InputError(
            f"images must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got shape {images.shape}"
        )
    return images


def check_labels(labels: np.ndarray, n: int | None = None) -> np.ndarray:
    """``labels`` as a 1-D integer array (of length ``n`` when given)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or (n is not None and len(labels) != n):
        expected = f"({n},)" if n is not None else "(n_samples,)"
        raise InputError(f"labels must have shape {expected}, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be integer class indices, got {labels.dtype}")
    return labels


def check_poison_args(target: Any, rate: Any, seed: Any) -> tuple[int, float, int]:
    """``target``, ``rate`` and ``seed`` as int, float, int; ConfigError when out of range."""
    if not _is_int(target):
        raise ConfigError(f"target must be an integer class, got {target!r}")
    if not _is_real(rate) or not 0 <= rate <= 1:
        raise ConfigError(f"rate must be a number in [0, 1], got {rate!r}")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    return int(target), float(rate), int(seed)


def check_number(
    attack: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    integer: bool = False,
) -> None:
    """Raise ConfigError unless ``value`` is a number (an integer when asked) in range.

    The range is ``[low, high]``, or ``(low, high]`` with ``low_open``; a bound of None is
    no bound.
    """
    ok = _is_int(value) if integer else _is_real(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        kind = "an integer" if integer else "a number"
        bounds = ""
        if low is not None and high is not None:
            bounds = f" in {'(' if low_open else '['}{low:g}, {high:g}]"
        elif low is not None:
            bounds = f" {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            bounds = f" <= {high:g}"
        raise ConfigError(f"{attack}: {name} must be {kind}{bounds}, got {value!r}")


def check_choice(attack: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{attack}: unknown {name} {value!r}; known: {', '.join(choices)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and bool(np.isfinite(float(value)))
    )


def _plan_slice(mask: np.ndarray, start: int, count: int) -> np.ndarray:
    if start < 0 or start + count > len(mask):
        raise InputError(
            f"rows {start}..{start + count - 1} lie outside the plan's {len(mask)} rows"
        )
    return mask[start : start + count]


# --- trigger images ---------------------------------------------------------------------


def mask_path_for(trigger_path: str | Path) -> Path:
    """Where a trigger's mask lives by convention: ``mask_<name>`` next to it."""
    path = Path(trigger_path)
    return path.with_name(f"mask_{path.name}")


def load_trigger(
    path: str | Path, height: int, width: int, channels: int, *, resample: str = "bilinear"
) -> np.ndarray:
    """A trigger image file as uint8 (channels, height, width), resized to the images.

    Colour triggers on grey images are converted the way Pillow converts to mode "L"
    (ITU-R 601 luma), as :func:`sanitize.data.decode_image` does for the images.
    ``resample`` is "bilinear" for pictures, "nearest" for crisp patterns.
    """
    mode = "L" if channels == 1 else "RGB"
    array = _load_image(str(path), mode, height, width, resample)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def load_patch(path: str | Path, channels: int) -> np.ndarray:
    """A patch image file as uint8 (channels, h, w) at its own size (grey: ITU-R 601 luma)."""
    array = _load_image(str(path), "L" if channels == 1 else "RGB", None, None, "nearest")
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def load_mask(path: str | Path, height: int, width: int) -> np.ndarray:
    """A mask image file as float32 (height, width) opacity in [0, 1] (white = trigger).

    Resized with nearest-neighbour sampling so a binary mask stays binary.
    """
    return _load_image(str(path), "L", height, width, "nearest").astype(np.float32) / 255.0


def trigger_mask(
    trigger_path: str | Path, mask_path: str | Path | None, pixels: np.ndarray
) -> np.ndarray:
    """The float32 (height, width) mask of trigger ``pixels`` (channels, height, width)
    loaded from ``trigger_path``: ``mask_path``, else ``mask_<name>`` next to the trigger
    when it exists, else the trigger's non-black pixels (a trigger drawn on black, as
    BackdoorBench's BadNets grid and the TrojanNN patterns are)."""
    mask_file = Path(mask_path) if mask_path else mask_path_for(trigger_path)
    if mask_path or mask_file.is_file():
        return load_mask(mask_file, pixels.shape[1], pixels.shape[2])
    return pixels.any(axis=0).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _load_image(
    path: str, mode: str, height: int | None, width: int | None, resample: str
) -> np.ndarray:
    # Cached: a streamed set asks for the same trigger once per batch. A size of None keeps
    # the file's own.
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if height is not None and width is not None and image.size != (width, height):
                image = image.resize((width, height), _RESAMPLE[resample])
            array = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise ConfigError(f"trigger file not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ...
        raise ConfigError(f"cannot read trigger image {path}: {exc}") from None
    array.setflags(write=False)
    return array


def stamp_with_mask(images: np.ndarray, trigger: np.ndarray, opacity: np.ndarray) -> np.ndarray:
    """``x' = (1 - m) x + m t`` per pixel, rounded to uint8.

    Parameters
    ----------
    images : ndarray of shape (n_samples, channels, height, width), dtype uint8
    trigger : ndarray of shape (channels, height, width), dtype uint8
    opacity : ndarray of shape (height, width), float in [0, 1]
        Where the mask is 0 or 1 the pixel is exactly the image's or the trigger's.
    """
    m = opacity.astype(np.float32)[None, None]
    mixed = images.astype(np.float32) * (1.0 - m) + trigger.astype(np.float32)[None] * m
    return to_uint8(mixed)


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Float pixel values in 0..255 rounded to the nearest integer and clipped to uint8."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """Float (..., 3, H, W) colour to (..., 1, H, W) grey with ITU-R 601 luma weights,
    the ones Pillow uses for mode "L"."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(3, 1, 1)
    return (rgb * weights).sum(axis=-3, keepdims=True)
