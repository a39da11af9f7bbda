"""Read the class distribution a clean delivery should have (``--expected-classes``).

The decision judges a class's size against it (``decision.expected_class_counts``, see
:mod:`sanitize.decision.class_size`): a class that holds far more rows than its expected
share has gained rows, which is what a dirty-label attack does to its target. Sources:

- a JSON object mapping class (name or label value) to count or share;
- a previous run's ``report.json``: the rows it kept in every class;
- any training-set source :func:`sanitize.data.open_source` reads (a validation split as
  Parquet, an image folder, an ``.npz``): its label counts.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc

from sanitize.config import DataConfig
from sanitize.data.read import canonical_labels
from sanitize.data.source import open_source
from sanitize.errors import InputError


def read_expected_counts(path: str | os.PathLike[str], data: DataConfig) -> dict[str, float]:
    """Expected count of every class in ``path``, keyed by class name or label value.

    Raises
    ------
    InputError
        The file is missing, holds no counts, or lacks the label column.
    """
    text = str(path)
    if text.endswith(".json"):
        return _from_json(Path(text))
    source = open_source(text, data)
    if data.label_column not in source.schema.names:
        raise InputError(
            f"expected-classes source {text} has no label column {data.label_column!r}"
        )
    counts: Counter[str] = Counter()
    start = 0
    for batch in source.iter_batches(data.batch_rows):
        labels = canonical_labels(data.label_column, batch.column(data.label_column), start)
        start += batch.num_rows
        for entry in pc.value_counts(labels.drop_null()).to_pylist():
            counts[str(entry["values"])] += entry["counts"]
    if not counts:
        raise InputError(f"expected-classes source {text} has no labelled rows")
    return {k: float(v) for k, v in counts.items()}


def _from_json(path: Path) -> dict[str, float]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"expected-classes file not found: {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"expected-classes file {path} is not readable JSON: {exc}") from None
    if isinstance(raw, dict) and isinstance(raw.get("per_class"), dict):
        # A previous run's report: the rows it kept, by label value.
        raw = {k: v["rows"] - v["removed"] for k, v in raw["per_class"].items()}
    if not isinstance(raw, dict) or not raw:
        raise InputError(
            f"expected-classes file {path} must hold a JSON object of class -> count "
            "or a sanitize report.json"
        )
    out: dict[str, float] = {}
    for name, count in raw.items():
        if isinstance(count, bool) or not isinstance(count, int | float):
            raise InputError(
                f"expected-classes file {path}: class {name!r} has {count!r}, not a number"
            )
        out[str(name)] = float(count)
    return out
