"""One validated, frozen configuration object for a sanitize run.

The config is split in sections that follow the data flow (``data``, ``bootstrap``,
``detectors``, ``decision``). Every section is a frozen dataclass, so a config is
hashable and its :meth:`SanitizeConfig.fingerprint` can key cached stage outputs. The
whole config is written next to every output (``report.json``) with the code version.
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
# examples); known, but off by default until they show across attack families that they
# earn their place (benchmarks/RESULTS.md, "Model probes").
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
        Column whose values are every output's ``sample_id``; another name than the default
        must exist (and then no ``sample_id`` column may); no ``sample_id``: the row ordinal.
    image_size : int or None, default=None
        Side in pixels that every image is resized to, in [8, 512]; None: the median side
        of the first images read, within [``MIN_IMAGE_SIZE``, ``MAX_WORKING_SIZE``].
    channels : int or None, default=None
        1 (grey) or 3 (RGB); None: the mode most of the first images read have.
    batch_rows : int, default=2048
        Rows read and decoded at a time (bounds memory of the read stage).
    allow_external_paths : bool, default=False
        Read image paths outside the source's directory: absolute, ``..``, links out of an
        image folder, URLs (network fetches). Off: such rows are quarantined as unreadable.
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

    Dirty-label backdoors are learned within the first epochs, well before the hard clean
    samples (Li et al. 2021, "Anti-Backdoor Learning", Sec. 3); Adam without flip
    augmentation keeps a corner trigger in place, so the shortcut is learned fast.

    checkpoint : str or None, default=None
        Path to trained weights (``.safetensors`` or a ``torch.save`` state dict, loaded with
        ``weights_only=True``) of the built-in network; skips training of f_B.
    epochs : int or None, default=None
        Epochs of f_B training. None: train until an epoch's mean training loss falls below
        ``fit_loss``, within about ``train_steps`` optimizer steps. Per-sample losses of
        every epoch are kept.
    clean_epochs : int or None, default=None
        Epochs of the deconfounded model f_C used by the CBD detector; None: as many as f_B
        ran; 0 disables f_C.
    train_steps : int, default=1500
        Step budget of the automatic epoch count (at least 2 and at most 60 epochs). Rule:
        the shortcut is learned after a number of updates, not of passes: on 5,000 CIFAR-10
        rows with 1% BadNets poisons, 240 steps left the poisons' loss at 0.18 (clean 0.66)
        and the spectral signal weak (in-class AUROC 0.92); 480 steps brought it to 0.004
        (clean 0.18) and AUROC 0.99.
    fit_loss : float, default=0.2
        Mean training cross-entropy (nats) at which automatic training stops. Rule: once the
        model fits most of the set, it fits the poisons, the easiest rows; training on until
        it memorises everything erases the difference the detectors read (sample digits:
        activation-clustering TPR 0.98 at mean loss 0.007, 0.54 at 0.0003).
    batch_size : int, default=128
    lr : float, default=2e-3
        Adam learning rate.
    width : int, default=32
        Channels of the first conv block; blocks double it (32-64-128-256).
    device : str, default="auto"
        "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".
    max_train_rows : int, default=50000
        Cap on rows used to train (a stratified sample above it); embedding covers every row.
    precise_bn : bool, default=False
        Recompute the BatchNorm statistics for the final weights before embedding
        (``sanitize.model.train.precise_batch_norm``), so eval-mode losses match training.
        Rule for the default: on the CPU suite it raised the blend, patch and GTSRB cases by
        1-15 points of TPR but lost MNIST BadNets 5% (0.92 -> 0) and a held-out BadNets 3%
        (0.97 -> 0): the stale statistics leave the backdoor's units further out of scale,
        which the spectral detectors feed on (``benchmarks/RESULTS.md``, session 3).
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
        Detectors that must flag a row for it to be removed; None means a strict majority of
        the detectors that ran. Rule for the default: every detector's own threshold is
        calibrated to flag nothing on clean data, and each sees signals the others miss
        (a cluster, a direction, a loss gap), so one calibrated flag is enough evidence;
        the removal cap bounds the cost of a detector gone wrong.
    max_removal_fraction : float, default=0.25
        Cap on the share of rows removed; above it the highest poison scores are kept first.
    group_vote_min_rows : int, default=10
        Flags of one class a detector that votes by groups (CBD) needs there for them to
        count as votes. Rule: as ``refine_min_rows``; on the benchmark cases CBD's flags
        beyond the other detectors' were groups of poisons (39 in one class) and clean
        rows 1 to 5 a class.
    weight_clip : tuple of float, default=(0.05, 1.0)
        Clip range of the raw CBD weight w = l_B / (l_B + l_C) before it is normalised.
    weight_suspect_only : bool, default=True
        Weigh rows by CBD only in the classes the decision judged poisoned (at least
        ``weight_min_flagged`` rows removed); every other kept row weighs the same. Rule:
        CBD's weight also falls on the hard clean rows of every class; a 16-epoch
        retraining on clean CIFAR-10 (5,000 rows) lost 1.4 points of accuracy to it
        (0.638 against 0.652 unweighted) while the poisons it must down-weight, the
        ones detection missed, sit in the classes it found (SIG, filter, blend).
    weight_min_flagged : int, default=10
        Removed rows that make a class one the decision judged poisoned (weighted, and
        named in the report's verdict). Rule: as ``refine_min_rows``; fewer is a handful
        of outliers, not a poisoned group.
    weight_min_agreement : float, default=0.75
        In such a class the weights act only when they rank its removed rows below its
        kept ones, with an AUROC at least this (``info["weight_agreement"]``): the
        weights must point at the poison the detectors found. Rule: on the 11 classes the
        12-case suite weighted, the poisoned ones gave 0.90-0.99; a class of clean rows
        removed by mistake (GTSRB) 0.53; MNIST, whose bootstrap learns the digits before
        the patch so that CBD's premise fails, 0.42 (its missed poisons weighed 1.0, the
        kept clean rows less). 0.75 is midway between chance and the agreeing classes.
    orient : bool, default=True
        In a class where an oriented detector (early loss) flags more than half of the
        rows, keep only its flags there; where it flags a group (``refine_min_rows``) and
        most of the other flags there lie off its side, keep only the flags on its side
        (see ``sanitize.decision.orient``). Rule: on a clean-label SIG case poisoning 80% of
        its target class, activation clustering and spectral signatures removed the
        class's clean 20% (FPR 0.027); on a blend at 5% into a GTSRB class of 227 rows,
        spectral signatures flagged its clean 225 rows while the early loss flagged 155
        poisons (FPR 0.048).
    size_orient : bool, default=True
        In a class more than twice the other classes' median size, and a robust outlier
        among them (``size_z``), turn minority flags over to the rest of the class (see
        ``sanitize.decision.class_size``). Rule: the added rows of a dirty-label attack are
        then most of the class, so the smaller side the feature-space detectors flag is
        its clean rest: BadNets 15% on 5,000 MNIST rows removed 629 clean rows and no
        poison (spectral flagged the clean 41% of the target class, separation 6.2). On
        a clean CIFAR-10 set whose one class is three times the others' size, nothing was
        flagged there and nothing was turned over. Flags the bootstrap model cannot fit
        (median loss above log 2: a warp it did not learn, WaNet 15%) stay, and a class
        the size rules acted on loses at most the rows it gained.
    size_suspect : bool or None, default=None
        An inflated class (see ``size_orient``) with fewer than ``refine_min_rows`` flags
        is suspect by its size alone: the rows that two detectors' splits
        put on the side where the early loss's candidates are denser are flagged (see
        ``sanitize.decision.class_size``). On WaNet 10% (51% of its target poison) and
        blended noise at 15% on MNIST no detector singled the target out, and this flagged
        405 rows (305 poisons) and 780 rows (727 poisons). None: on exactly when
        ``expected_class_counts`` is given; otherwise only for an inflated class whose rows'
        nearest images disagree with their label far more often than the other classes'
        rows do. Rule for the default: sizes alone cannot tell a poisoned class from a
        clean set whose one class is naturally three times the others; on 4,990 clean
        CIFAR-10 rows built so (airplane 1,300, the others 410), suspicion by size removed
        879 airplanes. Against the class distribution the set should have, a class that
        gained rows has; and a naturally large clean class agrees with its labels more
        often than the others (4,990 clean MNIST rows with digit 0 at 1,300: z -12).
    expected_class_counts : tuple of (str, float) pairs, default=()
        The class distribution a clean delivery has: class name (or label value) and its
        count or share, e.g. from a validation split or the last clean delivery (``sanitize
        run --expected-classes``; a TOML table ``[decision.expected_class_counts]``). Only
        the ratios matter. When given, class sizes are judged as ``rows / expected`` (see
        ``size_orient``), and every class present in the data needs an entry.
    size_gain : float, default=1.25
        With ``expected_class_counts``, a class holding more than this many times the rows
        it would have (and a robust outlier by that ratio, ``size_z``) has gained rows even
        where the poison is not most of it, and without flags it is judged by its splits
        as above. Rule: blended noise at 3% on CIFAR-10 (a class of 500 gains 150 rows,
        1.3 times) and at 5% on MNIST: no detector flagged them, and their splits found
        0.920 and 0.936 of the poisons (FPR 0.009 and 0.021); no other benchmark case
        changed.
    size_z : float, default=3.5
        Robust z of a class's log size, among the other classes (MAD floored at the
        binomial spread), that makes it inflated. Rule: the usual median / MAD outlier cut
        (Iglewicz and Hoaglin 1993).
    growth_check : bool, default=True
        Withdraw the flags of a class whose size does not account for them (see
        ``sanitize.decision.growth``): a dirty-label group is rows its class gained, so a
        class that did not grow by about as many rows as a feature detector flags in it
        holds a natural mode, not a poisoned group. Classes the size rules judged, and
        those where the early loss flags a group (a clean-label attack adds no rows), keep
        their flags. Rule: on the 78 kept benchmark cases activation clustering split
        MNIST's ones and sevens (79-278 clean rows, FPR up to 0.059) in six cases, classes
        of 427-509 rows that had grown by 3-41 rows; every poisoned class flagged without
        the early loss had grown by 0.75 times its flags or more.
    growth_share : float, default=0.5
        Share of its flags a class must have grown by to keep them. Rule: the midpoint
        between no gain and a gain of the flags; measured, natural modes 0.04-0.42 (and
        below zero), poisoned classes 0.75-1.6. A natural mode of a naturally larger class
        is not seen: on a clean MNIST subset the ones (565 rows against a median of 497)
        kept 116 flags at 0.59; with ``expected_class_counts`` they were withdrawn.
    growth_spreads : float, default=2.0
        Flags, in robust spreads of the class sizes, below which the sizes cannot tell a
        gain from a natural spread, and the class keeps its flags. Rule: at 2 spreads the
        midpoint lies a spread from either answer; at 1% on 5,000 MNIST rows the target's
        49 flags are 1.5 spreads (33 rows), and the poisons are kept.
    growth_pixel_auc : float or None, default=0.75
        Where pixels can tell classes apart (``growth_pixel_reference``), a class that the
        sizes do not withdraw keeps its flags only when they look like other classes' images:
        the AUROC with which the flagged rows' nearest images carry their label less often
        than the class's other rows' do is at least this (see ``sanitize.decision.growth``).
        None: sizes alone decide. Rule: a dirty-label poison is an image of another class; a
        natural subgroup of a large class is not. In
        MNIST subsets the ones are naturally 1.1-1.2 times the other digits, and
        activation clustering, splitting them by slant, flagged 154 of a clean subset's
        ones (3.4% of its rows removed; AUROC about 0.5), while every poisoned MNIST
        group measured was at 0.94 or above.
    growth_pixel_reference : float, default=0.5
        Mean label agreement of the reference classes' rows (those no more than one size
        spread above the others) at which pixels can tell: most of a typical row's
        nearest images carry its label. Rule: MNIST 0.87; GTSRB 0.41 and CIFAR-10 0.27,
        where a blended trigger's poisons are each other's neighbours and a gained group
        need not look foreign (AUROC 0.39-0.50).
    refine : bool, default=True
        Re-draw the flagged group inside each class that has one with a cross-fitted linear
        discriminant on the class's top principal coordinates (see
        ``sanitize.decision.refine``); needs the shared class statistics.
    refine_components : int, default=16
        Principal coordinates a class's discriminant uses. Rule: SPECTRE's 16; on the kept
        CIFAR-10 probe cases 16 and 32 gave the same mean TPR, all 256 features 0.03 less
        (a 256-d discriminant fitted on 200 flagged rows overfits).
    refine_keep : float, default=0.05
        Cross-fitted probability below which a flagged row loses its flag. Rule: at 0.5
        (a plain re-classification) blended and warped triggers lost 3-5 points of TPR;
        at 0.05 no case lost TPR and the FPR of the patch attacks still fell.
    refine_add : float, default=0.15
        Cross-fitted probability at or above which an unflagged row of a refined class is
        flagged. Rule: inside a class already judged poisoned a missed poison costs more
        than a removed clean row: retrained for 16 epochs, 17 poisons left of 250 (filter,
        TPR 0.932) kept the attack success rate at 0.165 against the true-clean arm's
        0.079, and 41 left (SIG) at 0.295 against 0.016. On the 28 kept probe cases
        lowering it from 0.5 to 0.15 raised every case's TPR or kept it (blend 5% 0.920 ->
        0.944, GTSRB 0.872 -> 0.932, filter 0.932 -> 0.964) for at most 0.008 of FPR
        (Trojan); below 0.15 the FPR rose as fast as the TPR.
    refine_min_kept : float, default=0.75
        Share of a refined class's flags that the cross-fitted discriminant must keep (give
        ``p >= refine_keep``); below it the class loses every flag: its flagged rows share
        no direction in feature space, the premise of a trigger group. Rule: over the 94
        refined classes of the kept cases (sessions 6-9, 5,000 and 50,000 rows), every
        poisoned class kept 0.86-1.00 of its flags, and the ten classes under 0.70
        (0.15-0.69) held no poison: CBD's group of CIFAR-10 automobiles in the 50,000-row
        runs (up to 88 clean rows added), a clean 5,000-row set's 13 trucks, GTSRB
        frames. 0 disables the check.
    refine_min_rows : int, default=10
        Fewest flagged rows a class needs to be refined. Rule: the mixture tests'
        ``min_group_size``; a handful of tail rows is not a group to learn from.
    refine_folds : int, default=5
        Cross-fitting folds.
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
        if self.min_votes is not None and self.min_votes < 1:
            raise ConfigError(f"decision.min_votes must be >= 1, got {self.min_votes}")
        if not 0 < self.max_removal_fraction <= 1:
            raise ConfigError(
                f"decision.max_removal_fraction must be in (0, 1], got {self.max_removal_fraction}"
            )
        auc = self.growth_pixel_auc
        if auc is not None and not 0.5 < auc <= 1:
            raise ConfigError(f"decision.growth_pixel_auc must be in (0.5, 1] or None, got {auc}")
        if not 0 < self.growth_pixel_reference <= 1:
            raise ConfigError(
                "decision.growth_pixel_reference must be in (0, 1], got "
                f"{self.growth_pixel_reference}"
            )
        if self.group_vote_min_rows < 1:
            raise ConfigError(
                f"decision.group_vote_min_rows must be >= 1, got {self.group_vote_min_rows}"
            )
        if not self.size_z > 0:
            raise ConfigError(f"decision.size_z must be > 0, got {self.size_z}")
        if not self.size_gain > 1:
            raise ConfigError(f"decision.size_gain must be > 1, got {self.size_gain}")
        if not 0 < self.growth_share <= 1:
            raise ConfigError(f"decision.growth_share must be in (0, 1], got {self.growth_share}")
        if not self.growth_spreads >= 0:
            raise ConfigError(f"decision.growth_spreads must be >= 0, got {self.growth_spreads}")
        for name, count in self.expected_class_counts:
            if not (math.isfinite(count) and count > 0):
                raise ConfigError(
                    f"decision.expected_class_counts: class {name!r} has {count}; "
                    "counts must be finite and > 0"
                )
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

    detectors : tuple of str
        Detector names to run, in order; each writes a ``score_<name>`` column.
    detector_params : tuple of (str, tuple of (str, value)) pairs
        Keyword arguments per detector, e.g. ``(("spectral", (("z_threshold", 4.0),)),)``.
        Stored as tuples so the config stays hashable; :meth:`params_for` returns a dict.
    seed : int
        Seeds model initialisation, data order and every randomised detector.
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
