"""The most suspicious images: which rows to show, their image cells read from clean.parquet
and quarantine.parquet by position, and the PNG thumbnails inlined in the page."""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from sanitize.data.schema import POISON_SCORE, REASONS, SAMPLE_ID
from sanitize.report.score_rows import class_codes, unscored

THUMB_CLASSES = 10  # classes with thumbnails: suspect classes first, then highest scores
THUMBS_PER_CLASS = 8  # most suspicious rows shown per class
MAX_ID_CHARS = 64  # a longer sample id is cut, so the page stays small on any ids
THUMB_PIXELS = 96  # longest side of a thumbnail; smaller images are enlarged by CSS only


def thumbnails_section(
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
    keys, codes = class_codes(scores)
    poison = scores.column(POISON_SCORE).to_numpy(zero_copy_only=False).astype(np.float64)
    rows_all = np.flatnonzero(~unscored(scores) & (codes >= 0))
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
