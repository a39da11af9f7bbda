"""Leave-one-rule-out ablation of the decision on kept cases, without training anything.

Each kept case (``benchmarks/detection.py --keep-work``) is scored by the detectors once
(cached under ``--cache``); then the decision runs once with every rule and once with each
rule switched off, and the script prints, per suite, the mean TPR / FPR over the
dirty-label cases, the clean-label cases' TPR and the rows the clean sets lose. A rule
earns its place when switching it off costs TPR or FPR on cases it was not tuned on.

    python benchmarks/ablate_decision.py --suite cpu=/tmp/w/work-cpu:/tmp/w/out-cpu \\
        --suite heldout33=/tmp/w/work-heldout33:/tmp/w/out-heldout33 --cache /tmp/w/cache
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from rescore import decide_case, load_case, score_detectors  # noqa: E402

from sanitize.config import SanitizeConfig  # noqa: E402
from sanitize.detect.base import traits_of  # noqa: E402
from sanitize.evaluate import detection_metrics  # noqa: E402


def _with(**fields: object) -> Callable[[SanitizeConfig], SanitizeConfig]:
    return lambda config: config.replace(decision=config.decision.replace(**fields))


def _without(*rules: str) -> Callable[[SanitizeConfig], SanitizeConfig]:
    def config_without(config: SanitizeConfig) -> SanitizeConfig:
        kept = tuple(rule for rule in config.decision.rules if rule not in rules)
        return config.replace(decision=config.decision.replace(rules=kept))

    return config_without


# One entry a rule (or a part of one that has its own switch); "all" is the decision as is.
VARIANTS: dict[str, Callable[[SanitizeConfig], SanitizeConfig]] = {
    "all": lambda config: config,
    "no_group_votes": lambda config: config,  # every detector votes by row: variant_results
    "no_orient": _without("orient"),
    "no_size_orient": _without("size_orient"),
    "no_size_suspect": _with(size_suspect=False),
    "no_refine": _without("refine"),
    "no_growth": _without("growth"),
    "no_growth_pixel": _with(growth_pixel_auc=None),
    "no_settle": _without("settled"),
    "no_removal_cap": _with(max_removal_fraction=1.0),
    "vote_only": _without("orient", "size_orient", "refine", "growth", "settled"),
}


def variant_config(variant: str) -> Callable[[SanitizeConfig], SanitizeConfig]:
    """The config of a rule's variant; ``no_<detector>`` decides as "all" without it."""
    return VARIANTS.get(variant, VARIANTS["all"])


def variant_results(variant: str, results: dict) -> dict:
    """The detector results the variant decides on: without a detector (``no_<name>``), or
    with every detector's flags counted row by row (``no_group_votes``)."""
    dropped = variant.removeprefix("no_")
    if variant not in VARIANTS and dropped in results:
        return {k: v for k, v in results.items() if k != dropped}
    if variant == "no_group_votes":
        return {
            k: dataclasses.replace(v, traits=dataclasses.replace(traits_of(k, v), votes="rows"))
            for k, v in results.items()
        }
    return results


def cached_case(kept: Path, cache: Path, config: SanitizeConfig) -> dict:
    """The case's detector results and decision inputs, computed once per kept folder and
    set of detectors."""
    added = sorted(set(config.detectors) - set(SanitizeConfig().detectors))
    suffix = "".join(f"+{name}" for name in added)
    path = cache / f"{kept.parent.name}--{kept.name}{suffix}.pkl"
    if path.exists():
        return pickle.loads(path.read_bytes())
    case = load_case(kept)
    scored = score_detectors(case, list(config.detectors), config.replace(seed=case["seed"]))
    keep = {k: case[k] for k in ("name", "seed", "labels", "truth", "classes", "images")}
    keep["images"] = None  # not needed by the decision once the agreement is computed
    scored["case"] = keep
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(scored))
    return scored


def suite_cases(spec: str) -> tuple[str, list[tuple[Path, str]]]:
    """``name=WORK:OUT`` -> the suite's name and its kept folders with their kind
    (``dirty``, ``clean_label`` or ``clean``, from the case JSONs in OUT)."""
    name, dirs = spec.split("=", 1)
    work, out = (Path(p) for p in dirs.split(":"))
    cases = []
    for kept in sorted(work.glob("kept-*")):
        case_json = out / f"{kept.name.removeprefix('kept-')}.json"
        if not (kept / "run" / ".work").exists() or not case_json.exists():
            continue
        record = json.loads(case_json.read_text())
        if not record.get("n_poisoned"):
            kind = "clean"
        else:
            kind = "dirty" if record.get("dirty_label") else "clean_label"
        cases.append((kept, kind))
    return name, cases


def summarise(rows: list[tuple[str, dict]]) -> dict[str, float]:
    """Mean TPR / FPR over the dirty-label cases, mean TPR over the clean-label ones, rows
    the clean sets lose in all (NaN where the suite has no such case)."""

    def mean(kind: str, key: str) -> float:
        values = [m[key] for k, m in rows if k == kind]
        return float(np.mean(values)) if values else float("nan")

    clean = [m["removed"] for k, m in rows if k == "clean"]
    return {
        "tpr": mean("dirty", "tpr"),
        "fpr": mean("dirty", "fpr"),
        "clean_label_tpr": mean("clean_label", "tpr"),
        "clean_lost": float(sum(clean)) if clean else float("nan"),
    }


def table_row(variant: str, figures: dict[str, float], base: dict[str, float]) -> str:
    d_tpr = figures["tpr"] - base["tpr"]
    d_fpr = figures["fpr"] - base["fpr"]
    return (
        f"| {variant} | {figures['tpr']:.3f} | {figures['fpr']:.4f} | {d_tpr:+.3f} | "
        f"{d_fpr:+.4f} | {figures['clean_label_tpr']:.3f} | {figures['clean_lost']:.0f} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", required=True, metavar="NAME=WORK:OUT")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--variants", nargs="+", help="variant names (default: all)")
    parser.add_argument("--per-case", action="store_true", help="print every case's figures")
    parser.add_argument(
        "--add", nargs="+", default=[], metavar="DETECTOR", help="detectors beyond the defaults"
    )
    args = parser.parse_args(argv)
    config = SanitizeConfig()
    config = config.replace(detectors=tuple(config.detectors) + tuple(args.add))
    names = args.variants or [*VARIANTS, "no_shared_direction"]
    for spec in args.suite:
        suite, cases = suite_cases(spec)
        scored = [(cached_case(kept, args.cache, config), kind) for kept, kind in cases]
        kinds = {
            kind: sum(k == kind for _, k in scored) for kind in ("dirty", "clean_label", "clean")
        }
        print(
            f"\n{suite}: {kinds['dirty']} dirty-label, {kinds['clean_label']} clean-label, "
            f"{kinds['clean']} clean cases\n"
        )
        print("| variant | TPR | FPR | dTPR | dFPR | clean-label TPR | clean rows lost |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        base = None
        for variant in names:
            decided_config = variant_config(variant)(config)
            rows = []
            for case, kind in scored:
                case = case | {"results": variant_results(variant, case["results"])}
                decision = decide_case(case, decided_config.replace(seed=case["case"]["seed"]))
                m = detection_metrics(
                    decision.flagged, decision.poison_score, case["case"]["truth"]
                )
                rows.append((kind, m))
                if args.per_case:
                    print(
                        f"  {variant} {case['case']['name']} TPR {m['tpr']:.3f} "
                        f"FPR {m['fpr']:.4f} removed {m['removed']}",
                        file=sys.stderr,
                    )
            figures = summarise(rows)
            base = base or figures
            print(table_row(variant, figures, base), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
