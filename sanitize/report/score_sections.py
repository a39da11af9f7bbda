"""The sections of score histograms: each detector's scores and the decision's poison_score
with the thresholds used, and the kept rows' training weights."""

from __future__ import annotations

import math
from html import escape
from typing import Any

import numpy as np
import pyarrow as pa

from sanitize.data.schema import POISON_SCORE, SAMPLE_WEIGHT, score_column
from sanitize.report import plots
from sanitize.report.page import legend
from sanitize.report.score_rows import unscored


def detectors_section(report: dict, scores: pa.Table, flagged: np.ndarray) -> str:
    # Rows set aside unread (NaN detector scores, poison_score 1) would pile up at 1.
    scored = ~unscored(scores)
    cards = []
    poison = scores.column(POISON_SCORE).to_numpy(zero_copy_only=False)
    cards.append(
        _histogram_card(
            "decision: poison_score",
            poison[scored & ~flagged],
            poison[scored & flagged],
            [
                f"removed {int((scored & flagged).sum()):,} of {int(scored.sum()):,} scored rows",
                _decision_note(report.get("decision", {})),
            ],
        )
    )
    for name, entry in report.get("per_detector", {}).items():
        column = score_column(name)
        info = entry.get("info", {})
        if column not in scores.column_names or "skipped" in info:
            cards.append(
                f'<div class="panel"><h3>{escape(name)}</h3>'
                f'<p class="note">{escape(str(info.get("skipped", "no scores saved")))}</p></div>'
            )
            continue
        values = scores.column(column).to_numpy(zero_copy_only=False)
        notes = [
            f"flagged {int(entry.get('flagged', 0)):,} rows (score >= 0.5); "
            f"{int(entry.get('removed', 0)):,} removed rows name it",
            *_threshold_notes(info),
        ]
        cards.append(_histogram_card(name, values[~flagged], values[flagged], notes))
    return (
        '<p class="lead">Each detector scores every row in [0, 1] and flags the rows at or '
        "above 0.5 under the data-derived thresholds it reports; counts on a log scale. "
        f"{legend()}</p>"
        f'<div class="grid">{"".join(cards)}</div>'
    )


def _histogram_card(title: str, kept: np.ndarray, removed: np.ndarray, notes: list[str]) -> str:
    svg = plots.score_histogram(kept, removed, label=f"{title} score histogram")
    note_html = "".join(f'<p class="note">{escape(n)}</p>' for n in notes if n)
    return f'<div class="panel"><h3>{escape(title)}</h3>{svg}{note_html}</div>'


def _threshold_notes(info: dict) -> list[str]:
    """The thresholds a detector reports having used, in a line or two."""
    if "skipped" in info:
        return [str(info["skipped"])]
    notes = []
    scalars = {
        k: v
        for k, v in info.items()
        if ("threshold" in k or k.endswith("_cut")) and isinstance(v, int | float | str)
    }
    if scalars:
        notes.append(", ".join(f"{k} = {_fmt(v)}" for k, v in scalars.items()))
    per_class = info.get("per_class") or {}
    rules: dict[str, int] = {}
    for entry in per_class.values():
        if isinstance(entry, dict) and "rule" in entry:
            rules[str(entry["rule"])] = rules.get(str(entry["rule"]), 0) + 1
    if rules:
        notes.append(
            "per-class cut: " + ", ".join(f"{rule} in {n} class(es)" for rule, n in rules.items())
        )
    params = info.get("params") or {}
    tuned = {k: v for k, v in params.items() if any(w in k for w in ("threshold", "floor"))}
    if tuned:
        notes.append("params: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in tuned.items()))
    if info.get("classes_flagged"):
        notes.append(f"classes flagged: {len(info['classes_flagged'])}")
    return notes


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _decision_note(decision: dict) -> str:
    parts = []
    if "min_votes" in decision:
        parts.append(f"min_votes = {decision['min_votes']}")
    if "removal_cap" in decision:
        cap = "applied" if decision.get("cap_applied") else "not reached"
        parts.append(f"removal cap {decision['removal_cap']:,} ({cap})")
    return ", ".join(parts)


def weights_section(report: dict, scores: pa.Table, flagged: np.ndarray) -> str:
    """Histogram of the kept rows' ``sample_weight`` (mean 1; removed rows weigh 0)."""
    if SAMPLE_WEIGHT not in scores.column_names or flagged.all():
        return ""
    weight = scores.column(SAMPLE_WEIGHT).to_numpy(zero_copy_only=False)[~flagged]
    decision = report.get("decision", {})
    sources = decision.get("weights_from") or []
    classes = decision.get("weight_classes")
    upper = max(1.5, math.ceil(float(weight.max()) * 2) / 2)
    svg = plots.score_histogram(
        weight,
        np.empty(0),
        threshold=1.0,
        upper=upper,
        label="sample weight histogram",
        axis_title="sample_weight",
        threshold_text="mean {threshold:g}",
        width=600,
    )
    low = int((weight < 0.5).sum())
    notes = [
        f"{low:,} of {weight.size:,} kept rows weigh less than 0.5",
        "weights from " + ", ".join(sources) if sources else "no weighting detector ran",
    ]
    if sources and classes is not None:
        agreement = decision.get("weight_agreement") or {}
        doubted = [c for c in agreement if int(c) not in classes]
        notes.append(
            f"weighted in {len(classes)} class(es) judged poisoned"
            + (
                f" (not in class(es) {', '.join(doubted)}, where the weights do not rank the "
                "removed rows below the kept ones)"
                if doubted
                else ""
            )
            + "; every other kept row weighs the same"
        )
    note_html = "".join(f'<p class="note">{escape(n)}</p>' for n in notes)
    return (
        '<p class="lead">The <code>sample_weight</code> of the kept rows in clean.parquet, for '
        "a weighted retraining: rows an early-stopped model learned far faster than the "
        "deconfounded one weigh least (CBD); counts on a log scale.</p>"
        f'<div class="panel wide">{svg}{note_html}</div>'
    )
