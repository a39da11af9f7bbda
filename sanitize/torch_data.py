"""The training hook: a torch ``Dataset`` over ``clean.parquet`` and its weighted sampler.

:class:`ImageParquetDataset` yields ``(image, label, weight)`` for every row of a Parquet
file in the Hugging Face image layout, ``clean.parquet`` included:

- ``image``: float32 tensor of shape (channels, size, size) in [0, 1], decoded from the
  image cell when the row is read (the encoded bytes are held in memory, the decoded pixels
  never are), then passed through ``transform`` when one is given;
- ``label``: int64 class index, mapped the way the pipeline maps labels: class ``i`` is the
  ``i``-th smallest label value (integers, or strings sorted) among the run's usable rows;
- ``weight``: float32 ``sample_weight`` (> 0, mean 1 in ``clean.parquet``; 1 in a file
  without that column, such as a test split).

:func:`weighted_sampler` draws rows in proportion to those weights. Use the sampler *or*
weight the loss by ``weight``, not both: each alone gives a row the influence its weight
asks for.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from sanitize.data import class_names_from_metadata, decode_image, image_bytes, probe_image
from sanitize.data.read import canonical_labels
from sanitize.data.schema import (
    LABEL,
    REASON_MISSING_LABEL,
    REASON_UNREADABLE,
    REASONS,
    SAMPLE_ID,
    SAMPLE_WEIGHT,
)
from sanitize.errors import InputError
from sanitize.pipeline.paths import REPORT_JSON, SCORES_FILE

_DECODE_THREADS = min(8, os.cpu_count() or 1)


class ImageParquetDataset(Dataset):
    """Rows of an HF-layout Parquet file as ``(image, label, weight)`` tensors.

    ``path`` is a run's ``clean.parquet``, or any file in the same layout (a test split).
    When it sits in a run's output directory, the run's ``report.json`` supplies the column
    names, image size and channels the run used, and its ``scores.parquet`` the class list (so
    a class the run removed entirely keeps its index).

    Torchvision transforms that take tensors fit ``transform`` (``RandomCrop``, ``Normalize``,
    ...). ``size`` defaults to the run's ``data.image_size``, else max(width, height) of the
    first row's image, as the pipeline does; ``channels`` to the run's ``data.channels``, else
    1 when the first row's image is in a grey mode and 3 otherwise. ``classes`` takes e.g.
    ``train.classes`` to index a test split as the training set; default: the run's classes
    (see ``path``), else the sorted distinct labels of the file.

    Parameters
    ----------
    path : str or path-like
        A Parquet file (local path or fsspec URI): a run's ``clean.parquet`` or one in its layout.
    transform : callable, optional
        Applied to each image tensor (float32, (C, H, W), in [0, 1]) before it is returned.
    size : int, optional
        Side every image is resized (bilinear) to, in pixels; default: see above.
    channels : int, optional
        1 (grey) or 3 (RGB); default: see above.
    classes : sequence, optional
        Label values in class-index order; default: see above.
    image_column, label_column : str, optional
        Default: the run's, else ``"image"`` and ``"label"``.
    weight_column : str or None, default="sample_weight"
        Column of per-row weights; every weight is 1 when None or the file has no such column.

    Attributes
    ----------
    labels : ndarray of shape (n_rows,), int64
        Class index of every row.
    weights : ndarray of shape (n_rows,), float32
    sample_ids : list
        The ``sample_id`` column (the row ordinal when the file has none).
    classes : list
        Label value of each class index.
    class_names : list of str
        Name of each class index (the HF ClassLabel name when the file has one).
    size, channels : int

    Raises
    ------
    InputError
        The file or a column is missing, a label is null or not among ``classes``, a
        weight is negative or not finite. Reading a row whose image cannot be decoded
        raises InputError naming the row and its ``sample_id``.

    Examples
    --------
    >>> train = ImageParquetDataset("out/clean.parquet")  # doctest: +SKIP
    >>> loader = DataLoader(train, batch_size=128, sampler=train.sampler(seed=0))  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        transform: Callable[[torch.Tensor], Any] | None = None,
        size: int | None = None,
        channels: int | None = None,
        classes: Sequence[Any] | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        weight_column: str | None = SAMPLE_WEIGHT,
    ) -> None:
        self.path = str(path)
        self.transform = transform
        fs, fs_path = fsspec.core.url_to_fs(self.path)
        self._fs = fs
        self._base_dir = posixpath.dirname(fs_path)
        run = _RunInfo.next_to(fs, self._base_dir)
        image_column = image_column or run.data.get("image_column") or "image"
        label_column = label_column or run.data.get("label_column") or LABEL

        schema = _schema(fs, fs_path, self.path)
        for column in (image_column, label_column):
            if column not in schema.names:
                raise InputError(
                    f"missing column {column!r} in {self.path}; columns: " + ", ".join(schema.names)
                )
        wanted = [image_column, label_column, weight_column, SAMPLE_ID]
        columns = [c for c in dict.fromkeys(wanted) if c and c in schema.names]
        table = pq.read_table(fs_path, columns=columns, filesystem=fs)
        self._bytes, self._paths = _image_cells(table.column(image_column))
        n = table.num_rows

        canonical = _canonical(label_column, table.column(label_column))
        if canonical.null_count:
            row = int(np.argmax(canonical.is_null().to_numpy(zero_copy_only=False)))
            raise InputError(f"{self.path}: null label at row {row} (column {label_column!r})")
        if classes is None:
            classes = run.classes(fs) or _sorted_values(canonical)
        self.classes = list(classes)
        self.labels = _class_index(canonical, self.classes, self.path)
        names = class_names_from_metadata(schema, label_column)
        self.class_names = [
            names[v] if names and isinstance(v, int) and 0 <= v < len(names) else str(v)
            for v in self.classes
        ]

        if weight_column and weight_column in table.column_names:
            self.weights = _weights(table.column(weight_column), self.path)
        else:
            self.weights = np.ones(n, dtype=np.float32)
        if SAMPLE_ID in table.column_names:
            self.sample_ids = table.column(SAMPLE_ID).to_pylist()
        else:
            self.sample_ids = list(range(n))

        size = size or run.data.get("image_size")
        channels = channels or run.data.get("channels")
        if (size is None or channels is None) and n:
            probed_channels, probed_size = self._probe_first()
            size, channels = size or probed_size, channels or probed_channels
        if channels not in (1, 3, None):
            raise InputError(f"channels must be 1 or 3, got {channels}")
        self.size = int(size or 0)
        self.channels = int(channels or 0)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self.image_u8(index)).float().div_(255.0)
        if self.transform is not None:
            image = self.transform(image)
        label = torch.tensor(self.labels[index], dtype=torch.int64)
        weight = torch.tensor(self.weights[index], dtype=torch.float32)
        return image, label, weight

    def image_u8(self, index: int) -> np.ndarray:
        """Row ``index``'s image as a uint8 array of shape (channels, size, size)."""
        try:
            return decode_image(self._encoded(index), self.size, self.channels)
        except ValueError as exc:
            raise InputError(
                f"{self.path}: row {index} (sample_id {self.sample_ids[index]!r}): {exc}"
            ) from None

    def images_u8(self, threads: int = _DECODE_THREADS) -> np.ndarray:
        """Every image, decoded on ``threads`` threads: uint8 of shape (n, C, size, size)."""
        out = np.zeros((len(self), self.channels, self.size, self.size), dtype=np.uint8)
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for index, pixels in enumerate(pool.map(self.image_u8, range(len(self)))):
                out[index] = pixels
        return out

    def sampler(self, seed: int = 0) -> WeightedRandomSampler:
        """A :func:`weighted_sampler` over this dataset's weights."""
        return weighted_sampler(self.weights, seed=seed)

    def _encoded(self, index: int) -> bytes:
        data = self._bytes[index].as_py() if self._bytes is not None else None
        path = self._paths[index].as_py() if self._paths is not None else None
        return image_bytes(
            {"bytes": data, "path": path}, filesystem=self._fs, base_dir=self._base_dir
        )

    def _probe_first(self) -> tuple[int, int]:
        try:
            return probe_image(self._encoded(0))
        except ValueError as exc:
            raise InputError(f"{self.path}: row 0: {exc}; pass size= and channels=") from None


def weighted_sampler(
    weights: np.ndarray | Sequence[float],
    *,
    seed: int = 0,
    generator: torch.Generator | None = None,
    num_samples: int | None = None,
) -> WeightedRandomSampler:
    """Draw row indices with replacement, each in proportion to its weight.

    ``num_samples`` defaults to the rows with a positive weight (every row of
    ``clean.parquet``), so an epoch has as many draws as a plain pass.

    Parameters
    ----------
    weights : array-like of shape (n_rows,)
        Non-negative (``sample_weight`` of ``clean.parquet``); a row of weight 0 is never drawn.
    seed : int, default=0
        Seeds the sampler's own generator; ignored when ``generator`` is given.
    generator : torch.Generator, optional
        Draw from this generator instead (shared with other random steps of a loop).
    num_samples : int, optional
        Draws an epoch; default: the rows with a positive weight.

    Returns
    -------
    torch.utils.data.WeightedRandomSampler
        Seeded: the same seed gives the same sequence of epochs.
    """
    weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    if num_samples is None:
        num_samples = int((weights > 0).sum())
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        weights, num_samples=num_samples, replacement=True, generator=generator
    )


# --- reading --------------------------------------------------------------------------------


class _RunInfo:
    """What the run's ``report.json`` and ``scores.parquet`` say, when the file sits in a run."""

    def __init__(self, base_dir: str, data: dict[str, Any]) -> None:
        self.base_dir = base_dir
        self.data = data

    @classmethod
    def next_to(cls, fs: fsspec.AbstractFileSystem, base_dir: str) -> _RunInfo:
        report = posixpath.join(base_dir, REPORT_JSON)
        try:
            config = json.loads(fs.cat_file(report)).get("config", {})
        except (FileNotFoundError, ValueError):
            config = {}
        return cls(base_dir, config.get("data", {}) if isinstance(config, dict) else {})

    def classes(self, fs: fsspec.AbstractFileSystem) -> list[Any] | None:
        """Sorted label values of the rows the run could score (its class indices)."""
        scores = posixpath.join(self.base_dir, SCORES_FILE)
        if not self.data or not fs.exists(scores):
            return None
        table = pq.read_table(scores, columns=[LABEL, REASONS], filesystem=fs)
        unusable = {REASON_UNREADABLE, REASON_MISSING_LABEL}
        usable = [not unusable.intersection(r or []) for r in table.column(REASONS).to_pylist()]
        labels = _canonical(LABEL, table.column(LABEL)).filter(pa.array(usable))
        return _sorted_values(labels) or None


def _schema(fs: fsspec.AbstractFileSystem, fs_path: str, shown: str) -> pa.Schema:
    try:
        return pq.read_schema(fs_path, filesystem=fs)
    except FileNotFoundError:
        raise InputError(f"file not found: {shown}") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read {shown} as Parquet: {exc}") from None


def _image_cells(column: pa.ChunkedArray) -> tuple[pa.Array | None, pa.Array | None]:
    """(bytes, paths) arrays of an image column: HF struct, binary, or path strings."""
    column = column.combine_chunks()
    if pa.types.is_struct(column.type):
        fields = dict(zip((f.name for f in column.type), column.flatten(), strict=True))
        return fields.get("bytes"), fields.get("path")
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return None, column
    return column, None


def _canonical(column: str, labels: pa.ChunkedArray) -> pa.Array:
    """Labels as the read stage sees them: int64 or string, null where missing."""
    return canonical_labels(column, labels.combine_chunks(), 0)


def _sorted_values(canonical: pa.Array) -> list[Any]:
    return sorted(v for v in pc.unique(canonical).to_pylist() if v is not None)


def _class_index(canonical: pa.Array, classes: list[Any], shown: str) -> np.ndarray:
    index = pc.index_in(canonical, value_set=pa.array(classes, type=canonical.type))
    if index.null_count:
        row = int(np.argmax(index.is_null().to_numpy(zero_copy_only=False)))
        raise InputError(
            f"{shown}: label {canonical[row].as_py()!r} at row {row} is not among the "
            f"classes {classes}"
        )
    return index.to_numpy(zero_copy_only=False).astype(np.int64)


def _weights(column: pa.ChunkedArray, shown: str) -> np.ndarray:
    weights = column.to_numpy().astype(np.float32)
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(f"{shown}: weight {weights[row]} at row {row} is not finite and >= 0")
    return weights
