"""The training hook: ImageParquetDataset and weighted_sampler on a real run's clean.parquet."""

from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sanitize import ImageParquetDataset, InputError, sanitize_dataset, weighted_sampler
from sanitize.config import DataConfig
from sanitize.data import decode_image, open_source, read_source
from tests.conftest import REPO, SAMPLE_SOURCE


@pytest.fixture(scope="module")
def run_out(tmp_path_factory, fast_config):
    """A real (fast) run over 400 rows of the sample set."""
    root = tmp_path_factory.mktemp("hook")
    source = root / "train.parquet"
    pq.write_table(pq.read_table(SAMPLE_SOURCE).slice(0, 400), source)
    result = sanitize_dataset(source, root / "sanitized", fast_config)
    return result.out


def _readme_block(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text.split(heading, 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


def test_readme_training_example_runs(run_out, tmp_path, monkeypatch):
    """The README's training loop, exactly as printed, against a real run's output."""
    (tmp_path / "data").mkdir()
    shutil.copytree(run_out, tmp_path / "data" / "sanitized")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_readme_block("### In your training code"), "README.md", "exec"), namespace)

    kept = pq.read_table(run_out / "clean.parquet").num_rows
    assert len(namespace["train"]) == kept
    assert torch.isfinite(namespace["loss"])
    weights = namespace["model"][1].weight
    assert weights.shape == (10, 24 * 24) and weights.grad is not None


def test_rows_are_the_clean_parquet_rows(run_out):
    table = pq.read_table(run_out / "clean.parquet")
    train = ImageParquetDataset(run_out / "clean.parquet")
    assert len(train) == table.num_rows
    assert train.classes == list(range(10)) and train.class_names[3] == "3"
    assert (train.size, train.channels) == (24, 1)
    assert train.labels.tolist() == table.column("label").to_pylist()  # 0..9 index themselves
    assert train.sample_ids == table.column("sample_id").to_pylist()
    np.testing.assert_array_equal(train.weights, table.column("sample_weight").to_numpy())

    image, label, weight = train[5]
    expected = decode_image(table.column("image")[5].as_py()["bytes"], 24, 1)
    assert image.dtype == torch.float32 and image.shape == (1, 24, 24)
    np.testing.assert_allclose(image.numpy(), expected / 255.0, rtol=0, atol=1e-7)
    assert label.dtype == torch.int64 and int(label) == table.column("label")[5].as_py()
    assert weight.dtype == torch.float32 and float(weight) == pytest.approx(train.weights[5])

    images, labels, weights = next(iter(DataLoader(train, batch_size=16)))
    assert images.shape == (16, 1, 24, 24) and labels.dtype == torch.int64
    assert weights.dtype == torch.float32


def test_a_class_the_run_removed_keeps_its_index(run_out, tmp_path):
    """Class indices come from the run (scores.parquet), not from the rows that were kept."""
    out = tmp_path / "run"
    shutil.copytree(run_out, out)
    clean = pq.read_table(out / "clean.parquet")
    pq.write_table(clean.filter(pc.not_equal(clean.column("label"), 0)), out / "clean.parquet")
    in_run = ImageParquetDataset(out / "clean.parquet")
    assert in_run.classes == list(range(10)) and in_run.labels.min() == 1

    alone = tmp_path / "alone.parquet"  # the same file outside its run: classes are its own
    shutil.copy(out / "clean.parquet", alone)
    assert ImageParquetDataset(alone).classes == list(range(1, 10))
    assert ImageParquetDataset(alone).labels.min() == 0


def _png(value: int, size: int = 6, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), value if mode == "L" else (value, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


def test_string_labels_are_indexed_as_the_read_stage_indexes_them(tmp_path):
    labels = ["dog", "cat", "ant", "dog", "cat", "ant"]
    table = pa.table(
        {
            "image": pa.array([_png(10 * i) for i in range(6)]),
            "label": labels,
        }
    )
    path = tmp_path / "strings.parquet"
    pq.write_table(table, path)
    read_source(open_source(path, DataConfig()), DataConfig(), tmp_path / "work")
    pipeline_y = pq.read_table(tmp_path / "work" / "rows.parquet").column("y").to_pylist()

    dataset = ImageParquetDataset(path)
    assert dataset.classes == ["ant", "cat", "dog"]
    assert dataset.labels.tolist() == pipeline_y == [2, 1, 0, 2, 1, 0]
    assert dataset.weights.tolist() == [1.0] * 6  # no sample_weight column
    assert dataset.sample_ids == list(range(6))

    test = ImageParquetDataset(path, classes=["dog", "cat", "ant"])
    assert test.labels.tolist() == [0, 1, 2, 0, 1, 2]
    with pytest.raises(InputError, match="label 'ant' at row 2 is not among the classes"):
        ImageParquetDataset(path, classes=["dog", "cat"])


def test_images_by_path_binary_and_broken_cells(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(_png(200, size=8, mode="RGB"))
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    cells = [
        {"bytes": None, "path": "img/a.png"},  # relative to the Parquet file's directory
        {"bytes": _png(50, size=8, mode="RGB"), "path": None},
        {"bytes": b"not an image", "path": None},
    ]
    table = pa.table(
        {
            "image": pa.array(cells, type=image_type),
            "label": [0, 1, 1],
            "sample_id": ["a", "b", "broken"],
        }
    )
    pq.write_table(table, tmp_path / "mixed.parquet")
    dataset = ImageParquetDataset(tmp_path / "mixed.parquet", transform=lambda x: x * 2)
    assert (dataset.size, dataset.channels) == (8, 3)  # probed from row 0, as the pipeline does
    assert float(dataset[0][0][0, 0, 0]) == pytest.approx(2 * 200 / 255)  # transform applied
    assert float(dataset[1][0][0, 0, 0]) == pytest.approx(2 * 50 / 255)
    with pytest.raises(InputError, match=r"row 2 \(sample_id 'broken'\): cannot decode image"):
        dataset[2]

    binary = pa.table({"img": [_png(7), _png(9)], "y": [1, 0]})
    pq.write_table(binary, tmp_path / "binary.parquet")
    grey = ImageParquetDataset(
        tmp_path / "binary.parquet", image_column="img", label_column="y", size=4
    )
    assert grey[0][0].shape == (1, 4, 4) and grey.images_u8()[1, 0, 0, 0] == 9

    with pytest.raises(InputError, match="missing column 'label'"):
        ImageParquetDataset(tmp_path / "binary.parquet", image_column="img")
    with pytest.raises(InputError, match="file not found"):
        ImageParquetDataset(tmp_path / "missing.parquet")


def test_sampler_draws_by_weight_with_replacement_and_a_seed():
    weights = np.array([0.0, 1.0, 1.0, 6.0], dtype=np.float32)
    draws = np.array(list(weighted_sampler(weights, seed=0, num_samples=8000)))
    counts = np.bincount(draws, minlength=4)
    assert counts[0] == 0  # weight 0: never drawn
    assert 5.0 < counts[3] / counts[1] < 7.0
    assert len(weighted_sampler(weights, seed=0)) == 3  # a draw a positive-weight row
    sampler = weighted_sampler(np.ones(100), seed=3)
    first, second = list(sampler), list(sampler)
    assert first == list(weighted_sampler(np.ones(100), seed=3))  # the seed fixes the sequence
    assert first != second  # each epoch is a fresh draw
    assert len(set(first)) < 100  # with replacement
