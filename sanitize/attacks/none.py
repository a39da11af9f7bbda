"""The clean case: an attack that changes nothing, for runs that need a poison-free baseline."""

from __future__ import annotations

import numpy as np

from sanitize.attacks.base import Attack, PoisonPlan, register
from sanitize.attacks.checks import check_poison_args


@register
class NoAttack(Attack):
    """No trigger and no poisoned row, whatever the rate: the clean dataset as it is.

    A detector run on its output should remove next to nothing; ``triggered_test_set``
    gives the clean non-target rows labelled ``target``, so the "ASR" measured on it is the
    rate at which a model calls non-target rows ``target`` without any backdoor.

    Examples
    --------
    >>> result = NoAttack().poison(np.zeros((10, 1, 8, 8), np.uint8), np.arange(10) % 2,
    ...                            target=0, rate=0.5, seed=0)
    >>> int(result.poisoned.sum())
    0
    """

    name = "none"

    def __init__(self) -> None:
        pass

    def _stamp(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return images.copy()

    def plan(self, labels: np.ndarray, *, target: int, rate: float, seed: int) -> PoisonPlan:
        target, rate, seed = check_poison_args(target, rate, seed)
        plan = super().plan(labels, target=target, rate=0.0, seed=seed)
        plan.info.update(rate=rate, note=f"attack 'none' poisons no row (rate {rate} unused)")
        return plan
