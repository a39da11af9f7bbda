"""The model probes (``linf_activation``, ``adversarial_overlap``) beside the other detectors.

For each kept case folder (``benchmarks/detection.py --keep-work`` leaves
``W/kept-<case>/`` with the ground truth and the run's stage files), this script

1. recomputes the last-conv channel norms from the kept bootstrap model in one embedding
   pass, timed against the same pass without them (the embed stage's added cost);
2. runs the PGD probe and both new detectors on the kept features, timed;
3. reads the other detectors' scores and own flags from the run's stage files
   (``run/.work/detector_<name>.npz``);
4. prints, per detector (and the run's decision), the in-class AUROC (rows of the
   classes the poisons carry as labels, poison vs clean), its own TPR and FPR over all
   rows, and the seconds the new work took on this machine;
5. prints what the bootstrap model offers any probe at all, read with the ground truth:
   the best in-class AUROC of a single last-conv channel's l_inf (and l_1) norm, either
   direction, an upper bound for a probe that picks one unit; the share of the PGD
   examples that changed class which land in a target class; and the median final loss
   of the in-class poisons and clean rows (a trigger the model has not learned is fit,
   if at all, by memorising each poison).

The ground truth is read after scoring, never by the detectors.

    OMP_NUM_THREADS=1 python benchmarks/probe_signals.py /tmp/bench-work/kept-*
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sanitize.detect import DetectorContext, get_detector  # noqa: E402
from sanitize.evaluate import detection_metrics, read_truth  # noqa: E402
from sanitize.model import NetSpec, embed_rows, load_checkpoint  # noqa: E402
from sanitize.model.probe import adversarial_probe, probe_sample  # noqa: E402
from sanitize.pipeline.paths import REPORT_JSON, SCORES_FILE, RunPaths  # noqa: E402

NEW = ("linf_activation", "adversarial_overlap")


def run_case(kept: Path, repeats: int) -> dict:
    paths = RunPaths.at(kept / "run")
    rows = pq.read_table(paths.rows, columns=["sample_id", "y", "ok"])
    usable = np.flatnonzero(rows.column("ok").to_numpy(zero_copy_only=False))
    ids = rows.column("sample_id").to_pylist()
    y_all = rows.column("y").to_numpy().astype(np.int64)
    classes = json.loads(paths.classes.read_text())
    report = json.loads((paths.out / REPORT_JSON).read_text())
    seed = int(report["config"]["seed"])
    width = int(report["config"]["bootstrap"]["width"])
    spec = NetSpec(classes["channels"], len(classes["names"]), width)
    device = torch.device("cpu")
    model, normalizer = load_checkpoint(paths.model_bootstrap, spec=spec, device=device)
    images = np.load(paths.images, mmap_mode="r")
    seconds: dict[str, float] = {}

    # 1. The embedding pass without and with the channel norms, best of ``repeats``.
    with tempfile.TemporaryDirectory() as tmp:
        feats_out, norms_out = Path(tmp) / "f.npy", Path(tmp) / "n.npy"
        plain, with_norms = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            embed_rows(
                model, normalizer, images, y_all, usable, device=device, features_out=feats_out
            )
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            embed_rows(
                model,
                normalizer,
                images,
                y_all,
                usable,
                device=device,
                features_out=feats_out,
                norms_out=norms_out,
            )
            with_norms.append(time.perf_counter() - t)
        norms = np.load(norms_out)[usable]
    seconds["embed"] = min(plain)
    seconds["norms_added"] = max(0.0, min(with_norms) - min(plain))

    features = np.load(paths.features, mmap_mode="r")[usable]
    labels = y_all[usable]
    base = DetectorContext(n_classes=len(classes["names"]), seed=seed)

    results = {}
    t = time.perf_counter()
    results["linf_activation"] = get_detector("linf_activation").score(
        features, labels, dataclasses.replace(base, channel_norms=norms)
    )
    seconds["linf_activation"] = seconds["norms_added"] + time.perf_counter() - t

    detector = get_detector("adversarial_overlap")
    t = time.perf_counter()
    positions = probe_sample(len(usable), detector.n_probe, seed)
    probe = adversarial_probe(
        model,
        normalizer,
        images,
        y_all,
        usable[positions],
        eps=detector.eps,
        steps=detector.steps,
        step_size=detector.eps / 5,
        device=device,
    )
    probe = dataclasses.replace(probe, rows=positions)
    results["adversarial_overlap"] = detector.score(
        features, labels, dataclasses.replace(base, adversarial_probe=probe)
    )
    seconds["adversarial_overlap"] = time.perf_counter() - t
    loss = np.load(paths.loss_bootstrap)[usable]

    # 2. Ground truth, the other detectors' columns, and the metrics.
    truth_by_id = read_truth(next(kept.glob("*.truth.csv")))
    truth = np.array([truth_by_id[ids[i]] for i in usable])
    targets = np.unique(labels[truth])
    in_class = np.isin(labels, targets)
    old = sorted(
        f.stem.removeprefix("detector_")
        for f in paths.work.glob("detector_*.npz")
        if f.stem.removeprefix("detector_") not in NEW
    )
    decision = pq.read_table(
        paths.out / SCORES_FILE, columns=["sample_id", "poison_score", "flagged"]
    )
    by_id = {sid: i for i, sid in enumerate(decision.column("sample_id").to_pylist())}
    order = np.array([by_id[ids[i]] for i in usable])
    table = []
    for name in old + list(NEW) + ["decision"]:
        if name == "decision":
            score = decision.column("poison_score").to_numpy()[order]
            flagged = decision.column("flagged").to_numpy(zero_copy_only=False)[order]
        elif name in results:
            score, flagged = results[name].score, results[name].flagged
        else:  # the run's own scores and flags, one a usable row
            saved = np.load(paths.detector_scores(name))
            score, flagged = saved["score"], saved["flagged"]
        overall = detection_metrics(flagged, score, truth)
        inside = detection_metrics(flagged[in_class], score[in_class], truth[in_class])
        table.append(
            {
                "detector": name,
                "new": name in NEW,
                "auroc_in_class": inside["auroc"],
                "tpr": overall["tpr"],
                "fpr": overall["fpr"],
                "seconds": seconds.get(name),
            }
        )
    moved = probe.predicted != labels[probe.rows]
    ceiling = {}
    if truth.any():  # a clean set has no poisons to read a ceiling from
        ceiling = {
            "linf_channel": _best_unit(norms[in_class, 2], truth[in_class]),
            "l1_channel": _best_unit(norms[in_class, 0], truth[in_class]),
            "landing_share": float(np.isin(probe.predicted[moved], targets).mean())
            if moved.any()
            else float("nan"),
            "chance_share": float(len(targets) / len(classes["names"])),
            "loss_poison": float(np.median(loss[truth])),
            "loss_clean": float(np.median(loss[in_class & ~truth])),
        }
    return {
        "case": kept.name.removeprefix("kept-"),
        "ceiling": ceiling,
        "rows": int(len(usable)),
        "poisoned": int(truth.sum()),
        "targets": [int(c) for c in targets],
        "run_seconds": float(sum(v["seconds"] for v in report["stage_timings"].values())),
        "seconds": seconds,
        "probe": results["adversarial_overlap"].info["probe"],
        "table": table,
    }


def _best_unit(values: np.ndarray, truth: np.ndarray) -> float:
    """Best AUROC of one column of ``values`` against ``truth``, either direction."""
    best = 0.5
    for k in range(values.shape[1]):
        column = values[:, k]
        if np.ptp(column) > 0:
            auroc = detection_metrics(truth, column, truth)["auroc"]
            best = max(best, auroc, 1.0 - auroc)
    return best


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def wide(cases: list[dict]) -> str:
    """One row a case, one column a detector: in-class AUROC / TPR / FPR."""
    names = list(dict.fromkeys(row["detector"] for case in cases for row in case["table"]))
    head = [f"**{n}**" if n in NEW else n for n in names]
    lines = [
        "| case | " + " | ".join(head) + " |",
        "|---|" + "---|" * len(names),
    ]
    for case in cases:
        rows = {row["detector"]: row for row in case["table"]}
        cells = [
            " / ".join(_fmt(rows[n][k], 2) for k in ("auroc_in_class", "tpr", "fpr"))
            if n in rows
            else ""
            for n in names
        ]
        lines.append(f"| {case['case']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(cases: list[dict]) -> str:
    lines = [
        "| case | detector | in-class AUROC | TPR | FPR | seconds |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for case in cases:
        for row in case["table"]:
            name = f"**{row['detector']}**" if row["new"] else row["detector"]
            lines.append(
                f"| {case['case']} | {name} | {_fmt(row['auroc_in_class'])} | "
                f"{_fmt(row['tpr'])} | {_fmt(row['fpr'])} | {_fmt(row['seconds'], 1)} |"
            )
    lines += [
        "",
        "| case | rows | poisoned | whole run s | embed s | norms added s | "
        "probe + linf s | added share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        s = case["seconds"]
        added = s["linf_activation"] + s["adversarial_overlap"]
        lines.append(
            f"| {case['case']} | {case['rows']} | {case['poisoned']} | "
            f"{case['run_seconds']:.0f} | {s['embed']:.1f} | {s['norms_added']:.1f} | "
            f"{added:.1f} | {100 * added / case['run_seconds']:.1f}% |"
        )
    lines += [
        "",
        "| case | best l_inf channel AUROC | best l_1 channel AUROC | PGD landings in target "
        "(chance) | median loss poison / clean |",
        "|---|---:|---:|---:|---:|",
    ]
    for case in cases:
        c = case["ceiling"]
        if not c:
            continue
        lines.append(
            f"| {case['case']} | {c['linf_channel']:.3f} | {c['l1_channel']:.3f} | "
            f"{_fmt(c['landing_share'], 2)} ({c['chance_share']:.2f}) | "
            f"{c['loss_poison']:.3f} / {c['loss_clean']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kept", nargs="+", type=Path, help="kept-<case> folders")
    parser.add_argument("--repeats", type=int, default=2, help="embedding passes timed (2)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--wide", action="store_true", help="also a case x detector table (AUROC / TPR / FPR)"
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cases = []
    for kept in args.kept:
        if not (kept / "run" / SCORES_FILE).exists():
            print(f"skip {kept}: no finished run", file=sys.stderr)
            continue
        print(f"{kept.name} ...", file=sys.stderr, flush=True)
        cases.append(run_case(kept, args.repeats))
    if args.wide:
        print(wide(cases) + "\n")
    print(markdown(cases))
    if args.json:
        args.json.write_text(json.dumps(cases, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
