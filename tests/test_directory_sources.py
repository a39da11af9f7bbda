"""Directory sources read what a person put there: no hidden or private files, no FIFOs."""

import io
import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from flows.landing import discover_partitions
from sanitize.config import DataConfig
from sanitize.data import open_source, read_source


def _png(value: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _image_folder(root):
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            (root / name / f"{i}.png").write_bytes(_png(50 * i))
    return root


def _within(seconds: float, work):
    """``work()``'s result; fails instead of hanging when it takes longer than ``seconds``."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(value=work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return result["value"]


def test_a_fifo_named_png_is_an_unreadable_row_not_a_hang(tmp_path):
    root = _image_folder(tmp_path / "images")
    os.mkfifo(root / "cat" / "x.png")
    source = _within(30, lambda: open_source(root, DataConfig()))
    _within(30, source.fingerprint)
    summary = _within(30, lambda: read_source(source, DataConfig(), tmp_path / "work"))
    assert (summary.n_rows, summary.n_unreadable) == (7, 1)


def test_a_fifo_in_a_path_cell_is_unreadable(tmp_path):
    (tmp_path / "a.png").write_bytes(_png())
    os.mkfifo(tmp_path / "b.png")
    table = pa.table({"image": ["a.png", "b.png", "a.png"], "label": [0, 1, 1]})
    pq.write_table(table, tmp_path / "paths.parquet")
    source = open_source(tmp_path / "paths.parquet", DataConfig())
    summary = _within(30, lambda: read_source(source, DataConfig(), tmp_path / "work"))
    assert summary.n_unreadable == 1


def test_hidden_and_private_entries_of_an_image_folder_are_ignored(tmp_path):
    root = _image_folder(tmp_path / "images")
    for junk in (".ipynb_checkpoints", "__MACOSX", "cat/.ipynb_checkpoints"):
        (root / junk).mkdir()
        (root / junk / "0-checkpoint.png").write_bytes(_png())
    (root / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    source = open_source(root, DataConfig())
    assert source.class_names == ["cat", "dog"]
    summary = read_source(source, DataConfig(), tmp_path / "work")
    assert (summary.n_rows, summary.n_unreadable) == (6, 0)


def _parquet_dir(root):
    root.mkdir()
    table = pa.table({"image": [_png(), _png(9)], "label": [0, 1]})
    pq.write_table(table, root / "part-0.parquet")
    pq.write_table(pa.table({"other": [1, 2, 3]}), root / "_tmp.parquet")
    pq.write_table(table, root / ".part-0.parquet.crc.parquet")
    return root


def test_hidden_and_private_parquet_files_are_ignored_by_run(tmp_path):
    source = open_source(_parquet_dir(tmp_path / "data"), DataConfig())
    assert (source.kind, source.num_rows) == ("parquet_dir", 2)


def test_the_ingest_flow_ignores_the_same_files(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    _parquet_dir(landing / "day1")
    hidden_only = landing / "day2"
    hidden_only.mkdir()
    pq.write_table(pa.table({"image": [_png()], "label": [0]}), hidden_only / "_x.parquet")
    partitions = discover_partitions(str(landing), DataConfig())
    assert [(p.name, p.rows) for p in partitions] == [("day1", 2)]
