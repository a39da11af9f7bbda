"""report.html: the run's figures for a person, in one self-contained file.

The page is rendered from what a finished output directory holds, so ``sanitize report
OUTDIR`` can re-render it after the run's work files are gone:

- ``report.json``: verdict, counts, per-class and per-detector figures, thresholds, timings,
  config;
- ``scores.parquet``: every row's scores and decision, plus the 2-D projection of its
  embedding (``embedding_x``, ``embedding_y``, saved at run time by
  :func:`embedding_projection`);
- ``clean.parquet`` / ``quarantine.parquet``: the source images, read only for the few rows
  shown as thumbnails (row groups located from the rows' positions, not by a scan).

Everything is inline (SVG charts, base64 PNG thumbnails, CSS, the removed rows as a CSV
file in a ``data:`` link); the page has no script and a Content-Security-Policy that forbids
any network fetch. Its size is bounded whatever the dataset's: the projection is a sample
of points, thumbnails are capped per class and in classes, the class bars, the class x
detector table and the CSV are capped in rows.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from sanitize.data.schema import (
    FLAGGED,
    LABEL,
    POISON_SCORE,
    REASON_MISSING_LABEL,
    REASON_UNREADABLE,
    REASONS,
    SAMPLE_ID,
    SAMPLE_WEIGHT,
    issue_column,
    score_column,
)
from sanitize.errors import InputError
from sanitize.pipeline.export import StagedOutputs
from sanitize.pipeline.paths import (
    CLEAN_FILE,
    QUARANTINE_FILE,
    REPORT_HTML,
    REPORT_JSON,
    SCORES_FILE,
)
from sanitize.report import plots
from sanitize.report.toml_text import toml_text

EMBEDDING_X = "embedding_x"
EMBEDDING_Y = "embedding_y"

# Bounds that keep the page small and fast on any number of rows.
PROJECTION_FIT_ROWS = 20_000  # rows the PCA is fitted on (all rows are projected)
PROJECTION_CHUNK_ROWS = 65_536  # rows projected at a time (bounds memory)
SCATTER_KEPT_POINTS = 2_500  # kept rows drawn in the projection, sampled
SCATTER_REMOVED_POINTS = 1_000  # removed rows drawn on top, sampled
BAR_CLASSES = 30  # classes in the removal chart; beyond, those with most removals
THUMB_CLASSES = 10  # classes with thumbnails: suspect classes first, then highest scores
THUMBS_PER_CLASS = 8  # most suspicious rows shown per class
MAX_ID_CHARS = 64  # a longer sample id is cut, so the page stays small on any ids
THUMB_PIXELS = 96  # longest side of a thumbnail; smaller images are enlarged by CSS only
CLASS_TABLE_ROWS = 100  # classes in the class x detector table; beyond, those with most removed
CSV_ROWS = 20_000  # removed rows in the page's CSV (about 1 MB); beyond, the highest scores
CSV_BYTES = 1_000_000  # and at most this much CSV text (ids can be long)


# --- run time: the projection saved into scores.parquet ------------------------------------


def embedding_projection(
    features: np.ndarray,
    rows: np.ndarray,
    *,
    seed: int = 0,
    fit_rows: int = PROJECTION_FIT_ROWS,
    chunk_rows: int = PROJECTION_CHUNK_ROWS,
) -> np.ndarray:
    """First two principal components of the features of ``rows``.

    Parameters
    ----------
    features : ndarray of shape (n_rows, feature_dim)
        Penultimate-layer features, one row a source row (a memory map is read in chunks).
    rows : ndarray of int
        The rows that have features (usable rows); the others get NaN.
    seed : int, default=0
        Seeds the subsample the components are fitted on.
    fit_rows : int, default=PROJECTION_FIT_ROWS
        At most this many rows (drawn at random) fit the mean and the components.

    Returns
    -------
    ndarray of shape (n_rows, 2), float32
        Each component's sign is fixed (largest loading positive), so the same features
        always give the same picture.
    """
    out = np.full((features.shape[0], 2), np.nan, dtype=np.float32)
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) < 3:
        return out
    rng = np.random.default_rng(seed)
    fit = np.sort(rng.choice(rows, size=min(fit_rows, len(rows)), replace=False))
    sample = np.asarray(features[fit], dtype=np.float64)
    mean = sample.mean(axis=0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    components = vt[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    for start in range(0, len(rows), chunk_rows):
        idx = rows[start : start + chunk_rows]
        projected = (np.asarray(features[idx], dtype=np.float64) - mean) @ components.T
        out[idx, : projected.shape[1]] = projected
    return out


def with_projection(scores: pa.Table, projection: np.ndarray) -> pa.Table:
    """``scores`` with the projection as float32 ``embedding_x`` and ``embedding_y`` columns."""
    projection = np.asarray(projection, dtype=np.float32)
    return scores.append_column(EMBEDDING_X, pa.array(projection[:, 0])).append_column(
        EMBEDDING_Y, pa.array(projection[:, 1])
    )


# --- rendering ---------------------------------------------------------------------------


def render_report(
    report: dict[str, Any], scores: pa.Table, *, clean_path: Path, quarantine_path: Path
) -> str:
    """The whole page as a string.

    Parameters
    ----------
    report : dict
        The run's ``report.json``.
    scores : pyarrow.Table
        The run's ``scores.parquet`` (source order), with the projection columns when the
        run saved them.
    clean_path, quarantine_path : Path
        The run's ``clean.parquet`` and ``quarantine.parquet``, both in source order (as
        :func:`sanitize.pipeline.export.write_tables` writes them); thumbnails are read from them.
    """
    flagged = scores.column(FLAGGED).to_numpy(zero_copy_only=False).astype(bool)
    sections = [
        ("scores", "Score distributions", _detectors_section(report, scores, flagged)),
        ("weights", "Training weights", _weights_section(report, scores, flagged)),
        ("classes", "Removal per class", _classes_section(report)),
        ("flags", "Flags per class and detector", _flags_section(report, scores)),
        ("projection", "Embedding projection", _projection_section(scores, flagged)),
        (
            "images",
            "Most suspicious images",
            _thumbnails_section(report, scores, flagged, clean_path, quarantine_path),
        ),
        ("run", "Run", _run_section(report)),
    ]
    sections = [(key, title, body) for key, title, body in sections if body]
    body = [
        _header(report),
        _download_link(report, scores, flagged),
        _contents(sections),
        *(
            f'<section id="{key}"><h2>{escape(title)}</h2>{html}</section>'
            for key, title, html in sections
        ),
    ]
    title = f"sanitize report: {report['source'].get('uri', '')}"
    return _PAGE.format(title=escape(title), css=_CSS, body="\n".join(body))


def write_report_html(out: str | Path) -> Path:
    """Re-render ``out/report.html`` from a finished run's output directory alone.

    Raises
    ------
    InputError
        ``out`` lacks ``report.json`` or ``scores.parquet`` (not a finished run).
    """
    out = Path(out)
    for name in (REPORT_JSON, SCORES_FILE, CLEAN_FILE, QUARANTINE_FILE):
        if not (out / name).is_file():
            raise InputError(
                f"{out} has no {name}; give the output directory of a finished `sanitize run`"
            )
    report = _read_report(out / REPORT_JSON)
    page = render_report(
        report,
        _read_scores(out / SCORES_FILE),
        clean_path=out / CLEAN_FILE,
        quarantine_path=out / QUARANTINE_FILE,
    )
    with StagedOutputs(out) as staged:
        staged.write_text(REPORT_HTML, page)
        staged.commit()
    return out / REPORT_HTML


def _read_report(path: Path) -> dict[str, Any]:
    """A finished run's report.json; InputError when it is not a JSON object."""
    try:
        report = json.loads(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if not isinstance(report, dict):
        raise InputError(f"cannot read {path}: expected a JSON object, got {type(report).__name__}")
    return report


def _read_scores(path: Path) -> pa.Table:
    """The columns of scores.parquet that the page reads."""
    names = pq.read_schema(path).names
    wanted = [
        n
        for n in names
        if n
        in (
            SAMPLE_ID,
            LABEL,
            POISON_SCORE,
            SAMPLE_WEIGHT,
            FLAGGED,
            REASONS,
            EMBEDDING_X,
            EMBEDDING_Y,
        )
        or n.startswith("score_")
        or (n.startswith("is_") and n.endswith("_issue"))
    ]
    return pq.read_table(path, columns=wanted)


# --- sections ------------------------------------------------------------------------------


def _contents(sections: list[tuple[str, str, str]]) -> str:
    """A table of contents: one link a section, to its id."""
    links = "".join(f'<a href="#{key}">{escape(title)}</a>' for key, title, _ in sections)
    return f'<nav class="toc" aria-label="contents">{links}</nav>'


def removed_rows_csv(report: dict, scores: pa.Table, flagged: np.ndarray) -> tuple[str, int]:
    """The removed rows as CSV text, and how many removed rows it leaves out.

    Columns ``sample_id, label, class, poison_score, reasons`` (reasons joined by ``;``),
    rows in source order. At most ``CSV_ROWS`` rows and ``CSV_BYTES`` of text: beyond, the
    rows with the highest poison_score (the full list is quarantine.parquet).
    """
    rows = np.flatnonzero(flagged)
    poison = scores.column(POISON_SCORE).to_numpy(zero_copy_only=False)[rows]
    by_score = rows[np.argsort(-poison, kind="stable")[:CSV_ROWS]]
    taken = scores.take(pa.array(by_score, type=pa.int64()))
    names = {k: str(v.get("name", k)) for k, v in report.get("per_class", {}).items()}
    lines: list[tuple[int, str]] = []
    size = 0
    for row, sample_id, label, score, reasons in zip(
        by_score,
        taken.column(SAMPLE_ID).to_pylist(),
        taken.column(LABEL).to_pylist(),
        taken.column(POISON_SCORE).to_pylist(),
        taken.column(REASONS).to_pylist(),
        strict=True,
    ):
        key = "" if label is None else str(label)
        line = _csv_line(
            [
                _inert(str(sample_id)),
                key,
                _inert(names.get(key, key)),
                "" if score is None else f"{score:.6g}",
                ";".join(reasons or []),
            ]
        )
        size += len(line)
        if size > CSV_BYTES and lines:
            break
        lines.append((int(row), line))
    header = _csv_line([SAMPLE_ID, LABEL, "class", POISON_SCORE, REASONS])
    body = "".join(line for _, line in sorted(lines))
    return header + body, len(rows) - len(lines)


def _csv_line(cells: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow(cells)
    return buf.getvalue()


def _inert(cell: str) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP: CSV injection); numbers stay."""
    if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(cell)
        except ValueError:
            return "'" + cell
    return cell


def _download_link(report: dict, scores: pa.Table, flagged: np.ndarray) -> str:
    """The removed rows as a CSV file inside the page (a data: URI), linked for download."""
    text, left_out = removed_rows_csv(report, scores, flagged)
    payload = base64.b64encode(text.encode("utf-8")).decode("ascii")
    removed = int(flagged.sum())
    shown = removed - left_out
    note = (
        f"the {shown:,} with the highest poison_score of {removed:,} removed rows; "
        "quarantine.parquet holds them all"
        if left_out
        else f"{removed:,} rows"
    )
    return (
        f'<p class="download"><a download="removed.csv" '
        f'href="data:text/csv;charset=utf-8;base64,{payload}">Removed rows as CSV</a> '
        f"<span>sample_id, label, class, poison_score, reasons; {note}</span></p>"
    )


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def _header(report: dict) -> str:
    counts, verdict = report["counts"], report["verdict"]
    suspected = verdict.get("poison_suspected", False)
    cards = [
        ("rows", f"{counts['rows']:,}", ""),
        ("kept", f"{counts['kept']:,}", ""),
        ("removed", f"{counts['removed']:,}", _pct(counts.get("removed_fraction", 0.0))),
        ("unreadable", f"{counts.get('unreadable', 0):,}", "quarantined"),
        ("without label", f"{counts.get('missing_label', 0):,}", "quarantined"),
    ]
    card_html = "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{v}</div>'
        f'<div class="s">{escape(s)}</div></div>'
        for k, v, s in cards
    )
    decision = report.get("decision", {})
    by_detector = decision.get("flags_per_detector", {})
    group_voters = decision.get("group_voters") or []
    counted = decision.get("votes_per_detector") or by_detector
    flags = ", ".join(
        f"{escape(name)} {n:,}"
        + (
            f" ({counted.get(name, n):,} counted: it votes only where it flags a group of a class)"
            if name in group_voters
            else ""
        )
        for name, n in by_detector.items()
    )
    source = report.get("source", {})
    return (
        f'<header><h1>sanitize report</h1><p class="meta">{escape(str(source.get("uri", "")))}'
        f" &middot; fingerprint {escape(str(source.get('fingerprint', '')))}"
        f" &middot; {escape(str(report.get('created_at', '')))}</p></header>"
        f'<div class="verdict {"bad" if suspected else "good"}">'
        f'<span class="dot"></span>{escape(verdict.get("text", ""))}</div>'
        f'<div class="cards">{card_html}</div>'
        + (f'<p class="meta">rows flagged by each detector: {flags}</p>' if flags else "")
    )


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


def _detectors_section(report: dict, scores: pa.Table, flagged: np.ndarray) -> str:
    # Rows set aside unread (NaN detector scores, poison_score 1) would pile up at 1.
    scored = ~_unscored(scores)
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
    legend = _legend()
    return (
        '<p class="lead">Each detector scores every row in [0, 1] and flags the rows at or '
        "above 0.5 under the data-derived thresholds it reports; counts on a log scale. "
        f"{legend}</p>"
        f'<div class="grid">{"".join(cards)}</div>'
    )


def _weights_section(report: dict, scores: pa.Table, flagged: np.ndarray) -> str:
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


def _decision_note(decision: dict) -> str:
    parts = []
    if "min_votes" in decision:
        parts.append(f"min_votes = {decision['min_votes']}")
    if "removal_cap" in decision:
        cap = "applied" if decision.get("cap_applied") else "not reached"
        parts.append(f"removal cap {decision['removal_cap']:,} ({cap})")
    return ", ".join(parts)


def _legend() -> str:
    return (
        f'<span class="swatch" style="background:{plots.KEPT_COLOUR}"></span>kept '
        f'<span class="swatch" style="background:{plots.REMOVED_COLOUR}"></span>removed'
    )


def _histogram_card(title: str, kept: np.ndarray, removed: np.ndarray, notes: list[str]) -> str:
    svg = plots.score_histogram(kept, removed, label=f"{title} score histogram")
    note_html = "".join(f'<p class="note">{escape(n)}</p>' for n in notes if n)
    return f'<div class="panel"><h3>{escape(title)}</h3>{svg}{note_html}</div>'


def _classes_section(report: dict) -> str:
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
            text=f"{e['removed']:,} of {e['rows']:,} ({_pct(e['removed_fraction'])})",
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
        f'<p class="lead">Share of each class removed (axis to {_pct(scale)}); classes the '
        "verdict names as suspected targets in red.</p>"
        f'<div class="panel wide">{svg}{note}{size_notes}</div>'
    )


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
    keys, codes = _class_codes(scores)
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


def _flags_section(report: dict, scores: pa.Table) -> str:
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
        acts = []
        if entry.get("turned_over"):
            acts.append("its flags were turned over to the rest of the class")
        if entry.get("not_backed_misfit"):
            acts.append("its flags, rows the bootstrap model cannot fit, stayed")
        pixels = entry.get("pixel_excess") or {}
        if pixels.get("suspect"):
            acts.append(
                f"{_pct(pixels['class_share'])} of its rows disagree with their label by their "
                f"nearest images (other classes: {_pct(pixels['reference_share'])})"
            )
        if entry.get("flagged_by_splits"):
            acts.append(f"{entry['flagged_by_splits']:,} rows were flagged by its splits")
        if entry.get("removal_cap") is not None:
            acts.append(f"at most {entry['removal_cap']:,} rows removed")
        notes.append(
            f"Class {names.get(key, key)}: {entry['rows']:,} rows where "
            f"{entry['rows_like_others']:,.0f} were expected from {against}"
            + (f"; {'; '.join(acts)}." if acts else ".")
        )
    refine = (report.get("decision") or {}).get("refine") or {}
    for key, entry in (refine.get("per_class") or {}).items():
        if entry.get("withdrawn"):
            notes.append(
                f"Class {names.get(key, key)}: {entry['flagged_before']:,} flagged rows kept; "
                f"a discriminant fitted on the class's other rows recognised "
                f"{_pct(entry['kept_share'])} of them, so they share no direction in feature "
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


def _unscored(scores: pa.Table) -> np.ndarray:
    """Rows set aside before scoring (unreadable image, missing label)."""
    reasons = scores.column(REASONS).combine_chunks()
    unscored = np.zeros(scores.num_rows, dtype=bool)
    flat = pc.list_flatten(reasons)
    if len(flat):
        hit = pc.is_in(flat, value_set=pa.array([REASON_UNREADABLE, REASON_MISSING_LABEL]))
        parents = pc.list_parent_indices(reasons).to_numpy(zero_copy_only=False)
        unscored[parents[hit.to_numpy(zero_copy_only=False)]] = True
    return unscored


def _projection_section(scores: pa.Table, flagged: np.ndarray) -> str:
    if EMBEDDING_X not in scores.column_names:
        return '<p class="note">This run saved no projection.</p>'
    x = scores.column(EMBEDDING_X).to_numpy(zero_copy_only=False)
    y = scores.column(EMBEDDING_Y).to_numpy(zero_copy_only=False)
    finite = np.isfinite(x) & np.isfinite(y)
    rng = np.random.default_rng(0)
    picked = []
    shown = {}
    for mask, cap, name in (
        (finite & ~flagged, SCATTER_KEPT_POINTS, "kept"),
        (finite & flagged, SCATTER_REMOVED_POINTS, "removed"),
    ):
        rows = np.flatnonzero(mask)
        if len(rows) > cap:
            rows = np.sort(rng.choice(rows, size=cap, replace=False))
        picked.append(rows)
        shown[name] = (len(rows), int(mask.sum()))
    rows = np.concatenate(picked)
    svg = plots.scatter(x[rows], y[rows], flagged[rows], label="embedding projection")
    kept, removed = shown["kept"], shown["removed"]
    return (
        '<p class="lead">The bootstrap model\'s penultimate-layer features of every '
        "scored row, projected on their first two principal components. A backdoor "
        "often shows as a tight cluster of its own. "
        f"{_legend()} &middot; drawn: {kept[0]:,} of {kept[1]:,} kept, "
        f"{removed[0]:,} of {removed[1]:,} removed.</p>"
        f'<div class="panel wide">{svg}</div>'
    )


def _thumbnails_section(
    report: dict,
    scores: pa.Table,
    flagged: np.ndarray,
    clean_path: Path,
    quarantine_path: Path,
) -> str:
    head = (
        f'<p class="lead">Up to {THUMBS_PER_CLASS} rows a class with the highest poison_score '
        f"(removed rows framed in red), for up to {THUMB_CLASSES} classes: suspected target "
        "classes first, then those with the highest scores.</p>"
    )
    image_column = report.get("config", {}).get("data", {}).get("image_column", "image")
    chosen = _suspicious_rows(report, scores, flagged)
    if not chosen:
        return head + '<p class="note">No scored rows.</p>'
    wanted = np.concatenate([rows for _, rows in chosen])
    cells = _image_cells(wanted, scores, flagged, clean_path, quarantine_path, image_column)
    ids = scores.column(SAMPLE_ID)
    poison = scores.column(POISON_SCORE).to_numpy(zero_copy_only=False)
    reasons = scores.column(REASONS)
    per_class = report.get("per_class", {})
    blocks = []
    for key, rows in chosen:
        entry = per_class.get(key, {"name": key, "removed": 0, "rows": 0})
        figures = [
            _figure(
                str(ids[int(row)]),
                _thumbnail(cells.get(int(row))),
                float(poison[row]),
                bool(flagged[row]),
                reasons[int(row)].as_py() or [],
            )
            for row in rows
        ]
        blocks.append(
            f'<div class="thumbrow"><div class="cls"><b>{escape(str(entry["name"]))}</b>'
            f"<span>{entry['removed']:,} of {entry['rows']:,} removed</span></div>"
            f'<div class="thumbs">{"".join(figures)}</div></div>'
        )
    return head + f'<div class="panel wide">{"".join(blocks)}</div>'


def _figure(sample: str, src: str | None, score: float, removed: bool, reasons: list) -> str:
    """One thumbnail with its poison_score, sample_id and the reasons it was removed."""
    sample = _short_id(sample)
    image = (
        f'<img src="{src}" alt="sample {sample}">' if src else '<div class="noimg">no preview</div>'
    )
    why = ", ".join(reasons) if removed else "kept"
    return (
        f'<figure class="{"removed" if removed else "kept"}" title="{sample}: {escape(why)}">'
        f"{image}<figcaption><b>{score:.2f}</b><br>{sample}"
        f'<span class="why">{escape(why)}</span></figcaption></figure>'
    )


def _short_id(sample_id: object) -> str:
    """A sample id for the page, HTML-escaped, cut to ``MAX_ID_CHARS`` with an ellipsis."""
    text = str(sample_id)
    if len(text) > MAX_ID_CHARS:
        text = text[:MAX_ID_CHARS] + "\u2026"
    return escape(text)


def _suspicious_rows(
    report: dict, scores: pa.Table, flagged: np.ndarray
) -> list[tuple[str, np.ndarray]]:
    """(class key, rows by falling poison_score) for the classes shown, in display order."""
    keys, codes = _class_codes(scores)
    poison = scores.column(POISON_SCORE).to_numpy(zero_copy_only=False).astype(np.float64)
    rows_all = np.flatnonzero(~_unscored(scores) & (codes >= 0))
    if not len(rows_all):
        return []
    best = np.full(len(keys), -np.inf)
    np.maximum.at(best, codes[rows_all], poison[rows_all])
    suspect = [c["label"] for c in report.get("verdict", {}).get("suspect_classes", [])]
    present = {k for k, b in zip(keys, best, strict=True) if b > -np.inf}
    rest = [keys[i] for i in np.argsort(-best, kind="stable") if keys[i] not in suspect]
    ranked = [k for k in suspect if k in present] + [k for k in rest if k in present]
    chosen = []
    for key in ranked[:THUMB_CLASSES]:
        rows = rows_all[codes[rows_all] == keys.index(key)]
        top = rows[np.argsort(-poison[rows], kind="stable")[:THUMBS_PER_CLASS]]
        chosen.append((key, top))
    return chosen


def _class_codes(scores: pa.Table) -> tuple[list[str], np.ndarray]:
    """The class keys as report.json writes them (str of the label), and each row's index
    into them (-1 without a label), without a Python loop a row."""
    encoded = pc.cast(scores.column(LABEL), pa.string()).combine_chunks().dictionary_encode()
    keys = encoded.dictionary.to_pylist()
    return keys, encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)


def _image_cells(
    rows: np.ndarray,
    scores: pa.Table,
    flagged: np.ndarray,
    clean_path: Path,
    quarantine_path: Path,
    image_column: str,
) -> dict[int, Any]:
    """Image cells of ``rows`` (scores positions), read from the row groups that hold them.

    clean.parquet holds the kept rows and quarantine.parquet the removed rows, each in
    source order, so a row's position there is the count of same-fate rows before it.
    A cell whose sample_id does not match is left out rather than shown under a wrong id.
    """
    position_in_clean = np.cumsum(~flagged) - 1
    position_in_quarantine = np.cumsum(flagged) - 1
    ids = scores.column(SAMPLE_ID)
    cells: dict[int, Any] = {}
    for path, mask, positions in (
        (clean_path, ~flagged[rows], position_in_clean),
        (quarantine_path, flagged[rows], position_in_quarantine),
    ):
        subset = rows[mask]
        if not len(subset):
            continue
        file = pq.ParquetFile(path)
        starts = np.cumsum(
            [0] + [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)]
        )
        wanted = positions[subset]
        groups = np.searchsorted(starts, wanted, side="right") - 1
        for group in np.unique(groups):
            table = file.read_row_group(int(group), columns=[SAMPLE_ID, image_column])
            for row, position in zip(subset[groups == group], wanted[groups == group], strict=True):
                local = int(position - starts[group])
                if table.column(SAMPLE_ID)[local].as_py() == ids[int(row)].as_py():
                    cells[int(row)] = table.column(image_column)[local].as_py()
    return cells


def _thumbnail(cell: Any) -> str | None:
    """A data: URI of a PNG thumbnail of an image cell, or None when it cannot be shown."""
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if not isinstance(data, bytes | bytearray):
        return None  # a path string, or a struct without bytes: nothing self-contained to show
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("L" if image.mode in ("1", "L", "I", "F", "I;16") else "RGB")
            image.thumbnail((THUMB_PIXELS, THUMB_PIXELS))
            buf = io.BytesIO()
            image.save(buf, format="PNG")
    except Exception:  # noqa: BLE001 - Pillow codecs raise many types; the page says so
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _run_section(report: dict) -> str:
    timings = report.get("stage_timings", {})
    total = sum(t.get("seconds", 0.0) for t in timings.values())
    bars = [
        plots.Bar(
            label=name,
            value=t.get("seconds", 0.0),
            text=f"{t.get('seconds', 0.0):.2f} s, {t.get('rows_per_second', 0):,.0f} rows/s",
        )
        for name, t in timings.items()
    ]
    longest = max((b.value for b in bars), default=0.0)
    chars = max((len(b.label) for b in bars), default=0)
    svg = plots.bar_chart(
        bars, scale_max=longest, width=520, label_chars=chars, label="stage timings"
    )
    source = report.get("source", {})
    facts = [
        ("source", source.get("uri")),
        ("source kind", source.get("kind")),
        ("source fingerprint", source.get("fingerprint")),
        ("config fingerprint", report.get("config_fingerprint")),
        ("device", report.get("device")),
        ("created", report.get("created_at")),
        *((f"{k}", v) for k, v in report.get("versions", {}).items()),
    ]
    fact_rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts)
    config = toml_text(report.get("config", {}))
    return (
        f'<div class="grid two"><div class="panel"><h3>Stage timings ({total:.1f} s)</h3>'
        f"{svg}</div>"
        f'<div class="panel"><h3>Provenance</h3><table class="facts">{fact_rows}</table></div>'
        f'<div class="panel wide"><h3>Config, as a run.toml</h3><pre>{escape(config)}</pre>'
        "</div></div>"
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main>
{body}
<footer>Written by <code>sanitize</code>; re-render with
<code>sanitize report OUTDIR</code>. Every figure comes from report.json and
scores.parquet in this directory.</footer>
</main>
</body>
</html>
"""

_CSS = """
:root { --ink:#1f2328; --muted:#5f6670; --line:#e3e5e8; --bg:#f6f7f9; --red:#d1493f;
  --green:#2f8a4c; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 40px; }
h1 { font-size: 24px; margin: 0 0 2px; letter-spacing: -0.01em; }
h2 { font-size: 17px; margin: 30px 0 6px; }
h3 { font-size: 13px; margin: 0 0 6px; color: var(--muted); font-weight: 600; }
.meta { color: var(--muted); margin: 2px 0 10px; font-size: 12.5px; word-break: break-all; }
.lead { color: var(--muted); margin: 0 0 12px; max-width: 880px; }
.verdict { display:flex; align-items:center; gap:10px; padding: 12px 16px;
  border-radius: 8px; font-weight: 600; font-size: 16px; margin: 14px 0; }
.verdict .dot { width:12px; height:12px; border-radius:50%; flex:none; }
.verdict.bad { background:#fdecea; color:#8f2119; border:1px solid #f3c2bd; }
.verdict.bad .dot { background: var(--red); }
.verdict.good { background:#e9f6ee; color:#1d5e33; border:1px solid #bfe3cb; }
.verdict.good .dot { background: var(--green); }
.cards { display:grid; grid-template-columns: repeat(5, 1fr); gap: 12px; }
.card, .panel { background:#fff; border:1px solid var(--line); border-radius: 8px; }
.card { padding: 12px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; }
.card .v { font-size: 24px; font-weight: 650; }
.card .s { color: var(--muted); font-size: 12px; min-height: 1em; }
.panel { padding: 14px 16px; }
.grid { display:grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 14px; }
.grid.two { grid-template-columns: 1fr 1fr; }
.wide { grid-column: 1 / -1; }
.chart { width: 100%; height: auto; display:block; }
.note { color: var(--muted); font-size: 12px; margin: 4px 0 0; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px;
  margin: 0 4px 0 8px; vertical-align: baseline; }
.thumbrow { display:flex; gap: 14px; padding: 10px 0; border-bottom: 1px solid var(--line); }
.thumbrow:last-child { border-bottom: 0; }
.cls { width: 130px; flex: none; display:flex; flex-direction:column; justify-content:center; }
.cls span { color: var(--muted); font-size: 12px; }
.thumbs { display:flex; flex-wrap: wrap; gap: 10px; }
figure { margin:0; width: 88px; text-align:center; }
figure img, .noimg { width: 76px; height: 76px; object-fit: contain; background:#111;
  image-rendering: pixelated; border: 3px solid #cfd4da; border-radius: 6px; display:block;
  margin: 0 auto; }
figure.removed img, figure.removed .noimg { border-color: var(--red); }
.noimg { color:#bbb; font-size: 11px; display:flex; align-items:center; justify-content:center; }
figcaption { font-size: 11px; line-height: 1.3; color: var(--muted); margin-top: 3px;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
figcaption b { color: var(--ink); }
figcaption .why { display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical;
  white-space: normal; overflow-wrap: anywhere; overflow: hidden; }
figure.removed .why { color: #8f2119; }
.toc { display:flex; flex-wrap: wrap; gap: 6px 18px; padding: 8px 0 2px;
  border-bottom: 1px solid var(--line); font-size: 13px; }
.toc a, .download a { color: #1f5fbf; text-decoration: none; }
.toc a:hover, .download a:hover { text-decoration: underline; }
.download { margin: 12px 0 8px; }
.download a { font-weight: 600; }
.download span { color: var(--muted); font-size: 12.5px; margin-left: 6px; }
.scroll { overflow-x: auto; }
table.flags { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
.flags th, .flags td { padding: 3px 10px; text-align: right; border-bottom: 1px solid var(--line);
  white-space: nowrap; }
.flags thead th { color: var(--muted); font-weight: 600; vertical-align: bottom; }
.flags .name { text-align: left; max-width: 220px; overflow: hidden; text-overflow: ellipsis; }
.flags td.zero { color: #b6bbc2; }
.flags tr.suspect td { background: #fdecea; }
.flags tfoot th { border-bottom: 0; }
table.facts { border-collapse: collapse; width: 100%; font-size: 12.5px; }
.facts th { text-align:left; color: var(--muted); font-weight: 500; padding: 3px 12px 3px 0;
  white-space: nowrap; vertical-align: top; }
.facts td { padding: 3px 0; word-break: break-all; }
pre { margin: 0; font-size: 12px; background: #f6f8fa; padding: 10px 12px; border-radius: 6px;
  overflow: auto; max-height: 420px; }
footer { color: var(--muted); font-size: 12px; margin-top: 34px; }
"""
