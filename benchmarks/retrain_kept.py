"""Retraining check on kept detection cases, with a retraining of another length.

``benchmarks/detection.py --keep-work`` leaves one ``kept-<case>`` folder a case: the
poisoned subset, its ground truth and the pipeline's run folder (``clean.parquet`` with
``sample_weight``). This script trains the retraining arms again on those files (no
defence, the true clean rows, ours) with ``--epochs`` epochs instead of the suite's, so
the attack success rate can be read from a model trained long enough for the true-clean
arm's own ASR to settle, without running the detection again. The arms, the test subset,
the triggered test rows and the recipe are those of ``detection.py``
(:func:`detection.retrain_arms`).

    python benchmarks/retrain_kept.py /tmp/work/kept-* --epochs 16 --out benchmarks/out/rt16

One JSON a case lands in ``--out`` and a Markdown table is printed and written to
``<out>/retrain.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

from detection import (  # noqa: E402
    ALL_ARMS,
    DATASETS,
    SUITES,
    Case,
    Settings,
    _f,
    _json_default,
    machine_description,
    progress,
    retrain_arms,
)

from sanitize.attacks import get_attack  # noqa: E402
from sanitize.evaluate import read_truth  # noqa: E402


def find_case(name: str) -> Case:
    """The suite case called ``name`` (every suite is searched)."""
    for cases in SUITES.values():
        for case in cases:
            if case.name == name:
                return case
    raise SystemExit(f"no suite has a case called {name!r}")


def retrain_kept(kept: Path, case: Case, settings: Settings) -> dict:
    """Retraining arms of ``case``'s kept folder ``kept``; the JSON-able result."""
    classes = json.loads((kept / "run" / ".work" / "classes.json").read_text())
    poisoned = kept / "poisoned.parquet"
    summary = SimpleNamespace(
        out=poisoned, height=classes["image_size"], channels=classes["channels"]
    )
    attack = get_attack(case.attack, **case.attack_params(settings.datasets))
    truth_by_id = read_truth(kept / "poisoned.truth.csv")
    start = time.perf_counter()
    retrain = retrain_arms(
        case,
        attack,
        summary,
        kept / "run",
        truth_by_id,
        settings.datasets / case.dataset,
        settings,
        progress,
    )
    return {
        "name": case.name,
        "attack": case.attack,
        "dirty_label": case.dirty_label,
        "retrain": retrain,
        "retrain_epochs": settings.retrain_epochs,
        "seconds": time.perf_counter() - start,
    }


def markdown(results: list[dict], arms: Sequence[str], header: dict) -> str:
    lines = [
        f"Retraining of kept cases, {header['epochs']} epochs an arm. Machine: "
        f"{header['machine']}. Command: `{header['command']}`",
        "",
        "| case | "
        + " | ".join(f"acc {a}" for a in arms)
        + " | "
        + " | ".join(f"ASR {a}" for a in arms)
        + " | s |",
        "|---|" + "---|" * (2 * len(arms) + 1),
    ]
    for r in results:
        accs = [_f(r["retrain"][a]["clean_accuracy"]) for a in arms]
        asrs = [_f(r["retrain"][a]["attack_success_rate"]) for a in arms]
        if r["attack"] == "none":
            asrs = ["-"] * len(arms)  # no trigger: the "ASR" would be a misclassification rate
        lines.append(f"| {r['name']} | " + " | ".join(accs + asrs) + f" | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kept", nargs="+", type=Path, help="kept-<case> folders")
    parser.add_argument("--epochs", type=int, default=16, help="epochs an arm (16)")
    parser.add_argument(
        "--arms", nargs="+", choices=ALL_ARMS, default=["none", "true_clean", "ours"]
    )
    parser.add_argument("--test-rows", type=int, default=2000, help="as the suite (2000)")
    parser.add_argument("--seed", type=int, default=0, help="as the suite (0)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = Settings(
        datasets=args.datasets,
        test_rows=args.test_rows,
        retrain_epochs=args.epochs,
        arms=tuple(a for a in ALL_ARMS if a in args.arms),
        seed=args.seed,
        device=args.device,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for kept in sorted(args.kept):
        progress(f"{kept.name}: retraining, {args.epochs} epochs an arm")
        result = retrain_kept(kept, find_case(kept.name.removeprefix("kept-")), settings)
        (args.out / f"{result['name']}.json").write_text(
            json.dumps(result, indent=1, default=_json_default) + "\n"
        )
        results.append(result)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    header = {
        "epochs": args.epochs,
        "machine": machine_description(args.device),
        "command": command,
    }
    text = markdown(results, settings.arms, header)
    (args.out / "retrain.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
