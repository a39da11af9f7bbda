"""The sections by class: the share of each class removed (with what the size rules, the
refinement and the growth check did) and the class x detector table of flags."""

from __future__ import annotations

import math
from html import escape

import numpy as np
import pyarrow as pa

from sanitize.data.schema import issue_column, score_column
from sanitize.report import plots
from sanitize.report.page import pct
from sanitize.report.score_rows import class_codes

BAR_CLASSES = 30  # classes in the removal chart; beyond, those with most removals
CLASS_TABLE_ROWS = 100  # classes in the class x detector table; beyond, those with most removed


def classes_section(report: dict) -> str:
    per_class = report.get("per_class", {})
    suspect = {c["label"] for c in report.get("verdict", {}).get("suspect_classes", [])}
    entries = list(per_class.items())
    note = ""
    if len(entries) > BAR_CLASSES:
        entries = sorted(entries, key=lambda kv: (-kv[1]["removed_fraction"], kv[0]))
        note = (
            f'<p class="note">{len(per_class) - BAR_CLASSES:,} more classes, each with a '
            f"smaller share removed, are in report.json.</p>"
        )
        entries = entries[:BAR_CLASSES]
    else:
        entries.sort(key=lambda kv: _natural(kv[0]))
    top = max((e["removed_fraction"] for _, e in entries), default=0.0)
    bars = [
        plots.Bar(
            label=str(e["name"]),
            value=e["removed_fraction"],
            text=f"{e['removed']:,} of {e['rows']:,} ({pct(e['removed_fraction'])})",
            highlight=key in suspect,
        )
        for key, e in entries
    ]
    scale = max(0.05, _nice_ceiling(top))
    chars = min(max((len(b.label) for b in bars), default=0), 22)
    svg = plots.bar_chart(
        bars, scale_max=scale, label_chars=chars, label="share of each class removed"
    )
    size_notes = "".join(f'<p class="note">{escape(n)}</p>' for n in _size_notes(report))
    return (
        f'<p class="lead">Share of each class removed (axis to {pct(scale)}); classes the '
        "verdict names as suspected targets in red.</p>"
        f'<div class="panel wide">{svg}{note}{size_notes}</div>'
    )


def _size_notes(report: dict) -> list[str]:
    """One line per class the decision found inflated, and what the size rules did; one per
    class whose flags the refinement's coherence check or the growth check withdrew."""
    size = (report.get("decision") or {}).get("size_orient") or {}
    names = {k: v.get("name", k) for k, v in report.get("per_class", {}).items()}
    against = (
        "its share of the expected class distribution"
        if size.get("expected_shares")
        else "the other classes' sizes"
    )
    notes = []
    for key, entry in (size.get("inflated") or {}).items():
        acts = _size_acts(entry)
        notes.append(
            f"Class {names.get(key, key)}: {entry['rows']:,} rows where "
            f"{entry['rows_like_others']:,.0f} were expected from {against}"
            + (f"; {'; '.join(acts)}." if acts else ".")
        )
    return notes + _withdrawn_notes(report, names)


def _size_acts(entry: dict) -> list[str]:
    """What the size rules did in one inflated class, a clause each."""
    acts = []
    if entry.get("turned_over"):
        acts.append("its flags were turned over to the rest of the class")
    if entry.get("not_backed_misfit"):
        acts.append("its flags, rows the bootstrap model cannot fit, stayed")
    pixels = entry.get("pixel_excess") or {}
    if pixels.get("suspect"):
        acts.append(
            f"{pct(pixels['class_share'])} of its rows disagree with their label by their "
            f"nearest images (other classes: {pct(pixels['reference_share'])})"
        )
    if entry.get("flagged_by_splits"):
        acts.append(f"{entry['flagged_by_splits']:,} rows were flagged by its splits")
    if entry.get("removal_cap") is not None:
        acts.append(f"at most {entry['removal_cap']:,} rows removed")
    return acts


def _withdrawn_notes(report: dict, names: dict) -> list[str]:
    """One line per class whose flags the refinement or the growth check withdrew."""
    notes = []
    refine = (report.get("decision") or {}).get("refine") or {}
    for key, entry in (refine.get("per_class") or {}).items():
        if entry.get("withdrawn"):
            notes.append(
                f"Class {names.get(key, key)}: {entry['flagged_before']:,} flagged rows kept; "
                f"a discriminant fitted on the class's other rows recognised "
                f"{pct(entry['kept_share'])} of them, so they share no direction in feature "
                "space (not a trigger group)."
            )
    growth = (report.get("decision") or {}).get("growth") or {}
    for key, entry in (growth.get("checked") or {}).items():
        if entry.get("withdrawn"):
            notes.append(
                f"Class {names.get(key, key)}: {entry['flagged']:,} flagged rows kept; the "
                f"class holds {entry['rows']:,} rows where {entry['rows_like_others']:,.0f} "
                "were expected, so it did not gain the rows a poisoned group of that size "
                "would add (a natural mode of the class)."
            )
    return notes


def _natural(key: str) -> tuple:
    return (0, int(key), "") if key.lstrip("-").isdigit() else (1, 0, key)


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 0.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return min(step * magnitude, 1.0)
    return 1.0


def class_detector_flags(report: dict, scores: pa.Table) -> tuple[list[str], dict[str, list[int]]]:
    """Each detector's own flags counted per class.

    Returns
    -------
    detectors : list of str
        The detectors of report.json that saved flags (their ``is_<name>_issue`` column) or
        at least scores (flags are then the scores at or above 0.5), in report order.
    counts : dict
        Class key (the label as report.json writes it) -> one count a detector.
    """
    keys, codes = class_codes(scores)
    labelled = codes >= 0
    detectors, columns = [], []
    for name in report.get("per_detector", {}):
        if issue_column(name) in scores.column_names:
            flags = scores.column(issue_column(name)).to_numpy(zero_copy_only=False)
        elif score_column(name) in scores.column_names:
            values = scores.column(score_column(name)).to_numpy(zero_copy_only=False)
            flags = np.nan_to_num(values.astype(np.float64), nan=0.0) >= 0.5
        else:
            continue
        detectors.append(name)
        counts = np.bincount(
            codes[labelled], weights=flags[labelled].astype(np.float64), minlength=len(keys)
        )
        columns.append(counts.astype(np.int64))
    counts = {key: [int(c[i]) for c in columns] for i, key in enumerate(keys)}
    return detectors, counts


def flags_section(report: dict, scores: pa.Table) -> str:
    """A table: one row a class, one column a detector, its own flags in that class."""
    detectors, counts = class_detector_flags(report, scores)
    per_class = report.get("per_class", {})
    suspect = {c["label"] for c in report.get("verdict", {}).get("suspect_classes", [])}
    entries = sorted(per_class.items(), key=lambda kv: _natural(kv[0]))
    note = ""
    if len(entries) > CLASS_TABLE_ROWS:
        entries = sorted(entries, key=lambda kv: (-kv[1]["removed"], _natural(kv[0])))
        note = (
            f'<p class="note">{len(per_class) - CLASS_TABLE_ROWS:,} more classes, each with '
            "fewer removed rows, are counted in the total.</p>"
        )
        entries = entries[:CLASS_TABLE_ROWS]
    head = "".join(f"<th>{escape(name)}</th>" for name in detectors)
    rows = [
        _flags_row(
            key,
            str(entry.get("name", key)),
            entry["rows"],
            entry["removed"],
            counts.get(key, [0] * len(detectors)),
            key in suspect,
        )
        for key, entry in entries
    ]
    totals = [sum(c[i] for c in counts.values()) for i in range(len(detectors))]
    all_rows = sum(e["rows"] for e in per_class.values())
    all_removed = sum(e["removed"] for e in per_class.values())
    foot = _flags_row("", "all classes", all_rows, all_removed, totals, False, cell="th")
    return (
        '<p class="lead">Rows each detector flagged on its own (score at or above 0.5), by '
        "class, before the decision combined them; suspected target classes in red.</p>"
        '<div class="panel wide scroll"><table class="flags">'
        '<thead><tr><th>label</th><th class="name">class</th><th>rows</th><th>removed</th>'
        f"{head}</tr>"
        f"</thead><tbody>{''.join(rows)}</tbody><tfoot>{foot}</tfoot></table>{note}</div>"
    )


_SUSPECT_ROW = ' class="suspect"'


def _flags_row(
    key: str,
    name: str,
    rows: int,
    removed: int,
    flags: list[int],
    suspect: bool,
    cell: str = "td",
) -> str:
    figures = "".join(f'<{cell} class="{"hit" if n else "zero"}">{n:,}</{cell}>' for n in flags)
    return (
        f"<tr{_SUSPECT_ROW if suspect else ''}><{cell}>{escape(key)}</{cell}>"
        f'<{cell} class="name">{escape(name)}</{cell}><{cell}>{rows:,}</{cell}>'
        f"<{cell}>{removed:,}</{cell}>{figures}</tr>"
    )
