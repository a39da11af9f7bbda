"""Validate and describe a source without running the pipeline (``sanitize inspect``).

The source goes through the read stage's own validation (:func:`read_source`), so inspect
refuses exactly what a run would refuse, with the same one-line message, and counts the
rows a run would set aside. Images are decoded (that is the only way to find unreadable
ones) into a temporary directory at a small fixed size, which keeps the cost to one pass
of decoding and almost no disk.
"""

from __future__ import annotations

import dataclasses
import io
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from sanitize.config import MIN_IMAGE_SIZE, DataConfig
from sanitize.data.decode import image_bytes, probe_image
from sanitize.data.observed import ObservedSource
from sanitize.data.read import PROBED_IMAGES, id_column, read_source, working_shape
from sanitize.data.schema import REASON_MISSING_LABEL, REASON_UNREADABLE, ROWS_FILE
from sanitize.data.source import Source, open_source
from sanitize.report.progress import track

# Side images are decoded to while validating: small, since only readability is checked.
_CHECK_SIZE = MIN_IMAGE_SIZE
_SHOWN_ROWS = 10


@dataclass(frozen=True)
class SourceDescription:
    """What :func:`describe_source` found.

    Attributes
    ----------
    uri, kind : str
        The source as given, and ``parquet``, ``parquet_dir``, ``image_folder`` or ``npz``.
    rows : int
    columns : dict of str to str
        Column name to Arrow type, in source order.
    image_column, label_column : str
    id_column : str or None
        The column used as ``sample_id``; None when the row ordinal is the id.
    classes : list of dict
        One ``{"index", "label", "name", "rows"}`` per class, in class-index order
        (usable rows only).
    image_size, channels : int
        What a run would decode to (the configured values, else the first readable image's).
    image_sizes, image_modes : dict of str to int
        ``"WxH"`` and Pillow mode counts over ``sampled`` rows spread evenly over the source.
    sampled : int
    unreadable, missing_label : int
        Rows a run would quarantine with reason ``unreadable`` / ``missing_label``.
    unreadable_ids, missing_label_ids : list
        ``sample_id`` of the first few of them.
    fingerprint : str
        Content digest of the source (the one ``report.json`` records).
    """

    uri: str
    kind: str
    rows: int
    columns: dict[str, str]
    image_column: str
    label_column: str
    id_column: str | None
    classes: list[dict[str, Any]]
    image_size: int
    channels: int
    image_sizes: dict[str, int]
    image_modes: dict[str, int]
    sampled: int
    unreadable: int
    missing_label: int
    unreadable_ids: list[Any]
    missing_label_ids: list[Any]
    fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def text(self) -> str:
        """A few lines for a person."""
        id_text = self.id_column or "row ordinal (no sample_id column)"
        lines = [
            f"source       {self.uri} ({self.kind})",
            f"rows         {self.rows:,}",
            f"fingerprint  {self.fingerprint}",
            "columns      " + ", ".join(f"{k}: {v}" for k, v in self.columns.items()),
            f"image        column {self.image_column!r}; decoded to {self.image_size}x"
            f"{self.image_size}, {self.channels} channel(s)",
            f"             sampled {self.sampled} rows: sizes {_counts(self.image_sizes)}; "
            f"modes {_counts(self.image_modes)}",
            f"label        column {self.label_column!r}; {len(self.classes)} classes",
            f"id           {id_text}",
        ]
        for c in self.classes:
            name = f" ({c['name']})" if c["name"] != str(c["label"]) else ""
            lines.append(f"  class {c['index']:>3}  label {c['label']!r}{name}: {c['rows']:,} rows")
        for what, count, ids in (
            ("unreadable", self.unreadable, self.unreadable_ids),
            ("null label", self.missing_label, self.missing_label_ids),
        ):
            shown = f" (sample_id {', '.join(map(repr, ids))}{', ...' if count > len(ids) else ''})"
            lines.append(f"{what:<12} {count:,} rows{shown if count else ''}")
        return "\n".join(_printable(line) for line in lines)


def _printable(text: str) -> str:
    """``text`` with control characters escaped (``\\x1b``): names in a source are not to
    reach a terminal as escape sequences."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def describe_source(uri: str, data: DataConfig, *, sample: int = 64) -> SourceDescription:
    """Validate ``uri`` as a run would and describe it; nothing is written next to it.

    Parameters
    ----------
    uri : str
        A local path or fsspec URI (see :func:`sanitize.data.open_source`).
    data : DataConfig
        Column names, image size and channels, as the run would use them.
    sample : int, default=64
        Rows, spread evenly over the source, whose image sizes and modes are tallied.

    Raises
    ------
    InputError
        Whatever the read stage would refuse (missing column, no rows, one class, ...).
    """
    source = open_source(uri, data)
    sampler = _Sample(source, data, sample)
    checked = data.replace(image_size=data.image_size or _CHECK_SIZE)
    with (
        tempfile.TemporaryDirectory(prefix="sanitize-inspect-") as work,
        track("inspect", total=source.num_rows) as bar,
    ):

        def observe(batch: pa.RecordBatch, base_dir: str, start: int) -> None:
            sampler.observe(batch, base_dir, start)
            bar.advance(batch.num_rows)

        summary = read_source(ObservedSource(source, observe), checked, work)
        rows = pq.read_table(f"{work}/{ROWS_FILE}", columns=["sample_id", "reason", "y"])
    reasons = rows.column("reason").to_pylist()
    ids = rows.column("sample_id").to_pylist()
    unreadable = [i for i, r in zip(ids, reasons, strict=True) if r == REASON_UNREADABLE]
    missing = [i for i, r in zip(ids, reasons, strict=True) if r == REASON_MISSING_LABEL]
    return SourceDescription(
        uri=str(uri),
        kind=source.kind,
        rows=summary.n_rows,
        columns={f.name: str(f.type) for f in source.schema},
        image_column=data.image_column,
        label_column=data.label_column,
        id_column=id_column(source.schema, data),
        classes=[
            {"index": i, "label": value, "name": name, "rows": summary.label_counts[name]}
            for i, (value, name) in enumerate(
                zip(summary.class_values, summary.class_names, strict=True)
            )
        ],
        image_size=data.image_size or sampler.working_size or summary.image_size,
        channels=summary.channels,
        image_sizes=dict(sampler.sizes.most_common()),
        image_modes=dict(sampler.modes.most_common()),
        sampled=sampler.sampled,
        unreadable=len(unreadable),
        missing_label=len(missing),
        unreadable_ids=unreadable[:_SHOWN_ROWS],
        missing_label_ids=missing[:_SHOWN_ROWS],
        fingerprint=source.fingerprint(),
    )


class _Sample:
    """Tallies image sizes and modes of ``sample`` rows spread evenly over the source, and
    finds the first readable image, from the batches the read stage streams (so inspect
    reads the data once, plus once more for the fingerprint)."""

    def __init__(self, source: Source, data: DataConfig, sample: int) -> None:
        self._filesystem = source.filesystem
        self._column = data.image_column
        self._allow_external = data.allow_external_paths
        step = max(1, source.num_rows // max(1, sample))
        self._rows = set(range(0, source.num_rows, step)[:sample])
        self.sizes: Counter[str] = Counter()
        self.modes: Counter[str] = Counter()
        self.sampled = 0
        self._probes: list[tuple[int, int]] = []  # of the first images, as the run probes
        self.working_size: int | None = None

    def observe(self, batch: pa.RecordBatch, base_dir: str, start: int) -> None:
        if self._column not in batch.schema.names:
            return
        column = batch.column(self._column)
        wanted = [i for i in range(batch.num_rows) if start + i in self._rows]
        for cell in column.take(pa.array(wanted, pa.int64())).to_pylist():
            self._tally(cell, base_dir)
        for i in range(batch.num_rows if self.working_size is None else 0):
            if len(self._probes) == PROBED_IMAGES:
                break
            try:
                self._probes.append(probe_image(self._bytes(column[i].as_py(), base_dir)))
            except ValueError:
                continue
        if self.working_size is None and self._probes:
            self.working_size = working_shape(self._probes, warn=False)[1]  # read warns

    def _bytes(self, cell: Any, base_dir: str) -> bytes:
        return image_bytes(
            cell,
            filesystem=self._filesystem,
            base_dir=base_dir,
            allow_external=self._allow_external,
        )

    def _tally(self, cell: Any, base_dir: str) -> None:
        self.sampled += 1
        try:
            data = self._bytes(cell, base_dir)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                mode = image.mode
        except Exception:  # noqa: BLE001 - counted as unreadable below, as the run would
            self.sizes["unreadable"] += 1
            return
        self.sizes[f"{width}x{height}"] += 1
        self.modes[mode] += 1


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} x{v}" for k, v in counter.items()) or "-"
