"""Detection and retraining benchmark: sanitize against simulated attacks on real datasets.

For each case (dataset, attack and its parameters, target class, poison rate) the script

1. takes a seeded subset of the dataset's train split (the first ``--rows`` rows after a
   seeded shuffle) and writes it as HF-layout Parquet to a temporary directory;
2. poisons it with :func:`sanitize.attacks.poison_source` (which writes the ground truth);
3. runs :func:`sanitize.sanitize_dataset` on it (default config, ``--train-steps`` aside),
   keeping the work directory;
4. scores the final decision and every ``score_<detector>`` column against the ground
   truth (:func:`sanitize.evaluate.evaluate_run`);
5. with ``--art``, runs IBM ART's ``ActivationDefence`` and ``SpectralSignatureDefense``
   on the same bootstrap model and the same decoded images;
6. retrains a fresh network three times with one recipe and seed
   (:func:`retrain.retrain_and_score`): on the poisoned set (no defence), on its
   truly clean rows (the ground truth's ideal), and on ``clean.parquet`` with its
   ``sample_weight`` (ours), and measures clean accuracy and attack success rate (ASR) on
   a seeded subset of the test split.

One JSON a case lands in ``--out``; a Markdown summary is printed and written to
``<out>/detection.md``. Progress goes to stderr. ``benchmarks/README.md`` has the commands.

ART is imported only with ``--art`` (from ``--art-lib`` when given), so ``--help`` and the
other modes work without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(REPO))

from retrain import read_image_parquet, retrain_and_score  # noqa: E402

from sanitize import SanitizeConfig, sanitize_dataset  # noqa: E402
from sanitize.attacks import attack_class, get_attack, poison_source  # noqa: E402
from sanitize.attacks.variants import long_tail_rows, near_duplicate, resized  # noqa: E402
from sanitize.config import DataConfig, expected_counts  # noqa: E402
from sanitize.data import open_source  # noqa: E402
from sanitize.data.expected import read_expected_counts  # noqa: E402
from sanitize.data.schema import SAMPLE_ID  # noqa: E402
from sanitize.evaluate import detection_metrics, evaluate_run, read_truth  # noqa: E402
from sanitize.model import resolve_device  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"
DEFAULT_ART_LIB = REPO / "benchmarks" / "out" / "art-lib"
# Retraining arms, in table order: the poisoned set as it is, its truly clean rows,
# clean.parquet drawn by sample_weight, and clean.parquet drawn uniformly (--arms adds it:
# it tells what the weights do apart from the removal).
ALL_ARMS = ("none", "true_clean", "ours", "ours_unweighted")
DEFAULT_ARMS = ALL_ARMS[:3]
ARM_LABELS = {"none": "none", "true_clean": "true", "ours": "ours", "ours_unweighted": "unw"}
# Clean-set shapes (Case.subset): "random" is the first rows of the seeded shuffle,
# "longtail" class sizes decaying from class 0 to the last, the first LONG_TAIL_RATIO times
# the last (CIFAR-10-LT's profile), "neardup" the random rows plus near-duplicate copies of
# a NEAR_DUP_SHARE of them (shifted a pixel, noised, JPEG-recompressed).
SUBSETS = ("random", "longtail", "neardup")
LONG_TAIL_RATIO = 10.0
NEAR_DUP_SHARE = 0.05


# --- cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One benchmark case.

    name : str
        Unique, used for the JSON file name and ``--cases``.
    dataset : str
        Folder under the datasets root holding ``train.parquet`` and ``test.parquet``.
    attack : str
        A name of :func:`sanitize.attacks.get_attack`.
    params : tuple of (str, value)
        The attack's keyword parameters. A string value starting with ``triggers/`` is a
        path under the datasets root.
    target : int
        The target class; all_to_all and multi_target (whose parts name theirs) ignore it.
    rate : float
        Share of all rows poisoned.
    subset : str
        Shape of the clean subset, one of ``SUBSETS``.
    side : int or None
        Side the subset's images are resized to (bilinear) before poisoning; None keeps
        the dataset's.
    """

    name: str
    dataset: str
    attack: str
    params: tuple[tuple[str, Any], ...] = ()
    target: int = 0
    rate: float = 0.05
    subset: str = "random"
    side: int | None = None

    def attack_params(self, datasets: Path) -> dict[str, Any]:
        return {k: _under(datasets, v) for k, v in self.params}

    @property
    def dirty_label(self) -> bool:
        """Relabelling attacks: the ones the mean row averages over."""
        return self.attack != "none" and not attack_class(self.attack).clean_label

    @property
    def targets(self) -> str:
        """The classes poisoned rows are trained towards, as text ("all": every class)."""
        classes = attack_class(self.attack)(**dict(self.params)).target_classes(self.target)
        return "all" if classes is None else "+".join(str(c) for c in classes)


def _under(datasets: Path, value: Any) -> Any:
    """``value`` with every ``triggers/...`` string in it (nested tuples too) made a path
    under ``datasets``."""
    if isinstance(value, str) and value.startswith("triggers/"):
        return str(datasets / value)
    if isinstance(value, tuple):
        return tuple(_under(datasets, v) for v in value)
    return value


TOOLBOX = "triggers/backdoor-toolbox"
BACKDOORBENCH = "triggers/BackdoorBench"

SUITES: dict[str, tuple[Case, ...]] = {
    # CIFAR-10 across attacks and rates, the clean case, and BadNets on MNIST and GTSRB.
    "cpu": (
        Case("cifar10-badnets-1pct", "cifar10", "badnets", target=3, rate=0.01),
        Case("cifar10-badnets-5pct", "cifar10", "badnets", target=0, rate=0.05),
        Case("cifar10-badnets-10pct", "cifar10", "badnets", target=7, rate=0.10),
        Case(
            "cifar10-badnets-patch-5pct",
            "cifar10",
            "badnets",
            (("trigger_path", f"{TOOLBOX}/badnet_patch_32.png"),),
            target=0,
            rate=0.05,
        ),
        Case(
            "cifar10-blend-kitty-5pct",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_32.png"), ("alpha", 0.2)),
            target=3,
            rate=0.05,
        ),
        Case(
            "cifar10-trojan-5pct",
            "cifar10",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/trojan_square_32.png"),),
            target=7,
            rate=0.05,
        ),
        Case(
            "cifar10-filter-5pct",
            "cifar10",
            "filter",
            (("kind", "nashville"),),
            target=0,
            rate=0.05,
        ),
        Case("cifar10-wanet-10pct", "cifar10", "wanet", target=3, rate=0.10),
        Case("cifar10-sig-5pct", "cifar10", "sig", target=7, rate=0.05),
        Case("cifar10-clean", "cifar10", "none", target=0, rate=0.0),
        Case("mnist-badnets-5pct", "mnist", "badnets", target=3, rate=0.05),
        Case("gtsrb-badnets-5pct", "gtsrb", "badnets", target=7, rate=0.05),
    ),
    # Cases no tuning looked at when they were added: other triggers, targets, rates,
    # datasets and seeds, to tell a method from a fit to the "cpu" suite.
    "wide": (
        Case("cifar10-badnets-3pct-t9", "cifar10", "badnets", target=9, rate=0.03),
        Case(
            "cifar10-blend-noise-3pct",
            "cifar10",
            "blend",
            (("pattern", "noise"), ("alpha", 0.1)),
            target=1,
            rate=0.03,
        ),
        Case(
            "cifar10-blend-kitty-10pct",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_32.png"), ("alpha", 0.15)),
            target=5,
            rate=0.10,
        ),
        Case(
            "cifar10-trojan-wm-2pct",
            "cifar10",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/trojan_watermark_32.png"),),
            target=2,
            rate=0.02,
        ),
        Case(
            "cifar10-filter-vignette-3pct",
            "cifar10",
            "filter",
            (("kind", "vignette"),),
            target=4,
            rate=0.03,
        ),
        Case("cifar10-wanet-5pct", "cifar10", "wanet", target=6, rate=0.05),
        Case("cifar10-sig-8pct", "cifar10", "sig", target=2, rate=0.08),
        Case("cifar10-clean-t1", "cifar10", "none", target=1, rate=0.0),
        Case(
            "mnist-blend-noise-5pct",
            "mnist",
            "blend",
            (("pattern", "noise"), ("alpha", 0.15)),
            target=8,
            rate=0.05,
        ),
        Case("mnist-clean", "mnist", "none", target=0, rate=0.0),
        Case(
            "gtsrb-trojan-2pct",
            "gtsrb",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/trojan_square_32.png"),),
            target=1,
            rate=0.02,
        ),
        Case("gtsrb-clean", "gtsrb", "none", target=0, rate=0.0),
    ),
    # The rate extremes, added in session 6 before any was run: a handful of poisons, and
    # target classes the poison makes a large majority of.
    "rates": (
        Case("cifar10-badnets-0.5pct", "cifar10", "badnets", target=4, rate=0.005),
        Case("cifar10-badnets-2pct", "cifar10", "badnets", target=6, rate=0.02),
        Case("cifar10-badnets-15pct", "cifar10", "badnets", target=2, rate=0.15),
        Case("cifar10-badnets-20pct", "cifar10", "badnets", target=8, rate=0.20),
        Case(
            "cifar10-blend-kitty-15pct",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_32.png"), ("alpha", 0.2)),
            target=1,
            rate=0.15,
        ),
        Case("mnist-badnets-1pct", "mnist", "badnets", target=5, rate=0.01),
        Case("mnist-badnets-15pct", "mnist", "badnets", target=9, rate=0.15),
    ),
    # Written down in session 6 after the class-size orientation was tuned on "rates", and
    # run once: other triggers, targets, rates and the lowfreq attack.
    "heldout6": (
        Case(
            "cifar10-blend-kitty-20pct",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_32.png"), ("alpha", 0.2)),
            target=0,
            rate=0.20,
        ),
        Case(
            "cifar10-trojan-wm-12pct",
            "cifar10",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/trojan_watermark_32.png"),),
            target=5,
            rate=0.12,
        ),
        Case(
            "cifar10-lowfreq-bb-5pct",
            "cifar10",
            "lowfreq",
            (("pattern_path", f"{BACKDOORBENCH}/lowFrequency/cifar10_preactresnet18_0_255.npy"),),
            target=2,
            rate=0.05,
        ),
        Case("cifar10-lowfreq-10pct", "cifar10", "lowfreq", target=8, rate=0.10),
        Case(
            "cifar10-filter-sepia-12pct",
            "cifar10",
            "filter",
            (("kind", "sepia"),),
            target=6,
            rate=0.12,
        ),
        Case("gtsrb-badnets-10pct", "gtsrb", "badnets", target=12, rate=0.10),
        Case(
            "mnist-blend-noise-15pct",
            "mnist",
            "blend",
            (("pattern", "noise"), ("alpha", 0.15)),
            target=4,
            rate=0.15,
        ),
        Case("mnist-lowfreq-3pct", "mnist", "lowfreq", target=7, rate=0.03),
    ),
    # Written down in session 7, before its run, for the expected class distribution
    # (``--expected-classes test``): warps and patches into other targets and datasets,
    # where no detector may single the target out and only its size says it gained rows.
    "heldout7": (
        Case("cifar10-wanet-10pct-t7", "cifar10", "wanet", target=7, rate=0.10),
        Case("cifar10-wanet-15pct", "cifar10", "wanet", target=1, rate=0.15),
        Case("gtsrb-wanet-10pct", "gtsrb", "wanet", target=2, rate=0.10),
        Case("mnist-wanet-10pct", "mnist", "wanet", target=0, rate=0.10),
        Case("gtsrb-badnets-8pct", "gtsrb", "badnets", target=25, rate=0.08),
        Case("cifar10-badnets-3pct", "cifar10", "badnets", target=4, rate=0.03),
    ),
    # Written down in session 7 after "heldout7" was studied (the size orientation's two
    # guards came from it), run once on the default config: high rates, where the target
    # class more than doubles and the size rules act.
    "heldout7b": (
        Case("cifar10-wanet-12pct", "cifar10", "wanet", target=5, rate=0.12),
        Case("cifar10-wanet-20pct", "cifar10", "wanet", target=9, rate=0.20),
        Case(
            "cifar10-filter-sepia-15pct",
            "cifar10",
            "filter",
            (("kind", "sepia"),),
            target=3,
            rate=0.15,
        ),
        Case(
            "cifar10-blend-kitty-12pct",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_32.png"), ("alpha", 0.2)),
            target=4,
            rate=0.12,
        ),
        Case("mnist-badnets-20pct", "mnist", "badnets", target=2, rate=0.20),
        Case("mnist-wanet-15pct", "mnist", "wanet", target=6, rate=0.15),
    ),
    # Written down in session 7 on the final code (guards and pixel orientation), before its
    # run; run on the default config and re-scored with the test split's distribution.
    "heldout7c": (
        Case("cifar10-wanet-15pct-t3", "cifar10", "wanet", target=3, rate=0.15),
        Case("cifar10-badnets-12pct", "cifar10", "badnets", target=6, rate=0.12),
        Case(
            "mnist-blend-noise-20pct",
            "mnist",
            "blend",
            (("pattern", "noise"), ("alpha", 0.15)),
            target=8,
            rate=0.20,
        ),
        Case(
            "mnist-trojan-12pct",
            "mnist",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/trojan_square_32.png"),),
            target=5,
            rate=0.12,
        ),
        Case("gtsrb-wanet-15pct", "gtsrb", "wanet", target=38, rate=0.15),
        Case("cifar10-wanet-8pct", "cifar10", "wanet", target=0, rate=0.08),
    ),
    # Written down in session 7 after the pixel test for large classes, before its run, on
    # the default config: high rates on MNIST, GTSRB and CIFAR-10 with other triggers.
    "heldout7d": (
        Case("mnist-badnets-12pct", "mnist", "badnets", target=1, rate=0.12),
        Case("mnist-lowfreq-15pct", "mnist", "lowfreq", target=3, rate=0.15),
        Case("gtsrb-badnets-15pct", "gtsrb", "badnets", target=1, rate=0.15),
        Case(
            "gtsrb-blend-noise-12pct",
            "gtsrb",
            "blend",
            (("pattern", "noise"), ("alpha", 0.15)),
            target=10,
            rate=0.12,
        ),
        Case(
            "cifar10-blend-noise-15pct",
            "cifar10",
            "blend",
            (("pattern", "noise"), ("alpha", 0.15)),
            target=2,
            rate=0.15,
        ),
        Case("cifar10-lowfreq-15pct", "cifar10", "lowfreq", target=7, rate=0.15),
    ),
    # Written down in session 8 before its run, run once on the default config: triggers,
    # targets and rates inside the 1-10% not used before (backdoor-toolbox's
    # four-patch trigger, an airplane image and a faint kitty blended, a white watermark,
    # the tint and contrast filters, a larger patch in another corner, a random image
    # blended).
    "heldout8": (
        Case(
            "cifar10-patch4-4pct",
            "cifar10",
            "badnets",
            (("trigger_path", f"{TOOLBOX}/badnet_patch4_32.png"),),
            target=8,
            rate=0.04,
        ),
        Case(
            "cifar10-blend-kitty-a10-8pct",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_32.png"), ("alpha", 0.1)),
            target=5,
            rate=0.08,
        ),
        Case(
            "cifar10-trojan-white-2pct",
            "cifar10",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/watermark_white_32.png"),),
            target=1,
            rate=0.02,
        ),
        Case(
            "cifar10-filter-tint-7pct",
            "cifar10",
            "filter",
            (("kind", "tint"),),
            target=9,
            rate=0.07,
        ),
        Case(
            "cifar10-badnets-tl5-6pct",
            "cifar10",
            "badnets",
            (("size", 5), ("position", "top_left")),
            target=2,
            rate=0.06,
        ),
        Case(
            "cifar10-blend-random-4pct",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/random_32.png"), ("alpha", 0.15)),
            target=6,
            rate=0.04,
        ),
        Case(
            "cifar10-blend-airplane-2pct",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/airplane4.png"), ("alpha", 0.2)),
            target=4,
            rate=0.02,
        ),
        Case(
            "mnist-blend-kitty-3pct",
            "mnist",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_32.png"), ("alpha", 0.2)),
            target=6,
            rate=0.03,
        ),
        Case(
            "mnist-filter-contrast-6pct",
            "mnist",
            "filter",
            (("kind", "contrast"),),
            target=2,
            rate=0.06,
        ),
        Case(
            "gtsrb-blend-kitty-5pct",
            "gtsrb",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_32.png"), ("alpha", 0.2)),
            target=5,
            rate=0.05,
        ),
    ),
    # Written down in session 8 on its final code, before its run, run once: the issue's
    # 1-10% with the cpu suite's triggers on other targets and rates, a clean-label case and
    # two datasets' other attacks.
    "heldout8b": (
        Case("cifar10-badnets-1pct-t9", "cifar10", "badnets", target=9, rate=0.01),
        Case(
            "cifar10-blend-kitty-3pct-t1",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_32.png"), ("alpha", 0.2)),
            target=1,
            rate=0.03,
        ),
        Case(
            "cifar10-trojan-8pct-t0",
            "cifar10",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/trojan_square_32.png"),),
            target=0,
            rate=0.08,
        ),
        Case(
            "cifar10-filter-2pct-t6",
            "cifar10",
            "filter",
            (("kind", "nashville"),),
            target=6,
            rate=0.02,
        ),
        Case(
            "cifar10-filter-sepia-5pct-t8",
            "cifar10",
            "filter",
            (("kind", "sepia"),),
            target=8,
            rate=0.05,
        ),
        Case(
            "cifar10-blend-noise-7pct-t4",
            "cifar10",
            "blend",
            (("pattern", "noise"), ("alpha", 0.15)),
            target=4,
            rate=0.07,
        ),
        Case("cifar10-sig-3pct-t3", "cifar10", "sig", target=3, rate=0.03),
        Case(
            "mnist-trojan-5pct",
            "mnist",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/trojan_square_32.png"),),
            target=8,
            rate=0.05,
        ),
        Case("gtsrb-filter-tint-4pct", "gtsrb", "filter", (("kind", "tint"),), target=3, rate=0.04),
    ),
    # Written down in session 9 on its final code (the refinement's coherence check), before
    # its run, run once with --seed 9 (other subsets and poisons): triggers no earlier suite
    # used, new targets and rates, and a clean set.
    "heldout9": (
        Case(
            "cifar10-trojan-nc-4pct-t2",
            "cifar10",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/NC_clean.png"),),
            target=2,
            rate=0.04,
        ),
        Case(
            "cifar10-blend-refool-5pct-t4",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/refool_cifar10_32.png"), ("alpha", 0.2)),
            target=4,
            rate=0.05,
        ),
        Case(
            "cifar10-blend-firefox-3pct-t7",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/firefox_32.png"), ("alpha", 0.2)),
            target=7,
            rate=0.03,
        ),
        Case(
            "cifar10-blend-kitty-a15-6pct-t9",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_32.png"), ("alpha", 0.15)),
            target=9,
            rate=0.06,
        ),
        Case(
            "cifar10-badnets-dup-8pct-t1",
            "cifar10",
            "badnets",
            (("trigger_path", f"{TOOLBOX}/badnet_patch4_dup_32.png"),),
            target=1,
            rate=0.08,
        ),
        Case(
            "cifar10-filter-contrast-5pct-t3",
            "cifar10",
            "filter",
            (("kind", "contrast"),),
            target=3,
            rate=0.05,
        ),
        Case("cifar10-clean", "cifar10", "none", target=0, rate=0.0),
        Case(
            "mnist-blend-random-6pct-t2",
            "mnist",
            "blend",
            (("trigger_path", f"{TOOLBOX}/random_32.png"), ("alpha", 0.2)),
            target=2,
            rate=0.06,
        ),
        Case(
            "gtsrb-trojan-wm-6pct-t12",
            "gtsrb",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/trojan_watermark_32.png"),),
            target=12,
            rate=0.06,
        ),
    ),  # Written down in session 9 after pixel_spectral became a default detector, before its
    # run, run once with --seed 11: faint blends, low rates, a clean set of each dataset.
    "heldout9b": (
        Case("cifar10-clean", "cifar10", "none", target=0, rate=0.0),
        Case("mnist-clean", "mnist", "none", target=0, rate=0.0),
        Case("gtsrb-clean", "gtsrb", "none", target=0, rate=0.0),
        Case(
            "cifar10-blend-kitty-a12-5pct-t0",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_32.png"), ("alpha", 0.12)),
            target=0,
            rate=0.05,
        ),
        Case(
            "cifar10-blend-noise-a10-4pct-t6",
            "cifar10",
            "blend",
            (("pattern", "noise"), ("alpha", 0.1)),
            target=6,
            rate=0.04,
        ),
        Case(
            "cifar10-blend-airplane-6pct-t8",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/airplane4.png"), ("alpha", 0.2)),
            target=8,
            rate=0.06,
        ),
        Case(
            "cifar10-trojan-sq-2pct-t5",
            "cifar10",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/trojan_square_32.png"),),
            target=5,
            rate=0.02,
        ),
        Case("cifar10-badnets-1pct-t2", "cifar10", "badnets", target=2, rate=0.01),
        Case("cifar10-sig-6pct-t1", "cifar10", "sig", target=1, rate=0.06),
        Case(
            "mnist-blend-kitty-4pct-t7",
            "mnist",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_32.png"), ("alpha", 0.2)),
            target=7,
            rate=0.04,
        ),
        Case(
            "gtsrb-blend-random-5pct-t1",
            "gtsrb",
            "blend",
            (("trigger_path", f"{TOOLBOX}/random_32.png"), ("alpha", 0.2)),
            target=1,
            rate=0.05,
        ),
    ),
    # Written down in session 11 on the code with contrast_spectral (3886d3f), before its
    # run, run once with --seed 13: triggers no earlier suite used (corner logos, the
    # TrojanNN pattern, BackdoorBench's grid, a white apple blend, VGG's low-frequency
    # pattern), new targets and rates, and a clean set.
    "heldout11": (
        Case(
            "cifar10-trojan-phoenix-3pct-t6",
            "cifar10",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/phoenix_corner_32.png"),),
            target=6,
            rate=0.03,
        ),
        Case(
            "cifar10-trojan-nn-5pct-t8",
            "cifar10",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/trojannn_cifar10_seed=2333.png"),),
            target=8,
            rate=0.05,
        ),
        Case(
            "cifar10-badnets-grid-2pct-t4",
            "cifar10",
            "badnets",
            (("trigger_path", f"{BACKDOORBENCH}/badnet/trigger_image.png"),),
            target=4,
            rate=0.02,
        ),
        Case(
            "cifar10-trojan-firefox-corner-4pct-t0",
            "cifar10",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/firefox_corner_32.png"),),
            target=0,
            rate=0.04,
        ),
        Case(
            "cifar10-blend-apple-a15-5pct-t3",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/apple_white.png"), ("alpha", 0.15)),
            target=3,
            rate=0.05,
        ),
        Case(
            "cifar10-lowfreq-vgg-8pct-t2",
            "cifar10",
            "lowfreq",
            (("pattern_path", f"{BACKDOORBENCH}/lowFrequency/cifar10_vgg19_0_255.npy"),),
            target=2,
            rate=0.08,
        ),
        Case(
            "cifar10-filter-tint-6pct-t9",
            "cifar10",
            "filter",
            (("kind", "tint"),),
            target=9,
            rate=0.06,
        ),
        Case("cifar10-wanet-8pct-t1", "cifar10", "wanet", target=1, rate=0.08),
        Case("cifar10-badnets-12pct-t5", "cifar10", "badnets", target=5, rate=0.12),
        Case("cifar10-clean", "cifar10", "none", target=0, rate=0.0),
        Case(
            "gtsrb-trojan-nn-4pct-t38",
            "gtsrb",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/trojannn_gtsrb_seed=2333.png"),),
            target=38,
            rate=0.04,
        ),
        Case(
            "mnist-badnets-grid-3pct-t6",
            "mnist",
            "badnets",
            (("trigger_path", f"{BACKDOORBENCH}/badnet/trigger_image.png"),),
            target=6,
            rate=0.03,
        ),
    ),
    # Written down before its run (session 12): triggers, targets and rates no earlier
    # suite used, the GTSRB target a class whose tracks the model fits early.
    "heldout12": (
        Case(
            "cifar10-trojan-watermark3-3pct-t7",
            "cifar10",
            "trojan",
            (("trigger_path", f"{BACKDOORBENCH}/trojannn/watermark3.png"),),
            target=7,
            rate=0.03,
        ),
        Case(
            "cifar10-badnets-center-1.5pct-t2",
            "cifar10",
            "badnets",
            (("trigger_path", f"{TOOLBOX}/square_center_32.png"),),
            target=2,
            rate=0.015,
        ),
        Case(
            "cifar10-blend-kitty-jpeg-a10-7pct-t6",
            "cifar10",
            "blend",
            (("trigger_path", f"{BACKDOORBENCH}/blended/hello_kitty.jpeg"), ("alpha", 0.1)),
            target=6,
            rate=0.07,
        ),
        Case(
            "cifar10-filter-vignette-4pct-t5",
            "cifar10",
            "filter",
            (("kind", "vignette"),),
            target=5,
            rate=0.04,
        ),
        Case(
            "cifar10-lowfreq-preact-6pct-t9",
            "cifar10",
            "lowfreq",
            (("pattern_path", f"{BACKDOORBENCH}/lowFrequency/cifar10_preactresnet18_0_255.npy"),),
            target=9,
            rate=0.06,
        ),
        Case(
            "cifar10-trojan-apple4-2pct-t1",
            "cifar10",
            "trojan",
            (("trigger_path", f"{BACKDOORBENCH}/trojannn/apple4.png"),),
            target=1,
            rate=0.02,
        ),
        Case("cifar10-badnets-1pct-t8", "cifar10", "badnets", target=8, rate=0.01),
        Case("cifar10-sig-4pct-t0", "cifar10", "sig", target=0, rate=0.04),
        Case("cifar10-clean", "cifar10", "none", target=0, rate=0.0),
        Case(
            "gtsrb-badnets-grid-6pct-t12",
            "gtsrb",
            "badnets",
            (("trigger_path", f"{BACKDOORBENCH}/badnet/trigger_image_grid.png"),),
            target=12,
            rate=0.06,
        ),
        Case("gtsrb-clean", "gtsrb", "none", target=0, rate=0.0),
        Case("mnist-wanet-5pct-t3", "mnist", "wanet", target=3, rate=0.05),
    ),
    # Written down in session 13 before the single-detector rule of the consensus was
    # tried on anything: triggers, targets and rates no earlier suite used.
    "heldout13": (
        Case(
            "cifar10-blend-kitty-r-a15-5pct-t4",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_r_32.png"), ("alpha", 0.15)),
            target=4,
            rate=0.05,
        ),
        Case(
            "cifar10-badnets-white4-tl-2.5pct-t7",
            "cifar10",
            "badnets",
            (("pattern", "white"), ("size", 4), ("position", "top_left")),
            target=7,
            rate=0.025,
        ),
        Case(
            "cifar10-trojan-bb-square-4pct-t3",
            "cifar10",
            "trojan",
            (("trigger_path", f"{BACKDOORBENCH}/trojannn/square.png"),),
            target=3,
            rate=0.04,
        ),
        Case(
            "cifar10-lowfreq-densenet-7pct-t8",
            "cifar10",
            "lowfreq",
            (("pattern_path", f"{BACKDOORBENCH}/lowFrequency/cifar10_densenet161_0_255.npy"),),
            target=8,
            rate=0.07,
        ),
        Case(
            "cifar10-filter-sepia-3pct-t2",
            "cifar10",
            "filter",
            (("kind", "sepia"),),
            target=2,
            rate=0.03,
        ),
        Case(
            "cifar10-blend-noise-a15-1.5pct-t9",
            "cifar10",
            "blend",
            (("alpha", 0.15),),
            target=9,
            rate=0.015,
        ),
        Case("cifar10-wanet-6pct-t0", "cifar10", "wanet", target=0, rate=0.06),
        Case("cifar10-badnets-9pct-t6", "cifar10", "badnets", target=6, rate=0.09),
        Case("cifar10-sig-2pct-t7", "cifar10", "sig", target=7, rate=0.02),
        Case("cifar10-clean", "cifar10", "none", target=0, rate=0.0),
        Case(
            "gtsrb-blend-kitty-a20-3pct-t25",
            "gtsrb",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_32.png"), ("alpha", 0.2)),
            target=25,
            rate=0.03,
        ),
        Case("mnist-trojan-2pct-t0", "mnist", "trojan", target=0, rate=0.02),
        Case("mnist-clean", "mnist", "none", target=0, rate=0.0),
    ),
    # Written down in session 18, before its run: triggers no suite had used (a patch at a
    # random place per image, patch files at their own size, the green kitty, EfficientNet's
    # and GTSRB's low-frequency patterns, the Phoenix corner), new targets and rates.
    "heldout14": (
        Case(
            "cifar10-badnets-random-3pct-t5",
            "cifar10",
            "badnets",
            (("position", "random"),),
            target=5,
            rate=0.03,
        ),
        Case(
            "cifar10-badnets-phoenix10-2pct-t1",
            "cifar10",
            "badnets",
            (("trigger_path", f"{TOOLBOX}/phoenix_corner_10x10_32.png"),),
            target=1,
            rate=0.02,
        ),
        Case(
            "cifar10-blend-kitty-g-a12-4pct-t6",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_g_32.png"), ("alpha", 0.12)),
            target=6,
            rate=0.04,
        ),
        Case(
            "cifar10-lowfreq-effnet-6pct-t4",
            "cifar10",
            "lowfreq",
            (("pattern_path", f"{BACKDOORBENCH}/lowFrequency/cifar10_efficientnet_b3_0_255.npy"),),
            target=4,
            rate=0.06,
        ),
        Case("cifar10-wanet-5pct-t9", "cifar10", "wanet", target=9, rate=0.05),
        Case(
            "cifar10-badnets-sleeper-1pct-t2",
            "cifar10",
            "badnets",
            (("pattern_path", f"{TOOLBOX}/trigger_sleeper_agent.png"),),
            target=2,
            rate=0.01,
        ),
        Case("cifar10-clean", "cifar10", "none", target=0, rate=0.0),
        Case(
            "gtsrb-badnets-9x9-4pct-t7",
            "gtsrb",
            "badnets",
            (("pattern_path", f"{TOOLBOX}/badnet_patch_9x9.png"),),
            target=7,
            rate=0.04,
        ),
        Case(
            "gtsrb-lowfreq-5pct-t10",
            "gtsrb",
            "lowfreq",
            (("pattern_path", f"{BACKDOORBENCH}/lowFrequency/gtsrb_preactresnet18_0_255.npy"),),
            target=10,
            rate=0.05,
        ),
        Case("gtsrb-clean", "gtsrb", "none", target=0, rate=0.0),
        Case(
            "mnist-blend-kitty-a20-3pct-t8",
            "mnist",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_32.png"), ("alpha", 0.2)),
            target=8,
            rate=0.03,
        ),
        Case(
            "mnist-badnets-random-2pct-t3",
            "mnist",
            "badnets",
            (("position", "random"),),
            target=3,
            rate=0.02,
        ),
    ),
    # Written down in session 19, before its run, after the consensus bar was lowered in
    # every class grown beyond the others' sizes: low-frequency patterns and rates no suite
    # used, WaNet and the random-place patch at higher rates, the blue kitty, new targets.
    "heldout15": (
        Case(
            "cifar10-lowfreq-mobilenet-4pct-t3",
            "cifar10",
            "lowfreq",
            (
                (
                    "pattern_path",
                    f"{BACKDOORBENCH}/lowFrequency/cifar10_mobilenet_v3_large_0_255.npy",
                ),
            ),
            target=3,
            rate=0.04,
        ),
        Case(
            "cifar10-lowfreq-convnext-9pct-t7",
            "cifar10",
            "lowfreq",
            (("pattern_path", f"{BACKDOORBENCH}/lowFrequency/cifar10_convnext_tiny_0_255.npy"),),
            target=7,
            rate=0.09,
        ),
        Case("cifar10-wanet-8pct-t1", "cifar10", "wanet", target=1, rate=0.08),
        Case(
            "cifar10-badnets-random-6pct-t0",
            "cifar10",
            "badnets",
            (("position", "random"),),
            target=0,
            rate=0.06,
        ),
        Case(
            "cifar10-blend-kitty-b-a15-3pct-t9",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_b_32.png"), ("alpha", 0.15)),
            target=9,
            rate=0.03,
        ),
        Case(
            "gtsrb-lowfreq-vgg-4pct-t2",
            "gtsrb",
            "lowfreq",
            (("pattern_path", f"{BACKDOORBENCH}/lowFrequency/gtsrb_vgg19_0_255.npy"),),
            target=2,
            rate=0.04,
        ),
        Case("mnist-wanet-3pct-t9", "mnist", "wanet", target=9, rate=0.03),
    ),
    # Written down in session 20, before its run, after a lone detector was let act in a
    # grown class whose group looks like other classes in pixel space: WaNet at low rates
    # on each dataset, MNIST triggers no suite used, VGG-BN's batched low-frequency pattern,
    # a corner patch, and clean sets.
    "heldout16": (
        Case("mnist-wanet-4pct-t2", "mnist", "wanet", target=2, rate=0.04),
        Case(
            "mnist-trojan-wm-4pct-t5",
            "mnist",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/trojan_watermark_32.png"),),
            target=5,
            rate=0.04,
        ),
        Case("mnist-lowfreq-5pct-t6", "mnist", "lowfreq", target=6, rate=0.05),
        Case("mnist-clean", "mnist", "none", target=0, rate=0.0),
        Case("gtsrb-wanet-6pct-t12", "gtsrb", "wanet", target=12, rate=0.06),
        Case("cifar10-wanet-4pct-t2", "cifar10", "wanet", target=2, rate=0.04),
        Case(
            "cifar10-lowfreq-vggbn-5pct-t1",
            "cifar10",
            "lowfreq",
            (("pattern_path", f"{BACKDOORBENCH}/lowFrequency/cifar10_vgg19_bn_0_255.npy"),),
            target=1,
            rate=0.05,
        ),
        Case(
            "cifar10-badnets-phoenix2-3pct-t9",
            "cifar10",
            "badnets",
            (("trigger_path", f"{TOOLBOX}/phoenix_corner2_32.png"),),
            target=9,
            rate=0.03,
        ),
        Case("cifar10-clean", "cifar10", "none", target=0, rate=0.0),
    ),
    # Written down in session 23, before its run, on the code of session 22: triggers and
    # options no suite used (a quarter of the kitty blended, a half-strength filter,
    # WaNet's noise mode, a 9x9 patch at 0.8%, ViT's low-frequency pattern, a faint noise
    # blend at 9%, a stronger and slower SIG), a large MNIST patch, GTSRB's Trojan square
    # and vignette, and clean sets; run at a seed no earlier suite used.
    "heldout17": (
        Case(
            "cifar10-blend-kitty-q3-a20-4pct-t5",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_split_3_32.png"), ("alpha", 0.2)),
            target=5,
            rate=0.04,
        ),
        Case(
            "cifar10-filter-nashville-s60-6pct-t4",
            "cifar10",
            "filter",
            (("kind", "nashville"), ("strength", 0.6)),
            target=4,
            rate=0.06,
        ),
        Case(
            "cifar10-wanet-noise-10pct-t6",
            "cifar10",
            "wanet",
            (("noise", True),),
            target=6,
            rate=0.10,
        ),
        Case(
            "cifar10-badnets-9x9-0.8pct-t3",
            "cifar10",
            "badnets",
            (("pattern_path", f"{TOOLBOX}/badnet_patch_9x9.png"),),
            target=3,
            rate=0.008,
        ),
        Case(
            "cifar10-lowfreq-vit-7pct-t0",
            "cifar10",
            "lowfreq",
            (("pattern_path", f"{BACKDOORBENCH}/lowFrequency/cifar10_vit_b_16_0_255.npy"),),
            target=0,
            rate=0.07,
        ),
        Case(
            "cifar10-blend-noise-a08-9pct-t8",
            "cifar10",
            "blend",
            (("pattern", "noise"), ("alpha", 0.08), ("noise_seed", 7)),
            target=8,
            rate=0.09,
        ),
        Case(
            "cifar10-sig-d30-f4-5pct-t2",
            "cifar10",
            "sig",
            (("delta", 30.0), ("frequency", 4.0)),
            target=2,
            rate=0.05,
        ),
        Case("cifar10-clean", "cifar10", "none", target=0, rate=0.0),
        Case(
            "mnist-badnets-12x12-1.5pct-t4",
            "mnist",
            "badnets",
            (("pattern_path", f"{TOOLBOX}/badnet_patch_12x12.png"),),
            target=4,
            rate=0.015,
        ),
        Case("mnist-clean", "mnist", "none", target=0, rate=0.0),
        Case("gtsrb-trojan-sq-3pct-t1", "gtsrb", "trojan", target=1, rate=0.03),
        Case(
            "gtsrb-filter-vignette-5pct-t14",
            "gtsrb",
            "filter",
            (("kind", "vignette"),),
            target=14,
            rate=0.05,
        ),
    ),
    # Issue 33's held-out suite, written down and committed before any of its cases ran,
    # to be run once with --seed 23 (no earlier suite's seed) on the code of its commit,
    # and never tuned on: attack families no suite had (all-to-all and multi-target labels,
    # clean-label patches and blends beside SIG), images of 64 x 64, long-tailed and
    # near-duplicate clean sets, a long-tailed set poisoned into a tail class, and
    # triggers, options, targets and rates no earlier suite used.
    "heldout33": (
        Case(
            "cifar10-all2all-white3-bl-5pct",
            "cifar10",
            "all_to_all",
            (
                ("attack", "badnets"),
                ("params", (("pattern", "white"), ("size", 3), ("position", "bottom_left"))),
                ("n_classes", 10),
            ),
            rate=0.05,
        ),
        Case(
            "mnist-all2all-4x4-tr-6pct",
            "mnist",
            "all_to_all",
            (
                ("attack", "badnets"),
                ("params", (("size", 4), ("position", "top_right"))),
                ("n_classes", 10),
            ),
            rate=0.06,
        ),
        Case(
            "gtsrb-all2all-kitty-q1-a20-8pct",
            "gtsrb",
            "all_to_all",
            (
                ("attack", "blend"),
                (
                    "params",
                    (("trigger_path", f"{TOOLBOX}/hellokitty_split_1_32.png"), ("alpha", 0.2)),
                ),
                ("n_classes", 43),
            ),
            rate=0.08,
        ),
        Case(
            "cifar10-multi-badencoder-t2-kitty-q2-t7-6pct",
            "cifar10",
            "multi_target",
            (
                (
                    "parts",
                    (
                        ("badnets", (("trigger_path", f"{TOOLBOX}/BadEncoder_32.png"),), 2),
                        (
                            "blend",
                            (
                                ("trigger_path", f"{TOOLBOX}/hellokitty_split_2_32.png"),
                                ("alpha", 0.2),
                            ),
                            7,
                        ),
                    ),
                ),
            ),
            rate=0.06,
        ),
        Case(
            "gtsrb-multi3-nc2-vig80-dn161-9pct-t5-17-31",
            "gtsrb",
            "multi_target",
            (
                (
                    "parts",
                    (
                        ("trojan", (("trigger_path", f"{TOOLBOX}/NC_clean-2.png"),), 5),
                        ("filter", (("kind", "vignette"), ("strength", 0.8)), 17),
                        (
                            "lowfreq",
                            (
                                (
                                    "pattern_path",
                                    f"{BACKDOORBENCH}/lowFrequency/gtsrb_densenet161_0_255.npy",
                                ),
                            ),
                            31,
                        ),
                    ),
                ),
            ),
            rate=0.09,
        ),
        Case(
            "cifar10-cl-firefox-q1-6pct-t6",
            "cifar10",
            "clean_label",
            (
                ("attack", "trojan"),
                ("params", (("trigger_path", f"{TOOLBOX}/firefox_corner_split_1_32.png"),)),
            ),
            target=6,
            rate=0.06,
        ),
        Case(
            "cifar10-cl-blend-noise-s33-a12-4pct-t9",
            "cifar10",
            "clean_label",
            (
                ("attack", "blend"),
                ("params", (("pattern", "noise"), ("alpha", 0.12), ("noise_seed", 33))),
            ),
            target=9,
            rate=0.04,
        ),
        Case(
            "gtsrb-cl-badnets-4x4-bl-3pct-t2",
            "gtsrb",
            "clean_label",
            (("attack", "badnets"), ("params", (("size", 4), ("position", "bottom_left")))),
            target=2,
            rate=0.03,
        ),
        Case(
            "cifar10-64px-badnets-phoenix224-3pct-t8",
            "cifar10",
            "badnets",
            (("trigger_path", f"{TOOLBOX}/phoenix_corner_224.png"),),
            target=8,
            rate=0.03,
            side=64,
        ),
        Case(
            "cifar10-64px-blend-kitty224-a15-4.5pct-t1",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/hellokitty_224.png"), ("alpha", 0.15)),
            target=1,
            rate=0.045,
            side=64,
        ),
        Case(
            "mnist-64px-trojan-wm224-4pct-t9",
            "mnist",
            "trojan",
            (("trigger_path", f"{TOOLBOX}/trojan_watermark_224.png"),),
            target=9,
            rate=0.04,
            side=64,
        ),
        Case(
            "cifar10-longtail-badnets-center-2pct-t8",
            "cifar10",
            "badnets",
            (("position", "center"),),
            target=8,
            rate=0.02,
            subset="longtail",
        ),
        Case("cifar10-wanet-k8-s75-7pct-t5", "cifar10", "wanet", (("k", 8), ("s", 0.75)), 5, 0.07),
        Case("gtsrb-filter-sepia-7pct-t9", "gtsrb", "filter", (("kind", "sepia"),), 9, 0.07),
        Case("cifar10-longtail-clean", "cifar10", "none", rate=0.0, subset="longtail"),
        Case("cifar10-neardup-clean", "cifar10", "none", rate=0.0, subset="neardup"),
        Case("mnist-longtail-clean", "mnist", "none", rate=0.0, subset="longtail"),
    ),
    # Issue 33's fresh held-out suite (session 25), written down and committed before any
    # of its cases ran and before the decision rewrite, because `heldout33` has been looked
    # at. Run with --seed 35 (no earlier suite's seed); never tuned on. All images at their
    # dataset's size (the 64 px cases cost too much CPU to be run every time).
    "heldout35": (
        Case(
            "cifar10-badnets-firefox-q3-4pct-t4",
            "cifar10",
            "badnets",
            (("trigger_path", f"{TOOLBOX}/firefox_corner_split_3_32.png"),),
            target=4,
            rate=0.04,
        ),
        Case(
            "cifar10-blend-32471-a15-6pct-t1",
            "cifar10",
            "blend",
            (("trigger_path", f"{TOOLBOX}/32471.png"), ("alpha", 0.15)),
            target=1,
            rate=0.06,
        ),
        Case(
            "cifar10-lowfreq-c100prn-5pct-t6",
            "cifar10",
            "lowfreq",
            (
                (
                    "pattern_path",
                    f"{BACKDOORBENCH}/lowFrequency/cifar100_preactresnet18_0_255.npy",
                ),
            ),
            target=6,
            rate=0.05,
        ),
        Case("cifar10-wanet-k4-s1-9pct-t2", "cifar10", "wanet", (("k", 4), ("s", 1.0)), 2, 0.09),
        Case(
            "cifar10-all2all-noise-a10-6pct",
            "cifar10",
            "all_to_all",
            (
                ("attack", "blend"),
                ("params", (("pattern", "noise"), ("alpha", 0.1), ("noise_seed", 35))),
                ("n_classes", 10),
            ),
            rate=0.06,
        ),
        Case(
            "cifar10-multi3-white4-wmw-contrast-7.5pct-t0-5-9",
            "cifar10",
            "multi_target",
            (
                (
                    "parts",
                    (
                        (
                            "badnets",
                            (("pattern", "white"), ("size", 4), ("position", "top_left")),
                            0,
                        ),
                        ("trojan", (("trigger_path", f"{TOOLBOX}/watermark_white_32.png"),), 5),
                        ("filter", (("kind", "contrast"),), 9),
                    ),
                ),
            ),
            rate=0.075,
        ),
        Case(
            "gtsrb-multi2-4x4tl-random-6pct-t12-25",
            "gtsrb",
            "multi_target",
            (
                (
                    "parts",
                    (
                        ("badnets", (("size", 4), ("position", "top_left")), 12),
                        (
                            "blend",
                            (("trigger_path", f"{TOOLBOX}/random_32.png"), ("alpha", 0.15)),
                            25,
                        ),
                    ),
                ),
            ),
            rate=0.06,
        ),
        Case(
            "mnist-badnets-randpos-5pct-t3",
            "mnist",
            "badnets",
            (("size", 4), ("position", "random")),
            target=3,
            rate=0.05,
        ),
        Case(
            "mnist-blend-noise-a15-8pct-t7",
            "mnist",
            "blend",
            (("pattern", "noise"), ("alpha", 0.15), ("noise_seed", 351)),
            target=7,
            rate=0.08,
        ),
        Case(
            "gtsrb-badnets-center3-5pct-t38",
            "gtsrb",
            "badnets",
            (("position", "center"),),
            target=38,
            rate=0.05,
        ),
        Case(
            "mnist-longtail-badnets-3pct-t2",
            "mnist",
            "badnets",
            (("size", 3), ("position", "bottom_left")),
            target=2,
            rate=0.03,
            subset="longtail",
        ),
        Case(
            "cifar10-cl-badnets-phoenix2-5pct-t3",
            "cifar10",
            "clean_label",
            (
                ("attack", "badnets"),
                ("params", (("trigger_path", f"{TOOLBOX}/phoenix_corner2_32.png"),)),
            ),
            target=3,
            rate=0.05,
        ),
        Case(
            "gtsrb-cl-blend-kittyg-a20-4pct-t10",
            "gtsrb",
            "clean_label",
            (
                ("attack", "blend"),
                ("params", (("trigger_path", f"{TOOLBOX}/hellokitty_g_32.png"), ("alpha", 0.2))),
            ),
            target=10,
            rate=0.04,
        ),
        Case("gtsrb-neardup-clean", "gtsrb", "none", rate=0.0, subset="neardup"),
        Case("mnist-neardup-clean", "mnist", "none", rate=0.0, subset="neardup"),
        Case("cifar10-clean-s35", "cifar10", "none", rate=0.0),
    ),
}


@dataclass(frozen=True)
class Settings:
    """What every case of a run shares (the command-line options)."""

    datasets: Path = DATASETS
    rows: int = 5000
    test_rows: int = 2000
    train_steps: int | None = None
    detectors: tuple[str, ...] | None = None
    retrain_epochs: int = 4
    arms: tuple[str, ...] = DEFAULT_ARMS
    seed: int = 0
    device: str = "auto"
    art: bool = False
    art_lib: Path | None = None
    work_dir: Path | None = None
    keep_work: bool = False
    expected_classes: str | None = None

    def config(self) -> SanitizeConfig:
        """The default sanitize config, with ``train_steps`` and ``device`` when given."""
        config = SanitizeConfig(seed=self.seed)
        boot = dataclasses.replace(config.bootstrap, device=self.device)
        if self.train_steps is not None:
            boot = dataclasses.replace(boot, train_steps=self.train_steps)
        config = config.replace(bootstrap=boot)
        if self.detectors is not None:
            config = config.replace(detectors=self.detectors)
        return config


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- one case -----------------------------------------------------------------------------


def run_case(case: Case, settings: Settings) -> dict[str, Any]:
    """Run one case end to end; returns the JSON-able result (see the module docstring)."""
    start = time.perf_counter()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(
        prefix=f"bench-{case.name}-", dir=settings.work_dir
    ) as tmp_name:
        tmp = Path(tmp_name)
        split_dir = settings.datasets / case.dataset

        t = time.perf_counter()
        attack, summary = build_case(case, settings, tmp)
        poisoned = summary.out
        truth_by_id = read_truth(summary.truth)
        timings["poison"] = time.perf_counter() - t
        progress(f"{case.name}: {describe_build(case, summary)}; sanitizing")

        t = time.perf_counter()
        run_dir = tmp / "run"
        config = settings.config()
        if settings.expected_classes == "test":
            # The class distribution of the test split: what a user holding a validation
            # split passes as ``sanitize run --expected-classes``.
            counts = read_expected_counts(split_dir / "test.parquet", config.data)
            decision = dataclasses.replace(
                config.decision, expected_class_counts=expected_counts(counts)
            )
            config = config.replace(decision=decision)
        result = sanitize_dataset(poisoned, run_dir, config, keep_work=True)
        timings["sanitize"] = time.perf_counter() - t
        metrics = evaluate_run(run_dir, summary.truth)
        dec = metrics["decision"]
        progress(
            f"{case.name}: sanitize {timings['sanitize']:.0f} s; decision TPR {_f(dec['tpr'])} "
            f"FPR {_f(dec['fpr'])} removed {dec['removed']}"
        )

        art_results = None
        if settings.art:
            t = time.perf_counter()
            art_results = art_side_by_side(
                run_dir, truth_by_id, summary.n_poisoned / summary.n_rows, settings
            )
            timings["art"] = time.perf_counter() - t
            progress(
                f"{case.name}: ART {timings['art']:.0f} s; "
                + "; ".join(
                    f"{k} TPR {_f(v['tpr'])} FPR {_f(v['fpr'])}" for k, v in art_results.items()
                )
            )

        retrain = None
        if settings.retrain_epochs > 0:
            t = time.perf_counter()
            retrain = retrain_arms(
                case, attack, summary, run_dir, truth_by_id, split_dir, settings, progress
            )
            timings["retrain"] = time.perf_counter() - t

        if settings.keep_work:
            kept = (settings.work_dir or Path(tempfile.gettempdir())) / f"kept-{case.name}"
            _copy_tree(tmp, kept)

    timings["total"] = time.perf_counter() - start
    return {
        "case": dataclasses.asdict(case),
        "dirty_label": case.dirty_label,
        "targets": attack.target_classes(case.target),
        "rows": summary.n_rows,
        "n_poisoned": summary.n_poisoned,
        "poison_info": summary.info,
        "counts": result.counts,
        "stage_timings": result.report.get("stage_timings"),
        "detection": metrics,
        "art": art_results,
        "retrain": retrain,
        "retrain_epochs": settings.retrain_epochs,
        "test_rows": settings.test_rows,
        "machine": machine_description(settings.device),
        "config": config.to_dict(),
        "seconds": timings,
    }


def build_case(case: Case, settings: Settings, folder: Path) -> tuple[Any, Any]:
    """A case's data in ``folder``: its subset (``subset.parquet``), then that subset
    poisoned (``poisoned.parquet``) with its ground truth; returns the attack and the
    :class:`~sanitize.attacks.PoisonSummary`."""
    source = folder / "subset.parquet"
    write_subset(
        settings.datasets / case.dataset / "train.parquet",
        source,
        settings.rows,
        seed=settings.seed,
        subset=case.subset,
        side=case.side,
    )
    attack = get_attack(case.attack, **case.attack_params(settings.datasets))
    summary = poison_source(
        source,
        folder / "poisoned.parquet",
        attack,
        target=case.target,
        rate=case.rate,
        seed=settings.seed,
    )
    return attack, summary


def build_only(cases: Sequence[Case], settings: Settings) -> int:
    """Build every case's data (subset, poisons, ground truth, triggered test rows) in a
    temporary folder and print one line a case; no detection runs. Returns the number of
    cases that failed."""
    failed = 0
    for case in cases:
        with tempfile.TemporaryDirectory(
            prefix=f"build-{case.name}-", dir=settings.work_dir
        ) as tmp:
            try:
                attack, summary = build_case(case, settings, Path(tmp))
                test_images, test_labels = load_test_subset(
                    settings.datasets / case.dataset / "test.parquet",
                    settings.test_rows,
                    seed=settings.seed,
                    size=summary.height,
                    channels=summary.channels,
                )
                triggered, _ = attack.triggered_test_set(
                    test_images, test_labels, target=case.target
                )
            except Exception as exc:  # noqa: BLE001 - report every case, then fail
                failed += 1
                progress(f"{case.name}: FAILED {type(exc).__name__}: {exc}")
                continue
            progress(f"{case.name}: {describe_build(case, summary)}; {len(triggered)} ASR rows")
    return failed


def describe_build(case: Case, summary: Any) -> str:
    """One line on a case's data: rows, image size, poisons, attack and targets."""
    return (
        f"{summary.n_rows:,} rows of {summary.width}x{summary.height} ({case.subset}), "
        f"{summary.n_poisoned} poisoned ({case.attack} -> class {case.targets})"
    )


def write_subset(
    train: Path,
    out: Path,
    rows: int,
    *,
    seed: int,
    subset: str = "random",
    side: int | None = None,
) -> int:
    """The first ``rows`` rows of ``train`` after a seeded shuffle, as HF Parquet at ``out``.

    ``subset`` (one of ``SUBSETS``) shapes them: "longtail" takes the first rows of each
    class in the shuffle, long-tailed, instead; "neardup" appends near-duplicate copies of
    ``NEAR_DUP_SHARE`` of them. ``side`` resizes every image. Schema metadata (class names)
    is kept. Returns the number of rows written.
    """
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; known: {', '.join(SUBSETS)}")
    table = pq.read_table(train)
    order = np.random.default_rng(seed).permutation(table.num_rows)
    if subset == "longtail":
        labels = table.column("label").to_numpy()[order]
        order = order[long_tail_rows(labels, rows, ratio=LONG_TAIL_RATIO)]
    else:
        order = order[:rows]
    shaped = table.take(np.sort(order))  # sorted: the subset keeps the split's row order
    if subset == "neardup":
        shaped = with_near_duplicates(shaped, seed=seed)
    if side is not None:
        cells = shaped.column("image").to_pylist()
        shaped = with_images(shaped, [resized(c["bytes"], side) for c in cells], cells)
    pq.write_table(shaped, out, compression="zstd")
    return shaped.num_rows


def with_near_duplicates(table: pa.Table, *, seed: int) -> pa.Table:
    """``table`` and, appended, a near-duplicate copy of a seeded ``NEAR_DUP_SHARE`` of
    its rows (same label, image path prefixed ``neardup/``, a ``sample_id`` of its own)."""
    rng = np.random.default_rng([seed, 1])
    count = round(NEAR_DUP_SHARE * table.num_rows)
    picked = np.sort(rng.choice(table.num_rows, count, replace=False))
    copies = table.take(picked)
    cells = copies.column("image").to_pylist()
    payloads = [near_duplicate(c["bytes"], rng) for c in cells]
    paths = [f"neardup/{c['path']}" for c in cells]
    copies = with_images(copies, payloads, [{"path": p} for p in paths])
    if SAMPLE_ID in copies.column_names:  # a copy is a row of its own
        index = copies.schema.get_field_index(SAMPLE_ID)
        ids = copies.column(index).to_pylist()
        if pa.types.is_string(copies.schema.field(index).type):
            new_ids = [f"{i}-neardup" for i in ids]
        else:
            start = max(table.column(SAMPLE_ID).to_pylist()) + 1
            new_ids = list(range(start, start + len(ids)))
        field = copies.schema.field(index)
        copies = copies.set_column(index, field, pa.array(new_ids, field.type))
    return pa.concat_tables([table, copies])


def with_images(table: pa.Table, payloads: list[bytes], cells: list[dict]) -> pa.Table:
    """``table`` with its image column's bytes replaced by ``payloads`` (paths from ``cells``)."""
    column = table.schema.get_field_index("image")
    field = table.schema.field(column)
    images = pa.StructArray.from_arrays(
        [pa.array(payloads, pa.binary()), pa.array([c["path"] for c in cells], pa.string())],
        fields=list(field.type),
    )
    return table.set_column(column, field, images)


def load_test_subset(
    test: Path, rows: int, *, seed: int, size: int, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded subset of the test split, decoded to uint8 (n, channels, size, size)."""
    images, labels, _ = read_image_parquet(test, size=size, channels=channels)
    keep = np.sort(np.random.default_rng(seed + 1).permutation(len(labels))[:rows])
    return images[keep], labels[keep]


def retrain_arms(
    case: Case,
    attack: Any,
    summary: Any,
    run_dir: Path,
    truth_by_id: dict,
    split_dir: Path,
    settings: Settings,
    log: Callable[[str], None],
) -> dict[str, dict]:
    """Clean accuracy and ASR of a fresh network trained on each arm (see ``ALL_ARMS``)."""
    size, channels = summary.height, summary.channels
    source = open_source(str(summary.out), DataConfig())
    n_classes = len(source.class_names) if source.class_names else None

    images, labels, _ = read_image_parquet(summary.out, size=size, channels=channels)
    ids = pq.read_table(summary.out, columns=["sample_id"]).column("sample_id").to_pylist()
    is_poison = np.array([truth_by_id[i] for i in ids])
    ours_images, ours_labels, ours_weights = read_image_parquet(
        run_dir / "clean.parquet",
        size=size,
        channels=channels,
        weight_column="sample_weight",
    )
    test_images, test_labels = load_test_subset(
        split_dir / "test.parquet",
        settings.test_rows,
        seed=settings.seed,
        size=size,
        channels=channels,
    )
    triggered, triggered_labels = attack.triggered_test_set(
        test_images, test_labels, target=case.target
    )
    n_classes = n_classes or int(max(labels.max(), test_labels.max())) + 1
    arms = {
        "none": (images, labels, None),
        "true_clean": (images[~is_poison], labels[~is_poison], None),
        "ours": (ours_images, ours_labels, ours_weights),
        "ours_unweighted": (ours_images, ours_labels, None),
    }
    out = {}
    for arm in settings.arms:
        x, y, w = arms[arm]
        res = retrain_and_score(
            x,
            y,
            w,
            test_images,
            test_labels,
            triggered,
            triggered_labels,
            n_classes=n_classes,
            channels=channels,
            epochs=settings.retrain_epochs,
            seed=settings.seed,
            device=settings.device,
        )
        out[arm] = res
        log(
            f"{case.name}: retrain {arm:<10} acc {res['clean_accuracy']:.3f} "
            f"ASR {_f(res['attack_success_rate'])} ({res['seconds']:.0f} s)"
        )
    return out


# --- ART side by side ---------------------------------------------------------------------


def import_art(art_lib: Path | None) -> Any:
    """Import ART lazily, from ``art_lib`` (a ``pip install --target`` folder) when given."""
    if art_lib is not None and art_lib.is_dir() and str(art_lib) not in sys.path:
        sys.path.insert(0, str(art_lib))
    try:
        import art  # noqa: F401
        from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
        from art.estimators.classification import PyTorchClassifier
    except ImportError as exc:
        raise SystemExit(
            f"--art needs adversarial-robustness-toolbox ({exc}); install it as "
            "benchmarks/README.md says, or pass --art-lib"
        ) from None
    return ActivationDefence, SpectralSignatureDefense, PyTorchClassifier


def art_side_by_side(
    run_dir: Path, truth_by_id: dict, true_rate: float, settings: Settings
) -> dict[str, dict]:
    """ART's activation clustering and spectral signatures on our bootstrap model and data.

    ART reads the activations of the last entry of the classifier's ``layer_names`` and
    calls it the last hidden layer: its Keras wrapper leaves the output layer out of that
    list, its PyTorch wrapper lists the model's child modules as they are. The wrapper
    below registers the linear head before the feature body, so ART hooks the same pooled
    penultimate features our detectors read, not the logits.

    Runs, each on every usable row:

    ``art_ac``
        ``ActivationDefence.detect_poison`` with ART's defaults (nb_clusters=2, nb_dims=10,
        reduce="PCA", cluster_analysis="smaller").
    ``art_ss``
        ``SpectralSignatureDefense`` with ART's defaults (expected_pp_poison=0.33,
        eps_multiplier=1.5: the top 49.5% of every class by score is removed).
    ``art_ss_oracle``
        The same given the true poison rate as ``expected_pp_poison`` (an oracle: a real
        user does not know it).

    ActivationDefence takes no poison rate, so it has no oracle run. Its other size rule,
    ``cluster_analysis="relative-size"``, raises in ART 1.20.1 whenever a class has no
    small cluster (``cluster_id in np.where(...)`` on an empty array), so it is left out.
    """
    import torch
    from safetensors import safe_open
    from torch import nn

    from sanitize.model import NetSpec, load_checkpoint
    from sanitize.pipeline.paths import RunPaths

    ActivationDefence, SpectralSignatureDefense, PyTorchClassifier = import_art(settings.art_lib)
    paths = RunPaths.at(run_dir)
    with safe_open(str(paths.model_bootstrap), framework="pt") as fh:
        spec = NetSpec(**json.loads(fh.metadata()["spec"]))
    device = resolve_device(settings.device)
    model, normalizer = load_checkpoint(paths.model_bootstrap, spec=spec, device=device)
    rows = pq.read_table(paths.rows, columns=["sample_id", "y", "ok"])
    usable = np.flatnonzero(rows.column("ok").to_numpy(zero_copy_only=False))
    y = rows.column("y").to_numpy()[usable].astype(np.int64)
    ids = rows.column("sample_id").to_pylist()
    truth = np.array([truth_by_id[ids[i]] for i in usable])
    images = np.load(paths.images, mmap_mode="r")
    x = normalizer.apply(torch.from_numpy(np.ascontiguousarray(images[usable]))).numpy()

    class FeaturesLast(nn.Module):
        # Child order is what ART's layer_names lists: the head first, the body last.
        def __init__(self, net: nn.Module):
            super().__init__()
            self.head = net.head
            self.body = net.body

        def forward(self, batch: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(batch))

    classifier = PyTorchClassifier(
        model=FeaturesLast(model).eval(),
        loss=nn.CrossEntropyLoss(),
        input_shape=x.shape[1:],
        nb_classes=spec.n_classes,
        device_type="gpu" if device.type == "cuda" else "cpu",
    )
    y_onehot = np.eye(spec.n_classes, dtype=np.float32)[y]

    def scored(is_clean: Sequence[int], seconds: float, params: dict) -> dict:
        flagged = np.asarray(is_clean) == 0
        metrics = detection_metrics(flagged, flagged.astype(np.float32), truth)
        metrics.pop("auroc")  # ART returns flags; an AUROC of flags would mislead
        return {**metrics, "seconds": seconds, "params": params}

    results = {}
    defence = ActivationDefence(classifier, x, y_onehot)
    params = {"nb_clusters": 2, "nb_dims": 10, "reduce": "PCA", "cluster_analysis": "smaller"}
    np.random.seed(settings.seed)  # ART's MiniBatchKMeans draws from numpy's global state
    t = time.perf_counter()
    _, is_clean = defence.detect_poison(**params)
    results["art_ac"] = scored(is_clean, time.perf_counter() - t, params)
    # Evidence that ART read our penultimate features: its activations against features.npy.
    features = np.load(paths.features, mmap_mode="r")[usable]
    ours = np.concatenate([features[y == c] for c in range(spec.n_classes)])
    results["art_ac"]["max_feature_difference"] = float(
        np.abs(np.concatenate(defence.activations_by_class) - ours).max()
    )
    for key, rate in (("art_ss", None), ("art_ss_oracle", true_rate)):
        kwargs = {} if rate is None else {"expected_pp_poison": float(rate)}
        t = time.perf_counter()
        defence_ss = SpectralSignatureDefense(classifier, x, y_onehot, **kwargs)
        _, is_clean = defence_ss.detect_poison()
        params = {
            "expected_pp_poison": defence_ss.expected_pp_poison,
            "eps_multiplier": defence_ss.eps_multiplier,
        }
        results[key] = scored(is_clean, time.perf_counter() - t, params)
    return results


# --- report -------------------------------------------------------------------------------

ART_RUNS = {
    "art_ac": "ART AC (defaults)",
    "art_ss": "ART SS (defaults)",
    "art_ss_oracle": "ART SS (oracle rate)",
}


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _pair(a: Any, b: Any, digits: int = 2) -> str:
    return f"{_f(a, digits)} / {_f(b, digits)}"


def _triple(values: Sequence[Any], digits: int = 2) -> str:
    return " / ".join(_f(v, digits) for v in values)


def _mean(values: list) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def detector_names(results: list[dict]) -> list[str]:
    names: list[str] = []
    for r in results:
        for name in r.get("detection") or {}:
            if name != "decision" and name not in names:
                names.append(name)
    return names


def markdown(results: list[dict], header: dict[str, Any]) -> str:
    """The summary tables: detection and retraining, then (with --art) ART side by side."""
    detectors = detector_names(results)
    arms = [a for a in ALL_ARMS if any(a in (r.get("retrain") or {}) for r in results)]
    arms = arms or list(DEFAULT_ARMS)
    arm_names = " / ".join(ARM_LABELS[a] for a in arms)
    lines = [
        "# Detection benchmark",
        "",
        f"Command: `{header['command']}`",
        "",
        f"Machine: {header['machine']}",
        "",
        f"Code: {header['code']}. Wall time: {header['wall_text']} for {len(results)} case(s).",
        "",
        "Per detector: TPR / FPR of its own flags (score >= 0.5). Retraining: a fresh "
        f"network, {header['retrain_epochs']} epochs, same recipe and seed for every arm, "
        "on the poisoned set (none), its truly clean rows (true), clean.parquet drawn by "
        "sample_weight (ours) and, where run, clean.parquet drawn uniformly (unw); accuracy "
        f"on {header['test_rows']} test rows, ASR on their non-target rows with the "
        "trigger (none in the clean case). Mean: over the dirty-label attacks.",
        "",
    ]
    cols = ["case", "poisons", "TPR", "FPR", "removed", "AUROC"]
    cols += [f"{d} TPR / FPR" for d in detectors]
    cols += [f"acc {arm_names}", f"ASR {arm_names}", "min"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def row(label: str, r: dict | None, agg: dict | None = None) -> str:
        if r is not None and "error" in r:
            cells = [label, "failed: " + r["error"].splitlines()[0][:80]]
            return "| " + " | ".join(cells + [""] * (len(cols) - 2)) + " |"
        get = agg if agg is not None else _case_values(r, detectors, arms)
        cells = [
            label,
            _f(get["poisons"]) if not isinstance(get["poisons"], float) else _f(get["poisons"], 0),
            _f(get["tpr"]),
            _f(get["fpr"]),
            _f(get["removed"]) if isinstance(get["removed"], int) else _f(get["removed"], 1),
            _f(get["auroc"]),
        ]
        cells += [_pair(*get["det"][d]) for d in detectors]
        cells += [_triple(get["acc"]), _triple(get["asr"]), _f(get["minutes"], 1)]
        return "| " + " | ".join(cells) + " |"

    values = []
    for r in results:
        lines.append(row(r["name"], r))
        if "error" not in r:
            values.append((r, _case_values(r, detectors, arms)))
    dirty = [v for r, v in values if r.get("dirty_label")]
    if dirty:
        lines.append(row(f"**mean ({len(dirty)} dirty-label)**", None, _aggregate(dirty)))

    if any(r.get("art") for r in results):
        lines += [
            "",
            "## ART side by side (same bootstrap model, same features)",
            "",
            "TPR / FPR / removed. ART AC defaults: nb_clusters=2, nb_dims=10, reduce=PCA, "
            'cluster_analysis="smaller" (the smaller cluster of every class is removed); ART SS '
            "defaults: expected_pp_poison=0.33, eps_multiplier=1.5; **oracle**: ART SS given "
            "the true poison rate, which a real user does not know.",
            "",
        ]
        art_cols = ["case", "sanitize decision"] + list(ART_RUNS.values())
        lines += ["| " + " | ".join(art_cols) + " |", "|" + "---|" * len(art_cols)]
        art_rows = []
        for r in results:
            if "error" in r or not r.get("art"):
                continue
            d = r["detection"]["decision"]
            entries = [d] + [r["art"][k] for k in ART_RUNS]
            art_rows.append((r, entries))
            cells = [r["name"]] + [_art_cell(e["tpr"], e["fpr"], e["removed"]) for e in entries]
            lines.append("| " + " | ".join(cells) + " |")
        dirty_art = [entries for r, entries in art_rows if r.get("dirty_label")]
        if dirty_art:
            cells = [f"**mean ({len(dirty_art)} dirty-label)**"]
            for j in range(len(ART_RUNS) + 1):
                cells.append(
                    _art_cell(
                        _mean([e[j]["tpr"] for e in dirty_art]),
                        _mean([e[j]["fpr"] for e in dirty_art]),
                        _mean([float(e[j]["removed"]) for e in dirty_art]),
                    )
                )
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _art_cell(tpr: Any, fpr: Any, removed: Any) -> str:
    removed_text = _f(removed) if isinstance(removed, int) else _f(removed, 0)
    return f"{_f(tpr, 2)} / {_f(fpr, 3)} / {removed_text}"


def _case_values(r: dict, detectors: list[str], arms: list[str]) -> dict[str, Any]:
    det = r["detection"]
    dec = det["decision"]
    retrain = r.get("retrain") or {}
    return {
        "poisons": r["n_poisoned"],
        "tpr": dec["tpr"],
        "fpr": dec["fpr"],
        "removed": dec["removed"],
        "auroc": dec["auroc"],
        "det": {
            d: (det[d]["tpr"], det[d]["fpr"]) if d in det else (math.nan, math.nan)
            for d in detectors
        },
        "acc": [_get(retrain, a, "clean_accuracy") for a in arms],
        # No trigger in the clean case: its "ASR" would be a misclassification rate.
        "asr": [
            math.nan if r["case"]["attack"] == "none" else _get(retrain, a, "attack_success_rate")
            for a in arms
        ],
        "minutes": r["seconds"]["total"] / 60,
    }


def _get(retrain: dict, arm: str, key: str) -> float:
    return retrain.get(arm, {}).get(key, math.nan)


def _aggregate(values: list[dict]) -> dict[str, Any]:
    detectors = values[0]["det"].keys()
    return {
        "poisons": _mean([float(v["poisons"]) for v in values]),
        "tpr": _mean([v["tpr"] for v in values]),
        "fpr": _mean([v["fpr"] for v in values]),
        "removed": _mean([float(v["removed"]) for v in values]),
        "auroc": _mean([v["auroc"] for v in values]),
        "det": {
            d: (_mean([v["det"][d][0] for v in values]), _mean([v["det"][d][1] for v in values]))
            for d in detectors
        },
        "acc": [_mean([v["acc"][i] for v in values]) for i in range(len(values[0]["acc"]))],
        "asr": [_mean([v["asr"][i] for v in values]) for i in range(len(values[0]["asr"]))],
        "minutes": _mean([v["minutes"] for v in values]),
    }


def machine_description(device: str) -> str:
    import torch

    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            kib = int(fh.readline().split()[1])
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    dev = resolve_device(device)
    gpu = f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""
    return (
        f"{os.cpu_count()} CPU cores{mem}, {platform.machine()}, Python "
        f"{platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), device {dev}{gpu}"
    )


def code_description() -> str:
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown"
    return f"commit {commit}" + (" with uncommitted changes" if dirty else "")


# --- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/detection.py",
        description="Detection (TPR/FPR per detector) and retraining (clean accuracy, ASR) "
        "benchmark of sanitize on poisoned subsets of ../shared/datasets.",
    )
    parser.add_argument("--suite", default="cpu", choices=sorted(SUITES), help="case suite")
    parser.add_argument(
        "--cases", nargs="+", help="run only these case names of the suite (see --list)"
    )
    parser.add_argument("--list", action="store_true", help="list the suite's cases and exit")
    parser.add_argument(
        "--build-only",
        action="store_true",
        help="only build each case's data (subset, poisons, triggered test rows) and exit; "
        "no detection, no retraining",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "out" / "detection", help="results"
    )
    parser.add_argument("--rows", type=int, default=5000, help="train rows a case (5000)")
    parser.add_argument("--test-rows", type=int, default=2000, help="test rows a case (2000)")
    parser.add_argument(
        "--retrain-epochs",
        type=int,
        default=Settings.retrain_epochs,
        help=f"epochs of each retraining arm; 0 skips retraining ({Settings.retrain_epochs})",
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=ALL_ARMS,
        default=list(DEFAULT_ARMS),
        help="retraining arms (none true_clean ours); ours_unweighted: clean.parquet drawn "
        "uniformly",
    )
    parser.add_argument(
        "--train-steps", type=int, help="override bootstrap.train_steps of the default config"
    )
    parser.add_argument(
        "--detectors", nargs="+", help="detectors to run (default: the config's default set)"
    )
    parser.add_argument("--seed", type=int, default=0, help="subset, poison, model seed (0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (auto)")
    parser.add_argument(
        "--datasets", type=Path, default=DATASETS, help=f"datasets root ({DATASETS})"
    )
    parser.add_argument(
        "--expected-classes",
        choices=["test"],
        help="pass sanitize the class distribution of the dataset's test split "
        "(decision.expected_class_counts), as a user holding a validation split would",
    )
    parser.add_argument("--art", action="store_true", help="also run IBM ART's detectors")
    parser.add_argument(
        "--art-lib",
        type=Path,
        default=DEFAULT_ART_LIB,
        help="folder ART was pip-installed into with --target, put on sys.path for --art "
        "(default: benchmarks/out/art-lib when it exists)",
    )
    parser.add_argument(
        "--skip-existing", action="store_true", help="reuse <out>/<case>.json files found"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="only rebuild detection.md from the JSONs"
    )
    parser.add_argument("--work-dir", type=Path, help="parent of the temporary case folders")
    parser.add_argument(
        "--keep-work", action="store_true", help="copy each case's folder to kept-<case>"
    )
    parser.add_argument("--verbose", action="store_true", help="show sanitize's stage logs")
    return parser.parse_args(argv)


def _list_cases(cases: Sequence[Case]) -> None:
    for c in cases:
        shape = c.subset + (f", {c.side}x{c.side}" if c.side else "")
        print(
            f"{c.name:<30} {c.dataset:<8} {c.attack:<12} target {c.targets} rate {c.rate} ({shape})"
        )


def _run_cases(
    cases: Sequence[Case], settings: Settings, args: argparse.Namespace
) -> tuple[list[dict], int]:
    """Every case's result (reused from ``args.out`` where asked) and the failures' count."""
    results, failed = [], 0
    for i, case in enumerate(cases, 1):
        path = args.out / f"{case.name}.json"
        if (args.skip_existing or args.report_only) and path.exists():
            results.append(json.loads(path.read_text()))
            progress(f"[{i}/{len(cases)}] {case.name}: reused {path}")
            continue
        if args.report_only:
            continue
        progress(f"[{i}/{len(cases)}] {case.name}")
        try:
            result = run_case(case, settings)
        except Exception as exc:  # noqa: BLE001 - one failed case must not end the suite
            failed += 1
            progress(f"{case.name}: FAILED {type(exc).__name__}: {exc}")
            result = {"case": dataclasses.asdict(case), "error": f"{type(exc).__name__}: {exc}"}
        result["name"] = case.name
        result["code"] = code_description()
        path.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
        results.append(result)
        if "error" not in result:
            progress(f"{case.name}: done in {result['seconds']['total'] / 60:.1f} min")
    return results, failed


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cases = SUITES[args.suite]
    if args.list:
        _list_cases(cases)
        return 0
    if args.cases:
        known = {c.name for c in cases}
        unknown = [n for n in args.cases if n not in known]
        if unknown:
            print(f"unknown case(s) {unknown}; known: {', '.join(sorted(known))}", file=sys.stderr)
            return 2
        cases = tuple(c for c in cases if c.name in args.cases)
    if args.verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings(
        datasets=args.datasets,
        rows=args.rows,
        test_rows=args.test_rows,
        train_steps=args.train_steps,
        detectors=tuple(args.detectors) if args.detectors else None,
        retrain_epochs=args.retrain_epochs,
        arms=tuple(a for a in ALL_ARMS if a in args.arms),
        seed=args.seed,
        device=args.device,
        art=args.art,
        work_dir=args.work_dir,
        expected_classes=args.expected_classes,
        keep_work=args.keep_work,
        art_lib=args.art_lib,
    )
    if args.work_dir is not None:  # every case would fail on a missing parent folder
        args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.build_only:
        return 1 if build_only(cases, settings) else 0
    if args.art and not args.report_only:
        import_art(args.art_lib)  # fail now, not after the first case
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])

    start = time.perf_counter()
    results, failed = _run_cases(cases, settings, args)
    wall = time.perf_counter() - start
    wall_text = f"{wall / 60:.1f} min"
    code = code_description()
    if args.report_only:
        wall = sum(r.get("seconds", {}).get("total", 0.0) for r in results)
        wall_text = f"{wall / 60:.1f} min summed over the cases (they may have run at once)"
        # The cases' own record of the code they ran on, not the checkout rendering them.
        codes = sorted({r.get("code", "commit not recorded") for r in results})
        code = "; ".join(codes) if codes else code
    header = {
        "command": command,
        "machine": machine_description(args.device),
        "code": code,
        "wall_text": wall_text,
        "retrain_epochs": args.retrain_epochs,
        "test_rows": f"{args.test_rows:,}",
    }
    if args.report_only:
        # What the cases ran with, not this command's defaults or this machine.
        for key in ("machine", "retrain_epochs", "test_rows"):
            header[key] = recorded(results, key, header[key])
    text = markdown(results, header)
    (args.out / "detection.md").write_text(text)
    print(text)
    return 1 if failed else 0


def recorded(results: list[dict], key: str, fallback: str) -> str:
    """The values the cases' JSONs hold for ``key`` (``; ``-joined), else ``fallback``."""
    values = sorted(
        {f"{r[key]:,}" if isinstance(r[key], int) else r[key] for r in results if key in r}
    )
    return "; ".join(values) if values else str(fallback)


def _copy_tree(src: Path, dst: Path) -> None:
    import shutil

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
