"""report.json: what a run did, in figures a person or a dashboard can read."""

from __future__ import annotations

import platform
import time
from collections import Counter
from importlib import metadata
from typing import Any

import numpy as np
import pyarrow as pa

from sanitize.config import SanitizeConfig
from sanitize.data.schema import FLAGGED, REASON_MISSING_LABEL, REASON_UNREADABLE, REASONS
from sanitize.data.schema import LABEL as LABEL_COLUMN
from sanitize.decision.rules import SIZE_REASON

REPORT_VERSION = 1
_QUARANTINE_REASONS = frozenset({REASON_UNREADABLE, REASON_MISSING_LABEL})
_VERSIONED = ("sanitize", "torch", "numpy", "pyarrow", "scikit-learn", "pillow")


def versions() -> dict[str, str]:
    """Versions of Python and the packages whose behaviour the results depend on."""
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def provenance_of(source: str, config: SanitizeConfig, stage_results: dict[str, dict]) -> dict:
    """The small record stamped into every output file's metadata."""
    return {
        "sanitize_version": versions()["sanitize"],
        "source": source,
        "source_fingerprint": stage_results.get("read", {}).get("source_fingerprint"),
        "config_fingerprint": config.fingerprint(),
    }


def _judged_by_size(
    suspect: list[str],
    labels: list,
    reasons: list[list[str]],
    flagged: np.ndarray,
    detected: Counter,
    decision_info: dict,
) -> list[str]:
    """The suspect classes that lost most of their removed rows to the size rules while no
    class distribution to expect was given. Sizes alone cannot tell a poisoned class from
    a naturally large one (GTSRB's "Priority road", 280 of 5,000 rows, turned over with
    300 WaNet poisons: 204 of its clean rows went too), so the verdict says so."""
    size = decision_info.get("size_orient") or {}
    if not suspect or size.get("expected_shares"):
        return []
    by_size = Counter(
        str(lbl)
        for lbl, row, f in zip(labels, reasons, flagged, strict=True)
        if f and SIZE_REASON in row
    )
    return [k for k in suspect if 2 * by_size[k] > detected[k]]


def build_report(
    *,
    source: str,
    config: SanitizeConfig,
    decision: pa.Table,
    detector_info: dict[str, dict],
    decision_info: dict,
    classes: dict,
    stage_results: dict[str, dict],
) -> dict[str, Any]:
    """Counts, per-class and per-detector figures, thresholds, timings, versions, config.

    Parameters
    ----------
    decision : pyarrow.Table
        The scores table (one row a source row) with ``label``, ``flagged``, ``reasons``.
    detector_info, decision_info : dict
        The ``info`` the detectors and the decision returned (thresholds actually used).
    classes : dict
        The read stage's ``classes.json``.
    stage_results : dict
        Each stage's returned dict (``seconds``, ``rows``, ...), keyed by stage name.
    """
    flagged = decision.column(FLAGGED).to_numpy(zero_copy_only=False)
    reasons = decision.column(REASONS).to_pylist()
    labels = decision.column(LABEL_COLUMN).to_pylist()
    reason_counts = Counter(r for row, f in zip(reasons, flagged, strict=True) if f for r in row)
    per_class = _per_class(labels, flagged, classes)
    verdict = _verdict(config, labels, reasons, flagged, per_class, decision_info)

    # A detector's own flags (its is_<name>_issue column, score >= 0.5), and how many of
    # the removed rows name it: the decision drops some flags and adds rows of its own.
    own_flags = decision_info.get("flags_per_detector", {})
    per_detector = {
        name: {
            "flagged": int(own_flags.get(name, 0)),
            "removed": int(reason_counts.get(name, 0)),
            "info": info,
        }
        for name, info in detector_info.items()
    }
    n = decision.num_rows
    removed = int(np.sum(flagged))
    read = stage_results.get("read", {})
    return {
        "report_version": REPORT_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": {
            "uri": source,
            "kind": read.get("source_kind"),
            "fingerprint": read.get("source_fingerprint"),
            "rows": n,
        },
        "counts": {
            "rows": n,
            "kept": n - removed,
            "removed": removed,
            "removed_fraction": removed / n if n else 0.0,
            "unreadable": int(read.get("n_unreadable", 0)),
            "missing_label": int(read.get("n_missing_label", 0)),
            "by_reason": dict(sorted(reason_counts.items())),
        },
        "verdict": verdict,
        "per_class": per_class,
        "per_detector": per_detector,
        "decision": decision_info,
        "stage_timings": _stage_timings(stage_results),
        "device": stage_results.get("bootstrap", {}).get("device"),
        "versions": versions(),
        "config": config.to_dict(),
        "config_fingerprint": config.fingerprint(),
    }


def _per_class(labels: list, flagged: np.ndarray, classes: dict) -> dict[str, dict[str, Any]]:
    """Rows and removed rows of each class, keyed by the label as a string, in the order the
    classes first occur."""
    names_by_value = dict(zip(map(str, classes["values"]), classes["names"], strict=True))
    per_class: dict[str, dict[str, Any]] = {}
    for label, is_flagged in zip(labels, flagged, strict=True):
        key = str(label)
        entry = per_class.setdefault(
            key, {"name": names_by_value.get(key, key), "rows": 0, "removed": 0}
        )
        entry["rows"] += 1
        entry["removed"] += int(is_flagged)
    for entry in per_class.values():
        entry["removed_fraction"] = entry["removed"] / entry["rows"]
    return per_class


def _verdict(
    config: SanitizeConfig,
    labels: list,
    reasons: list[list[str]],
    flagged: np.ndarray,
    per_class: dict[str, dict[str, Any]],
    decision_info: dict,
) -> dict[str, Any]:
    """Whether poisoning is suspected, in which classes, and the verdict's sentence."""
    # A removed row is the decision's unless its only reasons are the read stage's
    # quarantine; whatever step of the decision removed it (a detector, the consensus,
    # the size rules, the refinement) then counts.
    detected = Counter(
        str(lbl)
        for lbl, row, f in zip(labels, reasons, flagged, strict=True)
        if f and any(r not in _QUARANTINE_REASONS for r in row)
    )
    # A class is a suspected target when it lost a group, as many rows as make the decision
    # weigh it as poisoned; fewer are a handful of outliers. Most removed rows first.
    bar = config.decision.min_class_rows
    suspect = sorted((k for k in detected if detected[k] >= bar), key=lambda k: (-detected[k], k))
    outliers = sum(n for k, n in detected.items() if n < bar)
    by_size = _judged_by_size(suspect, labels, reasons, flagged, detected, decision_info)
    return {
        "poison_suspected": bool(suspect),
        "suspect_classes": [
            {"label": key, "name": per_class[key]["name"], "removed": detected[key]}
            for key in suspect
        ],
        "judged_by_size": by_size,
        "outliers_removed": outliers,
        "text": _verdict_text(suspect, outliers, by_size, detected, per_class, bar),
    }


def _verdict_text(
    suspect: list[str],
    outliers: int,
    by_size: list[str],
    detected: Counter,
    per_class: dict[str, dict[str, Any]],
    bar: int,
) -> str:
    """The verdict in a sentence: the suspected classes, else the outliers removed."""
    if suspect:
        text = "poisoning suspected in class(es) " + ", ".join(
            f"{per_class[k]['name']} ({detected[k]:,} removed)" for k in suspect
        )
        if outliers:
            text += f"; {outliers:,} outlier row(s) removed elsewhere"
        if by_size:
            text += (
                "; "
                + ", ".join(per_class[k]["name"] for k in by_size)
                + " judged mostly by size against the other classes: if naturally that"
                " large, give the class counts to expect (--expected-classes)"
            )
    elif outliers:
        text = (
            f"no poisoning found: {outliers:,} outlier row(s) removed, no class lost {bar} or more"
        )
    else:
        text = "no poisoning found: no detector flagged a row"
    return text


def _stage_timings(stage_results: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Seconds, rows and rows per second of each stage, in run order."""
    return {
        name: {
            "seconds": round(float(res.get("seconds", 0.0)), 3),
            "rows": int(res.get("rows", 0)),
            "rows_per_second": round(res.get("rows", 0) / max(res.get("seconds", 0.0), 1e-9), 1),
        }
        for name, res in stage_results.items()
    }
