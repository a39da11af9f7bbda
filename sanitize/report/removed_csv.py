"""The removed rows as a CSV file inside the page: the text, safe to open in a spreadsheet,
and the ``data:`` link that downloads it."""

from __future__ import annotations

import base64
import csv
import io

import numpy as np
import pyarrow as pa

from sanitize.data.schema import LABEL, POISON_SCORE, REASONS, SAMPLE_ID

CSV_ROWS = 20_000  # removed rows in the page's CSV (about 1 MB); beyond, the highest scores
CSV_BYTES = 1_000_000  # and at most this much CSV text (ids can be long)


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


def download_link(report: dict, scores: pa.Table, flagged: np.ndarray) -> str:
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
