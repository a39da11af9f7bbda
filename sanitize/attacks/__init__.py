"""Attack simulation for tests and benchmarks; every attack returns its ground truth.

One attack a module, all on the interface of :class:`~sanitize.attacks.base.Attack`:

=========== ============ ============================================================
name        labels       trigger
=========== ============ ============================================================
badnets     dirty        a small patch (Gu et al. 2017)
blend       dirty        a picture or noise blended at alpha 0.2 (Chen et al. 2017)
trojan      dirty        a textured square or watermark through a mask (Liu et al. 2018)
filter      dirty        an Instagram-like colour filter (Liu et al. 2019)
wanet       dirty        a smooth fixed warp (Nguyen and Tran 2021)
lowfreq     dirty        a smooth additive pattern, BackdoorBench's .npy (Zeng et al. 2021)
sig         clean-label  a horizontal sinusoid on target-class rows (Barni et al. 2019)
none        -            nothing: the clean case
=========== ============ ============================================================

and, in :mod:`~sanitize.attacks.composite`, attacks made of those triggers:
``all_to_all`` (class c -> c + 1 mod K), ``multi_target`` (several triggers, each into its
own target) and ``clean_label`` (any trigger on target-class rows, labels kept).

>>> from sanitize.attacks import get_attack
>>> attack = get_attack("sig", delta=20)
>>> attack.clean_label
True

:func:`~sanitize.attacks.dataset.poison_source` poisons a dataset on disk and writes its
ground truth next to it (the ``sanitize poison`` command).
"""

from sanitize.attacks.base import (
    Attack,
    PoisonPlan,
    PoisonResult,
    attack_class,
    available_attacks,
    get_attack,
    register,
)
from sanitize.attacks.blend import Blend
from sanitize.attacks.composite import AllToAll, CleanLabel, MultiTarget
from sanitize.attacks.dataset import PoisonSummary, poison_source
from sanitize.attacks.filter import Filter
from sanitize.attacks.lowfreq import LowFrequency
from sanitize.attacks.none import NoAttack
from sanitize.attacks.patch import BadNets, apply_patch, checkerboard, poison_dirty_label
from sanitize.attacks.sig import SIG
from sanitize.attacks.trojan import Trojan
from sanitize.attacks.wanet import WaNet

__all__ = [
    "SIG",
    "AllToAll",
    "Attack",
    "BadNets",
    "Blend",
    "CleanLabel",
    "Filter",
    "LowFrequency",
    "MultiTarget",
    "NoAttack",
    "PoisonPlan",
    "PoisonResult",
    "PoisonSummary",
    "Trojan",
    "WaNet",
    "apply_patch",
    "attack_class",
    "available_attacks",
    "checkerboard",
    "get_attack",
    "poison_dirty_label",
    "poison_source",
    "register",
]
