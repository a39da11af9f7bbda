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

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from sanitize.attacks.checks import check_images, check_labels, check_poison_args
from sanitize.errors import ConfigError, InputError
from sanitize.registry import Registry, keyword_params


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

    ``info`` holds ``attack``, ``params``, ``clean_label``, ``target``, ``targets`` (the
    labels poisoned rows are trained towards, None for every class), ``rate``, ``seed``,
    ``n_rows``, ``requested`` (``round(rate * n_rows)``), ``candidates`` (rows the
    poisons were drawn from), ``n_poisoned``, and ``note`` when fewer rows than
    requested were poisoned (a clean-label attack capped at the target class size).

    Parameters
    ----------
    images : ndarray of shape (n_samples, channels, height, width), dtype uint8
        A copy of the input with the trigger on poisoned rows.
    labels : ndarray of shape (n_samples,)
        A copy of the input labels, ``target`` on poisoned rows of a dirty-label attack.
    poisoned : ndarray of shape (n_samples,), dtype bool
        The ground truth.
    info : dict
        What was done: the attack, its parameters, target, rate, seed and counts (see above).
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

        ``rng`` is the randomness of triggers that vary from row to row (BadNets at
        ``position="random"``); the other built-in triggers are fixed by their
        parameters and ignore it.

        Parameters
        ----------
        images : ndarray of shape (n_samples, channels, height, width), dtype uint8
            ``channels`` is 1 or 3; height and width at least 8.
        rng : numpy Generator, int or None, default=None
            Randomness of per-row triggers (BadNets at ``position="random"``); others ignore it.

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


def _plan_slice(mask: np.ndarray, start: int, count: int) -> np.ndarray:
    if start < 0 or start + count > len(mask):
        raise InputError(
            f"rows {start}..{start + count - 1} lie outside the plan's {len(mask)} rows"
        )
    return mask[start : start + count]


# --- trigger images ---------------------------------------------------------------------
