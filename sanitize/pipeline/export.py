"""Atomic writes of the run's outputs, with every source column carried unchanged.

Each file is written under a temporary name in the output directory and renamed into
place only once all of them are complete (``os.replace`` is atomic on one filesystem), so a
crash leaves no half-written file under a final name. ``report.json`` is renamed last: its
presence says the run finished. A run that is killed leaves its temporary files; the next
run into the directory removes them (:func:`remove_stale_staged`) once it holds the lock.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
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
from sanitize.data.source import HF_METADATA_KEY, hf_metadata
from sanitize.errors import SourceChangedError
from sanitize.pipeline.paths import CLEAN_FILE, QUARANTINE_FILE, SCORES_FILE

PROVENANCE_KEY = b"sanitize"
# The temporary name StagedOutputs gives output NAME: .NAME.TOKEN.tmp, TOKEN 8 hex digits.
_STAGED_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


class StagedOutputs:
    """Files written under temporary names, renamed to their final names on :meth:`commit`.

    Used as a context manager: leaving the block without a commit (an exception) removes
    the temporary files and leaves any earlier outputs untouched.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self._token = uuid.uuid4().hex[:8]
        self._staged: list[tuple[Path, Path]] = []

    def path(self, name: str) -> Path:
        """A temporary path for output ``name``; renamed to ``out/name`` on commit."""
        tmp = self.out / f".{name}.{self._token}.tmp"
        self._staged.append((tmp, self.out / name))
        return tmp

    def staged(self, name: str) -> Path:
        """The temporary path already given for output ``name`` (to read it before commit)."""
        for tmp, final in self._staged:
            if final.name == name:
                return tmp
        raise KeyError(f"no output {name!r} staged")

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        with open(self.path(name), "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=False, default=str)
            fh.flush()
            os.fsync(fh.fileno())

    def write_text(self, name: str, text: str) -> None:
        with open(self.path(name), "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    def commit(self) -> None:
        for tmp, final in self._staged:
            os.replace(tmp, final)
        self._staged = []

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for tmp, _ in self._staged:
            tmp.unlink(missing_ok=True)


def remove_stale_staged(out: Path) -> list[Path]:
    """Remove the temporary files that killed runs left in ``out``; return their paths.

    Only for a caller that holds the run lock of ``out``: no other run is writing there.
    """
    stale = [p for p in Path(out).glob(".*.tmp") if _STAGED_NAME.fullmatch(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _added_fields(schema: pa.Schema, added: list[pa.Field]) -> pa.Schema:
    """``schema`` plus ``added`` (a source column of the same name is replaced in place)."""
    for field in added:
        index = schema.get_field_index(field.name)
        schema = schema.set(index, field) if index >= 0 else schema.append(field)
    return schema


def _hf_features(arrow_type: pa.DataType) -> dict[str, Any]:
    if pa.types.is_list(arrow_type):
        return {"feature": _hf_features(arrow_type.value_type), "_type": "Sequence"}
    dtype = {pa.string(): "string", pa.large_string(): "string", pa.bool_(): "bool"}.get(
        arrow_type, str(arrow_type)
    )
    return {"dtype": dtype, "_type": "Value"}


def _with_metadata(schema: pa.Schema, added: list[pa.Field], provenance: dict) -> pa.Schema:
    """Keep the source metadata, describe the added columns in the HF features too.

    Hugging Face ``datasets`` trusts the ``huggingface`` metadata only when it names every
    column, so the added columns are declared there; otherwise the image column would load
    as a plain struct instead of an Image.
    """
    metadata = dict(schema.metadata or {})
    hf = hf_metadata(schema)
    if hf is not None:
        features = hf["info"]["features"]
        for field in added:
            features.setdefault(field.name, _hf_features(field.type))
        metadata[HF_METADATA_KEY] = json.dumps(hf).encode()
    else:
        # Malformed (the read stage warned): datasets would fail on it; left out.
        metadata.pop(HF_METADATA_KEY, None)
    metadata[PROVENANCE_KEY] = json.dumps(provenance).encode()
    return schema.with_metadata(metadata)


def _set_columns(
    batch: pa.RecordBatch, schema: pa.Schema, part: pa.Table, names: list[str]
) -> pa.RecordBatch:
    """``batch`` with the ``names`` columns of ``part`` (same rows) set, in ``schema``'s order."""
    columns = {name: batch.column(name) for name in batch.schema.names}
    columns.update({name: part.column(name).combine_chunks() for name in names})
    return pa.record_batch([columns[name] for name in schema.names], schema=schema)


def _check_same_rows(
    batch: pa.RecordBatch, part: pa.Table, id_column: str | None, offset: int, total: int
) -> None:
    """SourceChangedError unless ``batch`` holds the rows ``part`` decided on (same ids)."""
    if batch.num_rows != part.num_rows:
        raise SourceChangedError(
            f"source changed during the run: it has more than the {total} rows it had when "
            "it was read; no output written"
        )
    if id_column is None:
        return
    now, then = batch.column(id_column).to_pylist(), part.column(SAMPLE_ID).to_pylist()
    for row, (new, old) in enumerate(zip(now, then, strict=True), offset):
        if new != old:
            raise SourceChangedError(
                f"source changed during the run: row {row} has {id_column} {new!r}, it had "
                f"{old!r} when it was read; no output written"
            )


def write_tables(
    source_batches,
    source_schema: pa.Schema,
    decision: pa.Table,
    staged: StagedOutputs,
    provenance: dict[str, Any],
    id_column: str | None = None,
    class_names: list[str] | None = None,
) -> dict[str, int]:
    """Split the source rows into clean and quarantine files; write the scores file.

    ``decision`` holds one row a source row, in source order: ``sample_id``,
    ``poison_score``, ``sample_weight``, ``flagged``, ``reasons`` and the per-detector scores.

    Parameters
    ----------
    source_batches : iterable of pyarrow.RecordBatch
        The source, every row in source order (the order of ``decision``).
    decision : pyarrow.Table
        The decision's columns, one row a source row (see above).
    id_column : str or None, default=None
        Source column that must equal ``decision``'s ``sample_id``; None: ids are row ordinals.
    class_names : list of str or None, default=None
        Names of the labels 0..K-1 (a ClassLabel in ``scores.parquet``); None: other labels.

    Returns
    -------
    dict with ``kept`` and ``removed`` row counts.

    Raises
    ------
    SourceChangedError
        The batches hold other rows or another row count than ``decision``.
    """
    clean_added, quarantine_added = _added_columns(source_schema, decision)
    clean_schema = _with_metadata(
        _added_fields(source_schema, clean_added), clean_added, provenance
    )
    quarantine_schema = _with_metadata(
        _added_fields(source_schema, quarantine_added), quarantine_added, provenance
    )
    flagged_all = decision.column(FLAGGED).to_numpy(zero_copy_only=False)
    kept = removed = offset = 0
    with (
        pq.ParquetWriter(staged.path(CLEAN_FILE), clean_schema, compression="zstd") as clean_w,
        pq.ParquetWriter(
            staged.path(QUARANTINE_FILE), quarantine_schema, compression="zstd"
        ) as quarantine_w,
    ):
        for batch in source_batches:
            n = batch.num_rows
            part = decision.slice(offset, n)
            _check_same_rows(batch, part, id_column, offset, decision.num_rows)
            flagged = flagged_all[offset : offset + n]
            offset += n
            keep_idx = pa.array(np.flatnonzero(~flagged))
            drop_idx = pa.array(np.flatnonzero(flagged))
            clean_part = _set_columns(batch, clean_schema, part, [f.name for f in clean_added])
            quarantine_part = _set_columns(
                batch, quarantine_schema, part, [f.name for f in quarantine_added]
            )
            if len(keep_idx):
                clean_w.write_batch(clean_part.take(keep_idx))
            if len(drop_idx):
                quarantine_w.write_batch(quarantine_part.take(drop_idx))
            kept += len(keep_idx)
            removed += len(drop_idx)
    if offset != decision.num_rows:
        raise SourceChangedError(
            f"source changed during the run: it has {offset} rows, {decision.num_rows} when "
            "it was read; no output written"
        )
    scores = decision.replace_schema_metadata(
        _scores_metadata(decision.schema, class_names, provenance)
    )
    pq.write_table(scores, staged.path(SCORES_FILE), compression="zstd")
    return {"kept": kept, "removed": removed}


def _added_columns(
    source_schema: pa.Schema, decision: pa.Table
) -> tuple[list[pa.Field], list[pa.Field]]:
    """The columns the clean file and the quarantine file add to the source's."""
    # A source sample_id column is the identity and stays exactly as it is.
    id_fields = [] if SAMPLE_ID in source_schema.names else [decision.schema.field(SAMPLE_ID)]
    clean_added = id_fields + [
        pa.field(SAMPLE_WEIGHT, pa.float32()),
        pa.field(POISON_SCORE, pa.float32()),
    ]
    quarantine_added = id_fields + [
        pa.field(POISON_SCORE, pa.float32()),
        pa.field(REASONS, pa.list_(pa.string())),
    ]
    return clean_added, quarantine_added


def _scores_metadata(
    schema: pa.Schema, class_names: list[str] | None, provenance: dict[str, Any]
) -> dict[bytes, bytes]:
    """Provenance, and HF features naming every column (``label`` a ClassLabel when known)."""
    features = {field.name: _hf_features(field.type) for field in schema}
    if class_names is not None and LABEL in features:
        features[LABEL] = {"names": list(class_names), "_type": "ClassLabel"}
    hf = {"info": {"features": features}}
    return {
        HF_METADATA_KEY: json.dumps(hf).encode(),
        PROVENANCE_KEY: json.dumps(provenance).encode(),
    }


def dataset_card(class_names: list[str], counts: dict[str, int]) -> str:
    """README.md that makes the output directory a Hugging Face dataset repository.

    ``load_dataset(OUT)`` gives the clean rows; ``load_dataset(OUT, "quarantine")`` and
    ``load_dataset(OUT, "scores")`` the others.
    """
    configs = [("default", CLEAN_FILE), ("quarantine", QUARANTINE_FILE), ("scores", SCORES_FILE)]
    yaml = ["---", "configs:"]
    for name, file in configs:
        yaml += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: {file}"]
        if name == "default":
            yaml.append("  default: true")
    yaml.append("---")
    names = "\n".join(f"| {i} | {json.dumps(n)[1:-1]} |" for i, n in enumerate(class_names))
    return (
        "\n".join(yaml)
        + f"""

# Sanitized dataset

Written by `sanitize`: {counts["kept"]:,} rows kept in `{CLEAN_FILE}` (with `sample_weight`
and `poison_score`), {counts["removed"]:,} set aside in `{QUARANTINE_FILE}` (with their
`reasons`), every row's detector scores in `{SCORES_FILE}`; `report.html` and `report.json`
say why.

```python
from datasets import load_dataset
clean = load_dataset("path/to/this/directory")["train"]
scores = load_dataset("path/to/this/directory", "scores")["train"]
```

| label | class |
|---|---|
{names}
"""
    )
