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

The page is put together here from the modules that draw its parts: :mod:`.page` (skeleton,
stylesheet, contents), :mod:`.overview` (header, run facts), :mod:`.removed_csv` (the CSV
link), :mod:`.score_sections` (score and weight histograms), :mod:`.class_sections` (removal
per class, flags per class and detector), :mod:`.projection` (the embedding projection, also
computed at run time) and :mod:`.thumbnails` (the most suspicious images).
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sanitize.data.schema import (
    FLAGGED,
    LABEL,
    POISON_SCORE,
    REASONS,
    SAMPLE_ID,
    SAMPLE_WEIGHT,
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
from sanitize.report.class_sections import (
    BAR_CLASSES,
    CLASS_TABLE_ROWS,
    _size_notes,
    class_detector_flags,
    classes_section,
    flags_section,
)
from sanitize.report.overview import header, run_section
from sanitize.report.page import contents, page
from sanitize.report.projection import (
    EMBEDDING_X,
    EMBEDDING_Y,
    PROJECTION_CHUNK_ROWS,
    PROJECTION_FIT_ROWS,
    SCATTER_KEPT_POINTS,
    SCATTER_REMOVED_POINTS,
    embedding_projection,
    projection_section,
    with_projection,
)
from sanitize.report.removed_csv import CSV_BYTES, CSV_ROWS, download_link, removed_rows_csv
from sanitize.report.score_sections import detectors_section, weights_section
from sanitize.report.thumbnails import (
    MAX_ID_CHARS,
    THUMB_CLASSES,
    THUMB_PIXELS,
    THUMBS_PER_CLASS,
    thumbnails_section,
)

# Importable from here as before the page's parts moved to their own modules.
__all__ = [
    "BAR_CLASSES",
    "CLASS_TABLE_ROWS",
    "CSV_BYTES",
    "CSV_ROWS",
    "EMBEDDING_X",
    "EMBEDDING_Y",
    "MAX_ID_CHARS",
    "PROJECTION_CHUNK_ROWS",
    "PROJECTION_FIT_ROWS",
    "SCATTER_KEPT_POINTS",
    "SCATTER_REMOVED_POINTS",
    "THUMBS_PER_CLASS",
    "THUMB_CLASSES",
    "THUMB_PIXELS",
    "_size_notes",
    "class_detector_flags",
    "embedding_projection",
    "removed_rows_csv",
    "render_report",
    "with_projection",
    "write_report_html",
]


def render_report(
    report: dict[str, Any], scores: pa.Table, *, clean_path: Path, quarantine_path: Path
) -> str:
    """The whole page as a string.

    ``scores`` carries the projection columns when the run saved them. ``clean_path`` and
    ``quarantine_path`` are both in source order (as
    :func:`sanitize.pipeline.export.write_tables` writes them); thumbnails are read from them.

    Parameters
    ----------
    report : dict
        The run's ``report.json``.
    scores : pyarrow.Table
        The run's ``scores.parquet`` (source order).
    clean_path, quarantine_path : Path
        The run's ``clean.parquet`` and ``quarantine.parquet``; thumbnails are read from them.
    """
    flagged = scores.column(FLAGGED).to_numpy(zero_copy_only=False).astype(bool)
    sections = [
        ("scores", "Score distributions", detectors_section(report, scores, flagged)),
        ("weights", "Training weights", weights_section(report, scores, flagged)),
        ("classes", "Removal per class", classes_section(report)),
        ("flags", "Flags per class and detector", flags_section(report, scores)),
        ("projection", "Embedding projection", projection_section(scores, flagged)),
        (
            "images",
            "Most suspicious images",
            thumbnails_section(report, scores, flagged, clean_path, quarantine_path),
        ),
        ("run", "Run", run_section(report)),
    ]
    sections = [(key, title, body) for key, title, body in sections if body]
    body = [
        header(report),
        download_link(report, scores, flagged),
        contents(sections),
        *(
            f'<section id="{key}"><h2>{escape(title)}</h2>{html}</section>'
            for key, title, html in sections
        ),
    ]
    return page(f"sanitize report: {report['source'].get('uri', '')}", body)


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
    rendered = render_report(
        report,
        _read_scores(out / SCORES_FILE),
        clean_path=out / CLEAN_FILE,
        quarantine_path=out / QUARANTINE_FILE,
    )
    with StagedOutputs(out) as staged:
        staged.write_text(REPORT_HTML, rendered)
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
