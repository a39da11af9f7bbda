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
import re
import shlex
import subprocess
import sys
import tempfile
import time
import tomllib
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
from sanitize.config import DataConfig  # noqa: E402
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


# Suites live in benchmarks/suites, one TOML file a suite named after it: the file's leading
# comment says when and why the suite was written down, and each [[case]] table holds a
# Case's fields (name, dataset, attack, target, rate, subset, side; left out: the default)
# and its attack parameters as params.<key> = value lines, in order. A table value becomes a
# tuple of (key, value) pairs, an array a tuple, and "{toolbox}" / "{backdoorbench}" in a
# string the trigger folder under the datasets root.
SUITES_DIR = Path(__file__).resolve().parent / "suites"
TOOLBOX = "triggers/backdoor-toolbox"
BACKDOORBENCH = "triggers/BackdoorBench"
PLACEHOLDERS = {"toolbox": TOOLBOX, "backdoorbench": BACKDOORBENCH}
# The tuning suites come first, then the held-out ones in natural order (heldout7 < heldout7b
# < heldout9b < heldout11).
LEADING_SUITES = ("cpu", "wide", "rates")


def _from_toml(value: Any, where: str) -> Any:
    """A suite file's parameter value as ``Case.params`` holds it."""
    if isinstance(value, dict):
        return tuple((k, _from_toml(v, where)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(_from_toml(v, where) for v in value)
    if isinstance(value, str):

        def expand(match: re.Match) -> str:
            if match[1] not in PLACEHOLDERS:
                raise ValueError(f"{where}: unknown placeholder {match[0]} in {value!r}")
            return PLACEHOLDERS[match[1]]

        return re.sub(r"\{(\w*)\}", expand, value)
    return value


def load_suite(path: Path) -> tuple[Case, ...]:
    """The cases of one suite file, in file order."""
    with path.open("rb") as f:
        data = tomllib.load(f)
    if set(data) != {"case"}:
        raise ValueError(f"{path}: expected only [[case]] tables, found {sorted(data)}")
    cases = []
    for i, fields in enumerate(data["case"], 1):
        where = f"{path} case {i} ({fields.get('name', '?')})"
        fields["params"] = _from_toml(fields.get("params", {}), where)
        if "rate" in fields:  # "rate = 0" is an integer in TOML
            fields["rate"] = float(fields["rate"])
        try:
            cases.append(Case(**fields))
        except TypeError as error:
            raise ValueError(f"{where}: {error}") from None
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: a case name is used twice")
    return tuple(cases)


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def load_suites(folder: Path = SUITES_DIR) -> dict[str, tuple[Case, ...]]:
    """Every ``<suite>.toml`` of ``folder`` by suite name: LEADING_SUITES, then the rest in
    natural order."""
    paths = {p.stem: p for p in folder.glob("*.toml")}
    rest = sorted(set(paths) - set(LEADING_SUITES), key=_natural)
    order = [name for name in LEADING_SUITES if name in paths] + rest
    return {name: load_suite(paths[name]) for name in order}


SUITES: dict[str, tuple[Case, ...]] = load_suites()


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
        boot = config.bootstrap.replace(device=self.device)
        if self.train_steps is not None:
            boot = boot.replace(train_steps=self.train_steps)
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
            config = config.replace(decision=config.decision.replace(expected_class_counts=counts))
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


def _table_row(label: str, get: dict, detectors: list[str]) -> str:
    """One row of the detection table from a case's (or the mean's) values."""
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
    values = []
    for r in results:
        if "error" in r:
            cells = [r["name"], "failed: " + r["error"].splitlines()[0][:80]]
            lines.append("| " + " | ".join(cells + [""] * (len(cols) - 2)) + " |")
            continue
        values.append((r, _case_values(r, detectors, arms)))
        lines.append(_table_row(r["name"], values[-1][1], detectors))
    dirty = [v for r, v in values if r.get("dirty_label")]
    if dirty:
        label = f"**mean ({len(dirty)} dirty-label)**"
        lines.append(_table_row(label, _aggregate(dirty), detectors))

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


def _header(args: argparse.Namespace, command: str, results: list[dict], wall: float) -> dict:
    """What the summary says about the run: command, machine, code, wall time, settings."""
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
    return header


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
    header = _header(args, command, results, time.perf_counter() - start)
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
