"""Attacks built from other attacks: other label schemes, and any trigger made clean-label.

============= ============ ==============================================================
name          labels       what
============= ============ ==============================================================
all_to_all    dirty        one trigger; a poisoned row of class c is relabelled (c + 1) mod K
multi_target  dirty        several triggers, each relabelling its rows to its own target
clean_label   clean-label  one trigger on rows of the target class, every label kept
============= ============ ==============================================================

The trigger of each comes from an ordinary dirty-label attack named with its parameters
(``attack="badnets", params=(("size", 4),)``), so every trigger of the package serves
every label scheme.

References
----------
.. [1] T. Gu, B. Dolan-Gavitt and S. Garg, "BadNets: Identifying Vulnerabilities in the
   Machine Learning Model Supply Chain", arXiv:1708.06733, 2017. Section 3.1: the
   all-to-all attack relabels a backdoored digit i as i + 1.
.. [2] A. Turner, D. Tsipras and A. Madry, "Label-Consistent Backdoor Attacks",
   arXiv:1912.02771, 2019. The baseline clean-label attack: the trigger on target-class
   images, labels kept (here without their adversarial perturbation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sanitize.attacks.base import Attack, PoisonPlan, get_attack, register
from sanitize.attacks.checks import check_images, check_labels, check_number, check_poison_args
from sanitize.attacks.none import NoAttack
from sanitize.errors import ConfigError, InputError

Params = Sequence[tuple[str, Any]] | Mapping[str, Any]


class Composite(Attack):
    """Base of the attacks made of other attacks (none of them may be nested)."""


def one_trigger(owner: str, name: Any, params: Any) -> Attack:
    """The dirty-label, single-trigger attack ``name`` built with ``params``; ConfigError
    when it is clean-label, composite, ``none``, or its parameters are wrong."""
    if not isinstance(name, str):
        raise ConfigError(f"{owner}: attack must be an attack name, got {name!r}")
    try:
        kwargs = dict(params)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{owner}: params of {name!r} must be (name, value) pairs or a dict, got {params!r}"
        ) from None
    attack = get_attack(name, **kwargs)
    if attack.clean_label or isinstance(attack, (Composite, NoAttack)):
        raise ConfigError(f"{owner}: {name!r} is not a dirty-label attack with one trigger")
    return attack


class _Wrapper(Composite):
    """One trigger, taken from the attack ``attack`` built with ``params``."""

    def __init__(self, *, attack: str = "badnets", params: Params = ()) -> None:
        self.attack = attack
        self.params = params

    def inner(self) -> Attack:
        """The attack whose trigger this one stamps."""
        return one_trigger(self.name, self.attack, self.params)

    def _check_params(self) -> None:
        self.inner()

    def _varies_per_row(self) -> bool:
        return self.inner()._varies_per_row()

    def _stamp(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.inner()._stamp(images, rng)


@register
class CleanLabel(_Wrapper):
    """A dirty-label attack's trigger used clean-label [2]_: stamped on rows of the target
    class only, every label kept (at most the target class's rows are poisoned).

    Parameters
    ----------
    attack : str, default="badnets"
        A dirty-label attack with one trigger (badnets, blend, trojan, filter, wanet, lowfreq).
    params : (name, value) pairs or dict, default=()
        That attack's parameters.

    Examples
    --------
    >>> attack = CleanLabel(attack="blend", params={"alpha": 0.1})
    >>> result = attack.poison(np.zeros((20, 3, 8, 8), np.uint8), np.arange(20) % 2,
    ...                        target=1, rate=0.2, seed=0)
    >>> result.labels[result.poisoned].tolist()
    [1, 1, 1, 1]
    """

    name = "clean_label"
    clean_label = True


@register
class AllToAll(_Wrapper):
    """All-to-all [1]_: one trigger; a poisoned row of class c is relabelled (c + 1) mod K.

    Rows of every class are candidates; ``target`` is not used.

    Parameters
    ----------
    attack : str, default="badnets"
        A dirty-label attack with one trigger (badnets, blend, trojan, filter, wanet, lowfreq).
    params : (name, value) pairs or dict, default=()
        That attack's parameters.
    n_classes : int or None, default=None
        K, >= 2; None: the largest label plus one (of the set poisoned, or of the test set).

    Examples
    --------
    >>> result = AllToAll(n_classes=3).poison(np.zeros((6, 1, 8, 8), np.uint8),
    ...                                       np.array([0, 1, 2, 0, 1, 2]),
    ...                                       target=0, rate=1.0, seed=0)
    >>> result.labels.tolist()
    [1, 2, 0, 1, 2, 0]
    """

    name = "all_to_all"

    def __init__(
        self, *, attack: str = "badnets", params: Params = (), n_classes: int | None = None
    ) -> None:
        super().__init__(attack=attack, params=params)
        self.n_classes = n_classes

    def _check_params(self) -> None:
        super()._check_params()
        if self.n_classes is not None:
            check_number(self.name, "n_classes", self.n_classes, low=2, integer=True)

    def target_classes(self, target: int) -> tuple[int, ...] | None:
        return None

    def relabel(self, labels: np.ndarray) -> np.ndarray:
        """``(labels + 1) mod K``: the label a triggered row of each class is trained to."""
        k = self.n_classes if self.n_classes is not None else int(labels.max(initial=0)) + 1
        if len(labels) and labels.max() >= k:
            raise InputError(f"{self.name}: label {int(labels.max())} >= n_classes {k}")
        return (labels + 1) % k

    def plan(self, labels: np.ndarray, *, target: int, rate: float, seed: int) -> PoisonPlan:
        self._check_params()
        labels = check_labels(labels)
        target, rate, seed = check_poison_args(target, rate, seed)
        n = len(labels)
        count = round(rate * n)
        poisoned = np.zeros(n, dtype=bool)
        poisoned[np.random.default_rng(seed).choice(n, size=count, replace=False)] = True
        new_labels = labels.copy()
        new_labels[poisoned] = self.relabel(labels[poisoned])
        info = self._plan_info(
            target=target,
            rate=rate,
            seed=seed,
            n_rows=n,
            requested=count,
            candidates=n,
            n_poisoned=count,
        )
        return PoisonPlan(poisoned=poisoned, labels=new_labels, seed=seed, info=info)

    def triggered_test_set(
        self, images: np.ndarray, labels: np.ndarray, *, target: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every row with the trigger, labelled ``(label + 1) mod K``; ``target`` is not used."""
        self._check_params()
        images = check_images(images)
        labels = check_labels(labels, len(images))
        out = self._stamp(images, np.random.default_rng(0)) if len(images) else images.copy()
        return out, self.relabel(labels)


@register
class MultiTarget(Composite):
    """Several backdoors in one set: each part's trigger relabels its rows to its target.

    ``round(rate * n)`` rows are split evenly among the parts (the first parts take the
    remainder); a part's rows are drawn among rows outside its target class that no
    earlier part took. ``target`` is not used.

    Parameters whose line below leaves something out are given in full in
    ``docs/development.md``, "Attack parameters in full".

    Parameters
    ----------
    parts : sequence of (attack, params, target), default=(("badnets", (), 0), ("blend", (), 1))
        Two or more (dirty-label attack, params, target class) triples; the targets differ.

    Examples
    --------
    >>> attack = MultiTarget(parts=(("badnets", (), 0), ("blend", {"alpha": 0.3}, 1)))
    >>> result = attack.poison(np.zeros((40, 3, 8, 8), np.uint8), np.arange(40) % 4,
    ...                        target=0, rate=0.2, seed=0)
    >>> sorted(result.labels[result.poisoned].tolist())
    [0, 0, 0, 0, 1, 1, 1, 1]
    """

    name = "multi_target"

    def __init__(
        self,
        *,
        parts: Sequence[tuple[str, Params, int]] = (("badnets", (), 0), ("blend", (), 1)),
    ) -> None:
        self.parts = parts

    def attacks(self) -> list[tuple[Attack, int]]:
        """Each part's attack and target class, validated."""
        if isinstance(self.parts, str | bytes) or not isinstance(self.parts, Sequence):
            raise ConfigError(f"{self.name}: parts must be a sequence, got {self.parts!r}")
        if len(self.parts) < 2:
            raise ConfigError(f"{self.name}: parts must hold two or more, got {len(self.parts)}")
        out = []
        for part in self.parts:
            if not isinstance(part, Sequence) or len(part) != 3:
                raise ConfigError(
                    f"{self.name}: each part is (attack, params, target), got {part!r}"
                )
            name, params, target = part
            check_number(self.name, "a part's target", target, low=0, integer=True)
            out.append((one_trigger(self.name, name, params), int(target)))
        targets = [t for _, t in out]
        if len(set(targets)) != len(targets):
            raise ConfigError(f"{self.name}: the parts' targets must differ, got {targets}")
        return out

    def _check_params(self) -> None:
        self.attacks()

    def target_classes(self, target: int) -> tuple[int, ...] | None:
        return tuple(int(part[2]) for part in self.parts)

    def _stamp(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # What ``apply`` gives: every part's trigger, in order.
        for attack, _ in self.attacks():
            images = attack._stamp(images, rng)
        return images

    def plan(self, labels: np.ndarray, *, target: int, rate: float, seed: int) -> PoisonPlan:
        attacks = self.attacks()
        labels = check_labels(labels)
        target, rate, seed = check_poison_args(target, rate, seed)
        n = len(labels)
        requested = round(rate * n)
        counts = [len(c) for c in np.array_split(np.arange(requested), len(attacks))]
        rng = np.random.default_rng(seed)
        part = np.full(n, -1, dtype=np.int64)
        new_labels = labels.copy()
        for index, ((_, part_target), count) in enumerate(zip(attacks, counts, strict=True)):
            candidates = np.flatnonzero((part == -1) & (labels != part_target))
            if count > len(candidates):
                raise ConfigError(
                    f"rate {rate} asks for {count} poisons into class {part_target} but only "
                    f"{len(candidates)} free rows lie outside it"
                )
            chosen = rng.choice(candidates, size=count, replace=False)
            part[chosen] = index
            new_labels[chosen] = part_target
        info = self._plan_info(
            target=target,
            rate=rate,
            seed=seed,
            n_rows=n,
            requested=requested,
            candidates=n,
            n_poisoned=requested,
            per_target={t: c for (_, t), c in zip(attacks, counts, strict=True)},
        )
        return PoisonPlan(poisoned=part >= 0, labels=new_labels, seed=seed, info=info, part=part)

    def execute(self, images: np.ndarray, plan: PoisonPlan, *, start: int = 0) -> np.ndarray:
        if plan.part is None:
            raise InputError(f"{self.name}: the plan does not say which part poisons each row")
        out = check_images(images).copy()
        for index, (attack, _) in enumerate(self.attacks()):
            rows = PoisonPlan(poisoned=plan.part == index, labels=plan.labels, seed=plan.seed)
            out = attack.execute(out, rows, start=start)
        return out

    def triggered_test_set(
        self, images: np.ndarray, labels: np.ndarray, *, target: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each part's triggered rows (rows outside its target, labelled it), one after the
        other; ``target`` is not used."""
        pieces = [
            attack.triggered_test_set(images, labels, target=part_target)
            for attack, part_target in self.attacks()
        ]
        return np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])
