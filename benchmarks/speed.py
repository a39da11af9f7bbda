"""Speed and memory: rows/s of every stage and peak RSS of `sanitize run` at several sizes,
and the detector stage against IBM ART's on the same features, timed in one process.

Two parts, both on CIFAR-10's train split (``../shared/datasets/cifar10/train.parquet``):

1. ``--sizes`` (default 4,000 and 40,000): the first N rows of the split (repeated, with
   distinct ``sample_id``s, past its 50,000) as an HF-layout Parquet file; ``sanitize run``
   on it as a subprocess, wall time and peak RSS (``ru_maxrss`` from ``os.wait4``: the
   largest of the process and its descendants, e.g. Prefect's server), and a sampler of
   ``/proc/<pid>/status`` every 0.2 s for the split of the ``sanitize`` process's own peak
   into anonymous memory and mapped-file pages (``RssAnon`` / ``RssFile``: pages of a
   memory-mapped ``images.npy`` or ``features.npy`` that were touched count as RSS, but the
   kernel can drop them). Stage timings come from the run's ``report.json``. With the
   run's stage files kept, activation clustering is then timed in this process on the
   run's features with faiss k-means and with scikit-learn's.
2. ``--compare`` (default on): BadNets (3x3 checkerboard, 5%, target 0) planted with
   ``sanitize poison`` in ``--compare-rows`` rows (50,000), one ``sanitize run`` with a
   ``--compare-width`` (64: 512-d features) bootstrap network and ``--compare-steps``
   training steps (the f_C model off: CBD is not compared), then, in this process, on
   the run's ``features.npy``: our detectors (activation clustering with faiss and with
   scikit-learn k-means, spectral, SPECTRE, early loss) and the decision, against ART
   1.20.1's ``ActivationDefence.detect_poison`` (its defaults) and
   ``SpectralSignatureDefense.detect_poison`` (its defaults), given the same features
   (ART's ``get_activations`` returns them, so only detection work is timed). Ours
   include the per-class statistics they share (``sanitize.detect.class_stats``, the
   pipeline's ``class_stats`` stage), timed once. Every detector runs with the same
   thread count (``sanitize.pipeline.threads``); each time is the median of three calls. TPR /
   FPR against the ground truth for each.

ART is not a dependency: it is imported from ``--art-lib`` (default
``benchmarks/out/art-lib``, see ``benchmarks/README.md``). Output: ``<out>/speed.json`` and
``<out>/speed.md`` (printed too).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from detection import (  # noqa: E402
    DATASETS,
    DEFAULT_ART_LIB,
    code_description,
    import_art,
    machine_description,
)

from sanitize.config import DecisionConfig  # noqa: E402
from sanitize.decision import decide  # noqa: E402
from sanitize.detect import DetectorContext, DetectorResult, get_detector  # noqa: E402
from sanitize.detect.class_stats import ClassStatistics  # noqa: E402
from sanitize.detect.kmeans import BACKEND_ENV, faiss_backend  # noqa: E402
from sanitize.evaluate import detection_metrics, read_truth  # noqa: E402
from sanitize.pipeline.paths import RunPaths  # noqa: E402
from sanitize.pipeline.threads import THREADS_ENV, pinned_threads, stage_threads  # noqa: E402

STAGE_ORDER = (
    "read",
    "bootstrap",
    "embed",
    "clean_model",
    "class_stats",
    "detect",
    "decide",
    "export",
)
OUR_DETECTORS = ("activation_clustering", "spectral", "spectre", "early_loss")
SHARED = "class statistics (shared)"
# Rule: the median of three calls of each detector, ours and ART's, irons out a scheduler
# hiccup on a shared machine without tripling a benchmark that already takes minutes.
REPEATS = 3


# --- sources ------------------------------------------------------------------------------


def build_source(train: Path, rows: int, out: Path) -> Path:
    """The first ``rows`` rows of ``train`` (cycled when it has fewer), ``sample_id`` 0..rows-1."""
    if out.exists():
        return out
    pf = pq.ParquetFile(train)
    schema = pf.schema_arrow.append(pa.field("sample_id", pa.int64()))
    tmp = out.with_name(out.name + ".partial")
    written = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        while written < rows:
            for batch in pf.iter_batches(batch_size=4096):
                take = min(batch.num_rows, rows - written)
                ids = pa.array(np.arange(written, written + take, dtype=np.int64))
                part = batch.slice(0, take)
                writer.write_batch(
                    pa.record_batch([*part.columns, ids], schema=schema), row_group_size=4096
                )
                written += take
                if written == rows:
                    break
    os.replace(tmp, out)
    return out


# --- one measured run ---------------------------------------------------------------------


def _proc_kib(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                if name in keys:
                    values[name] = int(rest.split()[0])
    except (OSError, ValueError):
        pass
    return values


def measured(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd``: wall seconds, exit status, peak RSS of the tree, the main process's split."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for key, value in _proc_kib(proc.pid, tuple(peaks)).items():
                peaks[key] = max(peaks[key], value)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    return {
        "cmd": cmd,
        "returncode": proc.returncode,
        "wall_seconds": time.perf_counter() - start,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        "sampled_peak_mib": {k: v / 1024 for k, v in peaks.items()},
        "output_tail": output[-3000:],
    }


def sanitize_cmd() -> list[str]:
    """The ``sanitize`` command of this interpreter's environment, else ``python -m``."""
    script = Path(sys.executable).with_name("sanitize")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sanitize_cli"]


def run_size(source: Path, out: Path, extra: list[str], env: dict[str, str]) -> dict[str, Any]:
    if out.exists():
        shutil.rmtree(out)
    cmd = sanitize_cmd() + ["run", str(source), "--out", str(out), "--keep-work", *extra]
    result = measured(cmd, env)
    if result["returncode"] != 0:
        raise SystemExit(f"sanitize run failed ({result['returncode']}):\n{result['output_tail']}")
    report = json.loads((out / "report.json").read_text())
    result["stage_timings"] = report["stage_timings"]
    result["device"] = report.get("device")
    result["rows"] = report["stage_timings"]["read"]["rows"]
    result["stage_seconds"] = sum(s["seconds"] for s in report["stage_timings"].values())
    return result


# --- detectors in this process ------------------------------------------------------------


def load_work(run: Path) -> dict[str, Any]:
    paths = RunPaths.at(run)
    table = pq.read_table(paths.rows, columns=["sample_id", "y", "ok"])
    usable = np.flatnonzero(table.column("ok").to_numpy(zero_copy_only=False))
    y = table.column("y").to_numpy().astype(np.int64)
    n_classes = len(json.loads(paths.classes.read_text())["names"])

    def optional(path: Path) -> np.ndarray | None:
        if not path.exists():
            return None
        values = np.load(path)
        return None if values.ndim == 2 and values.shape[1] == 0 else values[usable]

    context = DetectorContext(
        n_classes=n_classes,
        seed=0,
        loss_history=optional(paths.loss_history),
        loss_bootstrap=optional(paths.loss_bootstrap),
        loss_clean=optional(paths.loss_clean),
    )
    features = np.asarray(np.load(paths.features, mmap_mode="r")[usable])
    ids = table.column("sample_id").to_numpy()[usable]
    return {"features": features, "y": y[usable], "context": context, "ids": ids}


def median_time(fn: Callable[[], Any], repeats: int = REPEATS) -> tuple[Any, float]:
    """``fn()``'s result and its median wall time over ``repeats`` calls."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return result, float(np.median(seconds))


def timed_detector(
    name: str,
    work: dict[str, Any],
    kmeans_backend: str | None = None,
    stats: ClassStatistics | None = None,
):
    """One detector on ``work``'s features with the stage's thread count; (result, seconds).

    ``stats``: the shared per-class statistics handed to the detector, as the pipeline's
    ``class_stats`` stage does (their own time is measured apart).
    """
    before = os.environ.get(BACKEND_ENV)
    if kmeans_backend is not None:
        os.environ[BACKEND_ENV] = kmeans_backend
    context = dataclasses.replace(work["context"], class_stats=stats)
    try:
        with pinned_threads(stage_threads()):
            result, seconds = median_time(
                lambda: get_detector(name).score(work["features"], work["y"], context)
            )
    finally:
        if before is None:
            os.environ.pop(BACKEND_ENV, None)
        else:
            os.environ[BACKEND_ENV] = before
    return result, seconds


def art_detect(work: dict[str, Any], art_lib: Path, seed: int) -> dict[str, Any]:
    """ART's two defences with their defaults on ``work``'s features; flags and seconds."""
    import torch
    from torch import nn

    ActivationDefence, SpectralSignatureDefense, PyTorchClassifier = import_art(art_lib)
    x, y = work["features"], work["y"]
    n_classes = work["context"].n_classes
    classifier = PyTorchClassifier(
        model=nn.Sequential(nn.Linear(x.shape[1], n_classes)),
        loss=nn.CrossEntropyLoss(),
        input_shape=x.shape[1:],
        nb_classes=n_classes,
        device_type="cpu",
    )
    # The features are the activations: ART's detection work only, no forward pass.
    classifier.get_activations = lambda x, layer=None, batch_size=128, framework=False: x
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    out: dict[str, Any] = {}

    def art_ac() -> np.ndarray:
        np.random.seed(seed)  # ART's MiniBatchKMeans draws from numpy's global state
        _, is_clean = ActivationDefence(classifier, x, onehot).detect_poison(
            nb_clusters=2, nb_dims=10, reduce="PCA", cluster_analysis="smaller"
        )
        return np.asarray(is_clean) == 0

    def art_ss() -> np.ndarray:
        _, is_clean = SpectralSignatureDefense(classifier, x, onehot).detect_poison()
        return np.asarray(is_clean) == 0

    with pinned_threads(stage_threads()), torch.no_grad():
        out["art_ac"] = median_time(art_ac)
        out["art_ss"] = median_time(art_ss)
    return out


def compare(run: Path, truth_csv: Path, art_lib: Path, seed: int) -> dict[str, Any]:
    """Our detectors and ART's on the same features of ``run``; seconds and TPR / FPR."""
    work = load_work(run)
    truth_by_id = read_truth(truth_csv)
    truth = np.array([truth_by_id[i] for i in work["ids"].tolist()], dtype=bool)

    def rates(flagged: np.ndarray) -> dict[str, Any]:
        m = detection_metrics(flagged, flagged.astype(np.float32), truth)
        return {"tpr": m["tpr"], "fpr": m["fpr"], "removed": int(flagged.sum())}

    ours: dict[str, Any] = {}
    with pinned_threads(stage_threads()):
        stats, seconds = median_time(
            lambda: ClassStatistics.compute(work["features"], work["y"], work["context"].n_classes)
        )
    ours[SHARED] = {"seconds": seconds, "tpr": None, "fpr": None, "removed": None}
    results: dict[str, DetectorResult] = {}
    for name in OUR_DETECTORS:
        backends = [None, "sklearn"] if name == "activation_clustering" else [None]
        for backend in backends:
            result, seconds = timed_detector(name, work, backend, stats)
            key = name if backend is None else f"{name}[sklearn k-means]"
            ours[key] = {"seconds": seconds, **rates(result.flagged)}
            if backend is None:
                results[name] = result
    decision, seconds = median_time(
        lambda: decide(
            results,
            len(truth),
            DecisionConfig(),
            labels=work["y"],
            coordinates=stats.projections,
            seed=seed,
        )
    )
    ours["decide"] = {"seconds": seconds, **rates(decision.flagged)}
    art = art_detect(work, art_lib, seed)
    theirs = {k: {"seconds": s, **rates(flags)} for k, (flags, s) in art.items()}
    either = art["art_ac"][0] | art["art_ss"][0]
    ours_total = sum(ours[k]["seconds"] for k in (SHARED, *OUR_DETECTORS, "decide"))
    ours_sklearn = ours_total - ours["activation_clustering"]["seconds"]
    ours_sklearn += ours["activation_clustering[sklearn k-means]"]["seconds"]
    art_total = sum(v["seconds"] for v in theirs.values())
    return {
        "rows": int(len(truth)),
        "feature_dim": int(work["features"].shape[1]),
        "poisons": int(truth.sum()),
        "threads": stage_threads(),
        "kmeans_backend": faiss_backend() or "sklearn",
        "ours": ours,
        "ours_total_seconds": ours_total,
        "ours_total_seconds_sklearn_kmeans": ours_sklearn,
        "ours_decision": rates(decision.flagged),
        "art": theirs,
        "art_total_seconds": art_total,
        "art_either": rates(either),
        "ratio_art_over_ours": art_total / ours_total,
    }


# --- report -------------------------------------------------------------------------------


def _stage_rows(timings: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Stage -> (seconds, rows/s); the detect_* stages summed as 'detect'."""
    out: dict[str, tuple[float, float]] = {}
    detect = [v for k, v in timings.items() if k.startswith("detect_")]
    for name in STAGE_ORDER:
        if name == "detect":
            if detect:
                seconds = sum(v["seconds"] for v in detect)
                out[name] = (seconds, detect[0]["rows"] / max(seconds, 1e-9))
        elif name in timings:
            out[name] = (timings[name]["seconds"], timings[name]["rows_per_second"])
    for name, v in timings.items():
        if name.startswith("detect_"):
            out[name] = (v["seconds"], v["rows_per_second"])
    return out


def _stage_table(sizes: list[dict]) -> list[str]:
    """The head and one row a stage of the table of stage seconds and rows per second."""
    header = ["stage"] + [f"{s['rows']:,} rows: s" for s in sizes]
    header += [f"{s['rows']:,} rows: rows/s" for s in sizes]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    per = [_stage_rows(s["stage_timings"]) for s in sizes]
    for name in dict.fromkeys(k for p in per for k in p):
        cells = [name]
        cells += [f"{p[name][0]:.2f}" if name in p else "-" for p in per]
        cells += [f"{p[name][1]:,.0f}" if name in p else "-" for p in per]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Command: `{result['command']}`",
        "",
        f"Machine: {result['machine']}; load average before: {result['load_before']}, "
        f"after: {result['load_after']}",
        "",
        f"Code: {result['code']}. {THREADS_ENV}={result['threads']}. "
        f"k-means backend: {result['kmeans_backend']}.",
        "",
    ]
    sizes = result["sizes"]
    if sizes:
        lines += _stage_table(sizes)
        cells = ["**stages, sum**"] + [f"{s['stage_seconds']:.1f}" for s in sizes]
        cells += [f"{s['rows'] / s['stage_seconds']:,.0f}" for s in sizes]
        lines.append("| " + " | ".join(cells) + " |")
        cells = ["**`sanitize run`, wall**"] + [f"{s['wall_seconds']:.1f}" for s in sizes]
        cells += [f"{s['rows'] / s['wall_seconds']:,.0f}" for s in sizes]
        lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "| rows | peak RSS, MiB | main process: anon / file-backed peak, MiB |"]
        lines.append("|---:|---:|---|")
        for s in sizes:
            p = s["sampled_peak_mib"]
            lines.append(
                f"| {s['rows']:,} | {s['peak_rss_mib']:,.0f} | "
                f"{p['RssAnon']:,.0f} / {p['RssFile']:,.0f} |"
            )
        if len(sizes) >= 2:
            growth = sizes[-1]["peak_rss_mib"] / sizes[0]["peak_rss_mib"]
            lines += [
                "",
                f"Peak RSS grows {growth:.2f}x from {sizes[0]['rows']:,} to "
                f"{sizes[-1]['rows']:,} rows (target < 1.5x).",
            ]
        ac = [s for s in sizes if "ac_kmeans" in s]
        if ac:
            lines += ["", "| rows | activation clustering, faiss k-means, s | sklearn k-means, s |"]
            lines.append("|---:|---:|---:|")
            for s in ac:
                a = s["ac_kmeans"]
                lines.append(f"| {s['rows']:,} | {a['faiss']:.2f} | {a['sklearn']:.2f} |")
    c = result.get("compare")
    if c:
        run = result["compare_run"]
        p = run["sampled_peak_mib"]
        lines += [
            "",
            f"Comparison run (`sanitize run`, {run['rows']:,} rows, its own config): "
            f"{run['wall_seconds']:.1f} s wall, {run['stage_seconds']:.1f} s in stages, "
            f"peak RSS {run['peak_rss_mib']:,.0f} MiB (anon {p['RssAnon']:,.0f}, "
            f"file-backed {p['RssFile']:,.0f}).",
        ]
        lines += [
            "",
            f"Detector stage on the same {c['rows']:,} x {c['feature_dim']} features "
            f"({c['poisons']:,} BadNets poisons), one process, {c['threads']} thread(s):",
            "",
            "| detector | seconds | TPR | FPR | removed |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, v in c["ours"].items():
            if v["tpr"] is None:
                lines.append(f"| ours: {key} | {v['seconds']:.2f} | - | - | - |")
                continue
            lines.append(
                f"| ours: {key} | {v['seconds']:.2f} | {v['tpr']:.3f} | {v['fpr']:.3f} | "
                f"{v['removed']:,} |"
            )
        for key, v in c["art"].items():
            lines.append(
                f"| ART: {key} | {v['seconds']:.2f} | {v['tpr']:.3f} | {v['fpr']:.3f} | "
                f"{v['removed']:,} |"
            )
        d, e = c["ours_decision"], c["art_either"]
        lines += [
            f"| **ours, statistics + 4 detectors + decision** | {c['ours_total_seconds']:.2f} | "
            f"{d['tpr']:.3f} | {d['fpr']:.3f} | {d['removed']:,} |",
            f"| **ART, AC + SS (flag by either)** | {c['art_total_seconds']:.2f} | "
            f"{e['tpr']:.3f} | {e['fpr']:.3f} | {e['removed']:,} |",
            "",
            f"ART / ours time ratio: {c['ratio_art_over_ours']:.1f}x "
            f"(ours with scikit-learn k-means: {c['ours_total_seconds_sklearn_kmeans']:.2f} s).",
        ]
    return "\n".join(lines) + "\n"


# --- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/speed.py", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "speed")
    parser.add_argument("--sizes", type=int, nargs="*", default=[4000, 40000])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to every sanitize run of --sizes (e.g. bootstrap.train_steps=500)",
    )
    parser.add_argument("--no-compare", dest="compare", action="store_false")
    parser.add_argument("--compare-rows", type=int, default=50000)
    parser.add_argument("--compare-width", type=int, default=64)
    parser.add_argument("--compare-steps", type=int, default=300)
    parser.add_argument(
        "--compare-train-rows",
        type=int,
        default=10000,
        help="bootstrap.max_train_rows of the comparison run (a stratified sample)",
    )
    parser.add_argument("--art-lib", type=Path, default=DEFAULT_ART_LIB)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    train = args.datasets / "cifar10" / "train.parquet"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault(THREADS_ENV, str(stage_threads()))
    os.environ[THREADS_ENV] = env[THREADS_ENV]
    result: dict[str, Any] = {
        "command": "python benchmarks/speed.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine_description("cpu"),
        "code": code_description(),
        "threads": int(env[THREADS_ENV]),
        "kmeans_backend": faiss_backend() or "sklearn",
        "load_before": _load(),
        "sizes": [],
    }
    extra = [f"--set={kv}" for kv in args.set] + ["--seed", str(args.seed)]
    for rows in args.sizes:
        source = build_source(train, rows, args.out / f"cifar10-{rows}.parquet")
        print(f"speed: sanitize run on {rows:,} rows ...", file=sys.stderr, flush=True)
        run = run_size(source, args.out / f"run-{rows}", extra, env)
        work = load_work(args.out / f"run-{rows}")
        run["ac_kmeans"] = {
            backend: timed_detector("activation_clustering", work, backend)[1]
            for backend in ("faiss", "sklearn")
            if backend == "sklearn" or faiss_backend()
        }
        del work
        shutil.rmtree(args.out / f"run-{rows}" / ".work")
        result["sizes"].append(run)
        print(
            f"speed: {rows:,} rows in {run['wall_seconds']:.1f} s, "
            f"peak RSS {run['peak_rss_mib']:.0f} MiB",
            file=sys.stderr,
            flush=True,
        )
    if args.compare:
        source = build_source(
            train, args.compare_rows, args.out / f"cifar10-{args.compare_rows}.parquet"
        )
        poisoned = args.out / f"badnets-{args.compare_rows}.parquet"
        truth = poisoned.with_suffix(".truth.csv")
        if not poisoned.exists():
            cmd = sanitize_cmd() + ["poison", str(source), "--attack", "badnets", "--rate", "0.05"]
            cmd += ["--target", "0", "--seed", str(args.seed), "--out", str(poisoned)]
            subprocess.run(cmd, check=True, env=env)
        print("speed: sanitize run for the detector comparison ...", file=sys.stderr, flush=True)
        compare_extra = [
            f"--set=bootstrap.width={args.compare_width}",
            f"--set=bootstrap.train_steps={args.compare_steps}",
            f"--set=bootstrap.max_train_rows={args.compare_train_rows}",
            "--set=bootstrap.clean_epochs=0",
            "--detectors",
            ",".join(OUR_DETECTORS),
            "--seed",
            str(args.seed),
        ]
        run = run_size(poisoned, args.out / "run-compare", compare_extra, env)
        result["compare_run"] = run
        result["compare"] = compare(args.out / "run-compare", truth, args.art_lib, args.seed)
    result["load_after"] = _load()
    (args.out / "speed.json").write_text(json.dumps(result, indent=2, default=str))
    text = markdown(result)
    (args.out / "speed.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
