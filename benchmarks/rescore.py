"""Re-run the detectors and the decision on kept stage files, without training anything.

``benchmarks/detection.py --keep-work --work-dir W`` leaves one folder a case,
``W/kept-<case>/``, holding the poisoned set's ground truth and the run's stage files
(``run/.work``: features, loss histories, rows). This script scores the detectors of the
current code on those files and prints TPR / FPR / AUROC per detector and for the
decision, so a change to a detector or to the decision is measured on every case in
seconds instead of retraining the bootstrap model. The ground truth is read here, after
scoring, never by the detectors.

    python benchmarks/rescore.py /tmp/bench-work/kept-*  [--detectors a b ...]

With ``--art``, IBM ART's ``ActivationDefence`` and ``SpectralSignatureDefense`` run on each
case's kept bootstrap model and rows as ``benchmarks/detection.py --art`` runs them, and
print in the same table (no AUROC: ART returns flags), each followed by ours at its
operating point (``ours@art_...``: the rows of highest poison score, as many as ART
removed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sanitize.config import DataConfig, DecisionConfig, SanitizeConfig  # noqa: E402
from sanitize.data.expected import read_expected_counts  # noqa: E402
from sanitize.decision import decide  # noqa: E402
from sanitize.decision.class_size import expected_shares  # noqa: E402
from sanitize.decision.decide import Decision, size_rule_agreement  # noqa: E402
from sanitize.detect import DetectorContext, get_detector  # noqa: E402
from sanitize.detect.class_stats import ClassStatistics  # noqa: E402
from sanitize.detect.pixel_spectral import block_means  # noqa: E402
from sanitize.evaluate import detection_metrics, read_truth  # noqa: E402
from sanitize.pipeline.paths import REPORT_JSON, RunPaths  # noqa: E402


def load_case(kept: Path) -> dict:
    """Stage arrays of the usable rows of one kept case, and their ground truth."""
    paths = RunPaths.at(kept / "run")
    rows = pq.read_table(paths.rows, columns=["sample_id", "y", "ok"])
    ok = np.flatnonzero(rows.column("ok").to_numpy(zero_copy_only=False))
    ids = rows.column("sample_id").to_pylist()
    truth_by_id = read_truth(next(kept.glob("*.truth.csv")))
    classes = json.loads(paths.classes.read_text())
    # The run's seed (its folds, fits and samples), so that a re-score of unchanged code
    # reproduces the run's decision.
    report = paths.out / REPORT_JSON
    seed = int(json.loads(report.read_text())["config"]["seed"]) if report.exists() else 0

    def rows_of(path: Path) -> np.ndarray | None:
        return np.load(path)[ok] if path.exists() else None

    images = np.load(paths.images, mmap_mode="r")
    return {
        "name": kept.name.removeprefix("kept-"),
        "seed": seed,
        "classes": classes,
        "images": images,
        "image_rows": ok,
        "features": np.load(paths.features, mmap_mode="r")[ok],
        "labels": rows.column("y").to_numpy()[ok].astype(np.int64),
        "truth": np.array([truth_by_id[ids[i]] for i in ok]),
        "context": DetectorContext(
            n_classes=len(classes["names"]),
            seed=seed,
            loss_history=rows_of(paths.loss_history),
            loss_bootstrap=rows_of(paths.loss_bootstrap),
            loss_clean=rows_of(paths.loss_clean),
            pixels=block_means(images, ok),
            channel_norms=rows_of(paths.channel_norms),
            # As the pipeline's detect stage: the usable rows' images (``stamp`` reads them).
            images=images if ok.size == images.shape[0] else np.asarray(images[ok]),
        ),
    }


def expected_counts_from(datasets: Path, case_name: str) -> dict[str, float]:
    """Label counts of the test split of the case's dataset (its name's first part), read
    as ``sanitize run --expected-classes`` reads a validation split; empty when the case
    has no such dataset."""
    split = datasets / case_name.split("-", 1)[0] / "test.parquet"
    if not split.exists():
        return {}
    return read_expected_counts(split, DataConfig())


def score_detectors(case: dict, detectors: Sequence[str], config: SanitizeConfig) -> dict:
    """The detectors' results and every other input of the decision, as the pipeline
    computes them (class statistics once)."""
    stats = ClassStatistics.compute(case["features"], case["labels"], case["context"].n_classes)
    context = dataclasses.replace(case["context"], class_stats=stats)
    results, seconds = {}, {}
    for name in detectors:
        start = time.perf_counter()
        results[name] = get_detector(name, **config.params_for(name)).score(
            case["features"], case["labels"], context
        )
        seconds[name] = time.perf_counter() - start
    shared = any(get_detector(name).shares_class_stats for name in detectors)
    expected = expected_shares(
        config.decision.expected_class_counts,
        case["classes"]["names"],
        case["classes"]["values"],
        np.unique(case["labels"]),
    )
    return {
        "results": results,
        "seconds": seconds,
        "labels": case["labels"],
        "coordinates": stats.projections if shared else None,
        "expected": expected,
        "row_loss": case["context"].loss_bootstrap,
        "agreement": size_rule_agreement(
            case["images"],
            case["labels"],
            config.decision,
            expected_shares=expected,
            image_rows=case["image_rows"],
            seed=config.seed,
        ),
    }


def decide_case(scored: dict, config: SanitizeConfig) -> Decision:
    """The decision on a case's detector results (:func:`score_detectors`)."""
    return decide(
        scored["results"],
        len(scored["labels"]),
        config.decision,
        labels=scored["labels"],
        coordinates=scored["coordinates"],
        seed=config.seed,
        expected_shares=scored["expected"],
        row_loss=scored["row_loss"],
        label_agreement=scored["agreement"],
    )


def rescore(
    case: dict, detectors: Sequence[str], config: SanitizeConfig
) -> tuple[dict, np.ndarray]:
    """Detectors and decision as the pipeline runs them. Returns the metrics by detector
    (and "decision") and the decision's poison scores."""
    scored = score_detectors(case, detectors, config)
    decision = decide_case(scored, config)
    truth = case["truth"]
    out = {
        name: detection_metrics(r.flagged, r.score, truth) | {"seconds": scored["seconds"][name]}
        for name, r in scored["results"].items()
    }
    out["decision"] = detection_metrics(decision.flagged, decision.poison_score, truth)
    return out, decision.poison_score


def top_rows_metrics(score: np.ndarray, truth: np.ndarray, removed: int) -> dict:
    """TPR and FPR of removing the ``removed`` rows of highest ``score`` (ties by row)."""
    order = np.lexsort((np.arange(score.size), -score.astype(np.float64)))
    flagged = np.zeros(score.size, dtype=bool)
    flagged[order[:removed]] = True
    return detection_metrics(flagged, score, truth)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kept", nargs="+", type=Path, help="kept-<case> folders")
    parser.add_argument("--detectors", nargs="+", help="detector names (default: the config's)")
    parser.add_argument(
        "--decision",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="DecisionConfig fields, e.g. refine=false size_z=3.0",
    )
    parser.add_argument("--only-decision", action="store_true", help="print decision rows only")
    parser.add_argument(
        "--art", action="store_true", help="also run IBM ART's two defences on the kept model"
    )
    parser.add_argument(
        "--art-lib",
        type=Path,
        default=None,
        help="folder ART was pip-installed into with --target (default: detection.py's)",
    )
    parser.add_argument(
        "--expected-from",
        type=Path,
        metavar="DATASETS",
        help="pass each case the class counts of its dataset's test split "
        "(decision.expected_class_counts), e.g. ../shared/datasets",
    )
    args = parser.parse_args(argv)
    config = SanitizeConfig()
    if args.decision:
        fields = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.decision)}
        config = config.replace(decision=DecisionConfig(**fields))
    detectors = args.detectors or list(config.detectors)
    art_settings = None
    if args.art:
        from detection import DEFAULT_ART_LIB, Settings, import_art

        art_settings = Settings(art=True, art_lib=args.art_lib or DEFAULT_ART_LIB, device="cpu")
        import_art(art_settings.art_lib)  # fail now, not after the first case
    print(f"{'case':<30} {'detector':<22} {'TPR':>6} {'FPR':>6} {'AUROC':>6} {'rm':>5}")
    for kept in sorted(args.kept):
        if not (kept / "run" / ".work").exists():
            continue
        case = load_case(kept)
        case_config = config.replace(seed=case["seed"])
        if args.expected_from:
            counts = expected_counts_from(args.expected_from, case["name"])
            case_config = case_config.replace(
                decision=config.decision.replace(expected_class_counts=counts)
            )
        metrics, poison_score = rescore(case, detectors, case_config)
        for name, m in metrics.items():
            if args.only_decision and name != "decision":
                continue
            print(
                f"{case['name']:<30} {name:<22} {m['tpr']:6.3f} {m['fpr']:6.3f} "
                f"{m['auroc']:6.3f} {m['removed']:5d}"
            )
        if art_settings is not None:
            _print_art(kept, case, poison_score, art_settings)
    return 0


def _print_art(kept: Path, case: dict, poison_score: np.ndarray, art_settings: Any) -> None:
    """ART's two defences on the kept case, each beside ours at its operating point."""
    from detection import art_side_by_side

    truth = case["truth"]
    art = art_side_by_side(
        kept / "run", read_truth(next(kept.glob("*.truth.csv"))), float(truth.mean()), art_settings
    )
    for name, m in art.items():
        # Ours at ART's operating point: the same number of rows, by poison score.
        same = top_rows_metrics(poison_score, truth, m["removed"])
        for label, row in ((name, m), (f"ours@{name}", same)):
            print(
                f"{case['name']:<30} {label:<22} {row['tpr']:6.3f} {row['fpr']:6.3f} "
                f"{'-':>6} {row['removed']:5d}",
                flush=True,
            )


if __name__ == "__main__":
    raise SystemExit(main())
