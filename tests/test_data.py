"""Read stage: every source kind, every column contract, every bad input."""

from __future__ import annotations

import io
import json
import logging
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sanitize.config import MAX_WORKING_SIZE, MIN_IMAGE_SIZE, DataConfig
from sanitize.data import decode_image, image_bytes, open_source, probe_image, read_source
from sanitize.data.expected import read_expected_counts
from sanitize.data.read import working_shape
from sanitize.data.schema import (
    CLASSES_FILE,
    IMAGES_FILE,
    REASON_MISSING_LABEL,
    REASON_UNREADABLE,
    ROWS_FILE,
)
from sanitize.errors import InputError

CIFAR = Path(__file__).resolve().parents[1].parent / "shared/datasets/cifar10/train.parquet"
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
NAMES = ["zero", "one", "two"]


def png(seed: int, size: int = 8, mode: str = "L") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size, size) if mode == "L" else (size, size, len(mode))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def hf_metadata(names: list[str] | None = NAMES, label: str = "label") -> dict[str, str]:
    label_feature = {"names": names, "_type": "ClassLabel"} if names else {"dtype": "int64"}
    features = {"image": {"_type": "Image"}, label: label_feature}
    return {"huggingface": json.dumps({"info": {"features": features}})}


def hf_table(
    labels: list,
    *,
    ids: list | None = None,
    payloads: list[bytes | None] | None = None,
    label_type: pa.DataType | None = None,
    names: list[str] | None = NAMES,
) -> pa.Table:
    payloads = payloads if payloads is not None else [png(i) for i in range(len(labels))]
    columns = {
        "image": pa.array(
            [{"bytes": b, "path": f"img/{i}.png"} for i, b in enumerate(payloads)], IMAGE_TYPE
        ),
        "label": pa.array(labels, label_type),
    }
    if ids is not None:
        columns["sample_id"] = pa.array(ids)
    table = pa.table(columns)
    return table.replace_schema_metadata(hf_metadata(names))


def write(table: pa.Table, path: Path, **kwargs) -> Path:
    pq.write_table(table, path, **kwargs)
    return path


def read(uri, tmp_path: Path, **config) -> tuple:
    data = DataConfig(**config)
    summary = read_source(open_source(uri, data), data, tmp_path / "work")
    rows = pq.read_table(tmp_path / "work" / ROWS_FILE)
    images = np.load(tmp_path / "work" / IMAGES_FILE)
    return summary, rows, images


# --- good sources -----------------------------------------------------------------------


def test_hf_parquet_with_sample_id(tmp_path):
    labels = [0, 1, 2, 1, 0, 2, 1]
    ids = [f"s{i}" for i in range(7)]
    path = write(hf_table(labels, ids=ids), tmp_path / "train.parquet", row_group_size=3)
    summary, rows, images = read(path, tmp_path, batch_rows=2)

    assert rows.column_names == ["row", "sample_id", "label", "y", "ok", "reason"]
    assert rows["sample_id"].to_pylist() == ids
    assert rows["row"].to_pylist() == list(range(7))
    assert rows["label"].type == pa.int64()
    assert rows["label"].to_pylist() == labels
    assert rows["y"].to_pylist() == labels
    assert all(rows["ok"].to_pylist())
    assert rows["reason"].null_count == 7
    assert images.shape == (7, 1, 8, 8) and images.dtype == np.uint8
    assert np.array_equal(images[3], decode_image(png(3), 8, 1))
    assert summary.class_names == NAMES
    assert summary.class_values == [0, 1, 2]
    assert summary.label_counts == {"zero": 2, "one": 3, "two": 2}
    assert (summary.n_rows, summary.n_ok, summary.n_classes) == (7, 7, 3)
    classes = json.loads((tmp_path / "work" / CLASSES_FILE).read_text())
    assert classes == {
        "names": NAMES,
        "values": [0, 1, 2],
        "image_size": 8,
        "channels": 1,
        "n_rows": 7,
    }


def test_parquet_without_sample_id_uses_ordinals(tmp_path):
    path = write(hf_table([2, 0, 2, 0]), tmp_path / "a.parquet")
    summary, rows, _ = read(path, tmp_path)
    assert rows["sample_id"].type == pa.int64()
    assert rows["sample_id"].to_pylist() == [0, 1, 2, 3]
    assert rows["y"].to_pylist() == [1, 0, 1, 0]
    assert summary.class_values == [0, 2]
    assert summary.class_names == ["zero", "two"]


def test_source_streams_every_row_and_column_unchanged(tmp_path):
    table = hf_table([0, 1] * 5, ids=list(range(100, 110)))
    path = write(table, tmp_path / "a.parquet", row_group_size=4)
    source = open_source(path, DataConfig())
    assert (source.kind, source.num_rows) == ("parquet", 10)
    assert source.schema.metadata[b"huggingface"] == table.schema.metadata[b"huggingface"]
    batches = list(source.iter_batches(3))
    assert max(b.num_rows for b in batches) <= 3
    assert pa.Table.from_batches(batches).equals(table)


def test_string_labels_map_to_sorted_classes(tmp_path):
    path = write(hf_table(["dog", "cat", "dog", "bird"], names=None), tmp_path / "a.parquet")
    summary, rows, _ = read(path, tmp_path)
    assert summary.class_names == ["bird", "cat", "dog"]
    assert rows["y"].to_pylist() == [2, 1, 2, 0]
    assert rows["label"].to_pylist() == ["dog", "cat", "dog", "bird"]


def test_integral_float_and_bool_labels(tmp_path):
    path = write(hf_table([1.0, 3.0, 1.0], names=None), tmp_path / "f.parquet")
    summary, rows, _ = read(path, tmp_path)
    assert summary.class_values == [1, 3] and summary.class_names == ["1", "3"]
    assert rows["label"].type == pa.float64()
    assert rows["y"].to_pylist() == [0, 1, 0]

    path = write(hf_table([True, False, True], names=None), tmp_path / "b.parquet")
    summary, rows, _ = read(path, tmp_path)
    assert summary.class_values == [0, 1]
    assert rows["label"].type == pa.bool_()


def test_renamed_label_column_finds_class_names(tmp_path):
    table = hf_table([0, 1, 1])
    table = table.rename_columns(["picture", "target"]).replace_schema_metadata(
        table.schema.metadata
    )
    path = write(table, tmp_path / "a.parquet")
    summary, _, images = read(path, tmp_path, image_column="picture", label_column="target")
    assert summary.class_names == ["zero", "one"]
    assert images.shape == (3, 1, 8, 8)


def test_configured_size_and_channels_resize(tmp_path):
    payloads = [png(0, 8, "RGBA"), png(1, 12, "L"), png(2, 6, "RGB")]
    path = write(hf_table([0, 1, 0], payloads=payloads), tmp_path / "a.parquet")
    summary, _, images = read(path, tmp_path, image_size=16, channels=3)
    assert images.shape == (3, 3, 16, 16)
    assert (summary.image_size, summary.channels) == (16, 3)


def test_size_and_channels_from_the_first_readable_images(tmp_path):
    payloads = [b"junk", b"junk", png(0, 10, "RGB"), png(1, 10, "RGB"), png(2, 6, "L")]
    path = write(hf_table([0, 1, 0, 1, 0], payloads=payloads), tmp_path / "a.parquet")
    summary, rows, images = read(path, tmp_path, batch_rows=2)
    assert images.shape == (5, 3, 10, 10)  # the first batch with a readable image decides
    assert rows["ok"].to_pylist() == [False, False, True, True, True]
    assert not images[:2].any()


def test_working_size_is_the_median_side_within_bounds(caplog):
    assert working_shape([]) is None
    assert working_shape([(3, 32)] * 5 + [(3, 64)]) == (3, 32)  # one odd image sets nothing
    assert working_shape([(3, 224)] * 3 + [(1, 224)]) == (3, MAX_WORKING_SIZE)
    assert working_shape([(1, 4), (1, 2)]) == (1, MIN_IMAGE_SIZE)
    with caplog.at_level(logging.WARNING, logger="sanitize"):
        working_shape([(3, 32)] * 9 + [(3, 3000)])
    assert "1 of the first 10 images are far from the working size 32x32" in caplog.text


def test_a_large_first_image_does_not_set_the_size(tmp_path):
    payloads = [png(0, 64, "RGB")] + [png(i, 32, "RGB") for i in range(1, 6)]
    path = write(hf_table([0, 1, 0, 1, 0, 1], payloads=payloads), tmp_path / "a.parquet")
    _, rows, images = read(path, tmp_path)
    assert images.shape == (6, 3, 32, 32)
    assert all(rows["ok"].to_pylist())


def test_an_image_above_pillows_pixel_limit_is_unreadable_not_decoded(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 30 * 30)  # a 40 x 40 image is a "bomb"
    payloads = [png(0, 16), png(1, 40), png(2, 16), png(3, 16)]
    path = write(hf_table([0, 1, 0, 1], payloads=payloads), tmp_path / "a.parquet")
    _, rows, _ = read(path, tmp_path)
    assert rows["ok"].to_pylist() == [True, False, True, True]
    assert rows["reason"].to_pylist() == [None, "unreadable", None, None]


def test_directory_of_parquet_files_in_name_order(tmp_path):
    root = tmp_path / "parts"
    root.mkdir()
    write(hf_table([0, 1], ids=["c", "d"]), root / "part-1.parquet")
    write(hf_table([1, 0], ids=["a", "b"]), root / "part-0.parquet")
    (root / "notes.txt").write_text("ignored")
    source = open_source(root, DataConfig())
    assert (source.kind, source.num_rows) == ("parquet_dir", 4)
    summary, rows, _ = read(root, tmp_path)
    assert rows["sample_id"].to_pylist() == ["a", "b", "c", "d"]
    assert rows["label"].to_pylist() == [1, 0, 0, 1]


def test_relative_image_paths_resolve_against_the_parquet_directory(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(png(0))
    (tmp_path / "img" / "b.png").write_bytes(png(1))
    image = pa.array(
        [{"bytes": None, "path": "img/a.png"}, {"bytes": None, "path": "img/b.png"}], IMAGE_TYPE
    )
    path = write(pa.table({"image": image, "label": [0, 1]}), tmp_path / "a.parquet")
    _, rows, images = read(path, tmp_path)
    assert all(rows["ok"].to_pylist())
    assert np.array_equal(images[1], decode_image(png(1), 8, 1))


def _outside_png(tmp_path: Path) -> Path:
    """A readable image outside the source directory: read, it would decode fine."""
    outside = tmp_path / "outside.png"
    outside.write_bytes(png(9))
    (tmp_path / "src" / "img").mkdir(parents=True)
    return outside


@pytest.mark.parametrize(
    ("cell_path", "detail"),
    [
        ("{outside}", "is absolute"),
        ("file://{outside}", "names a protocol"),
        ("../outside.png", "leaves the source's directory"),
        ("img/../../outside.png", "leaves the source's directory"),
    ],
)
def test_image_paths_outside_the_source_are_refused(tmp_path, caplog, cell_path, detail):
    outside = _outside_png(tmp_path)
    cells = [{"bytes": png(i), "path": None} for i in range(4)]
    cells.append({"bytes": None, "path": cell_path.format(outside=outside)})
    table = pa.table({"image": pa.array(cells, IMAGE_TYPE), "label": [0, 1, 0, 1, 0]})
    path = write(table, tmp_path / "src" / "a.parquet")
    logging.getLogger("sanitize").addHandler(caplog.handler)
    try:
        summary, rows, _ = read(path, tmp_path)
    finally:
        logging.getLogger("sanitize").removeHandler(caplog.handler)
    assert rows["ok"].to_pylist() == [True] * 4 + [False]
    assert rows["reason"].to_pylist()[4] == REASON_UNREADABLE
    assert summary.n_unreadable == 1
    assert "row 4" in caplog.text and detail in caplog.text, caplog.text

    _, rows, _ = read(path, tmp_path, allow_external_paths=True)
    assert rows["ok"].to_pylist() == [True] * 5


def test_image_folder_link_out_of_the_root_is_refused(tmp_path):
    outside = _outside_png(tmp_path)
    root = tmp_path / "src"
    (root / "img").rmdir()
    for cls in ("a", "b"):
        (root / cls).mkdir()
        for i in range(2):
            (root / cls / f"{i}.png").write_bytes(png(i))
    (root / "b" / "2.png").symlink_to(outside)
    (root / "a" / "2.png").symlink_to(root / "b" / "0.png")  # a link inside the root is fine
    source = open_source(root, DataConfig())
    table = pa.Table.from_batches(list(source.iter_batches(8)))
    assert table["image"].combine_chunks().field("bytes").to_pylist()[5] is None
    _, rows, _ = read(root, tmp_path)
    assert rows["ok"].to_pylist() == [True, True, True, True, True, False]
    _, rows, _ = read(root, tmp_path, allow_external_paths=True)
    assert all(rows["ok"].to_pylist())


def test_image_folder(tmp_path):
    root = tmp_path / "folder"
    for cls, count in (("cat", 2), ("ant", 3)):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            (root / cls / f"{i}.png").write_bytes(png(i, 8, "RGB"))
    (root / "ant" / "readme.txt").write_text("not an image")
    source = open_source(root, DataConfig())
    assert (source.kind, source.num_rows, source.class_names) == ("image_folder", 5, ["ant", "cat"])
    table = pa.Table.from_batches(list(source.iter_batches(2)))
    assert table.schema.field("image").type == IMAGE_TYPE
    assert table["image"].combine_chunks().field("path").to_pylist()[:2] == [
        "ant/0.png",
        "ant/1.png",
    ]
    meta = json.loads(table.schema.metadata[b"huggingface"])
    assert meta["info"]["features"]["label"]["names"] == ["ant", "cat"]
    summary, rows, images = read(root, tmp_path)
    assert rows["label"].to_pylist() == [0, 0, 0, 1, 1]
    assert summary.class_names == ["ant", "cat"]
    assert images.shape == (5, 3, 8, 8)


@pytest.mark.parametrize(
    ("shape", "channels"),
    [((6, 8, 8), 1), ((6, 8, 8, 3), 3), ((6, 3, 8, 8), 3), ((6, 8, 8, 1), 1)],
)
def test_npz_layouts(tmp_path, shape, channels):
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    source = open_source(tmp_path / "d.npz", DataConfig())
    assert (source.kind, source.num_rows) == ("npz", 6)
    summary, rows, images = read(tmp_path / "d.npz", tmp_path, batch_rows=4)
    assert images.shape == (6, channels, 8, 8)
    expected = x.reshape(6, 1, 8, 8) if x.ndim == 3 else x
    if shape[-1] in (1, 3):
        expected = expected.transpose(0, 3, 1, 2) if x.ndim == 4 else expected
    assert np.array_equal(images, expected)
    assert rows["label"].to_pylist() == y.tolist()
    assert summary.n_classes == 3


def test_npz_float_images_in_unit_range(tmp_path):
    x = np.linspace(0, 1, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
    np.savez_compressed(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1]))
    _, _, images = read(tmp_path / "d.npz", tmp_path)
    assert images.max() == 255 and images.min() == 0


def test_file_uri(tmp_path):
    path = write(hf_table([0, 1, 2]), tmp_path / "a.parquet")
    summary, _, images = read(path.as_uri(), tmp_path)
    assert summary.n_ok == 3 and images.shape == (3, 1, 8, 8)


def test_memory_uri(tmp_path):
    fs = fsspec.filesystem("memory")
    root = f"/sanitize-test-{uuid.uuid4().hex}"
    try:
        with fs.open(f"{root}/a.parquet", "wb") as fh:
            pq.write_table(hf_table([0, 1, 1], ids=["x", "y", "z"]), fh)
        source = open_source(f"memory://{root}/a.parquet", DataConfig())
        first = source.fingerprint()
        assert first == source.fingerprint() and len(first) == 16
        summary, rows, _ = read(f"memory://{root}/a.parquet", tmp_path)
        assert rows["sample_id"].to_pylist() == ["x", "y", "z"]
        assert summary.class_names == ["zero", "one"]
    finally:
        fs.rm(root, recursive=True)


def test_fingerprint_is_stable_and_content_sensitive(tmp_path):
    a = write(hf_table([0, 1]), tmp_path / "a.parquet")
    b = write(hf_table([1, 0]), tmp_path / "b.parquet")
    fa = open_source(a, DataConfig()).fingerprint()
    assert fa == open_source(a, DataConfig()).fingerprint()
    assert fa != open_source(b, DataConfig()).fingerprint()


# --- rows set aside ---------------------------------------------------------------------


def test_corrupt_image_is_quarantined_not_dropped(tmp_path):
    payloads = [png(0), b"\x89PNG not really", png(2), None]
    path = write(hf_table([0, 1, 1, 0], payloads=payloads), tmp_path / "a.parquet")
    summary, rows, images = read(path, tmp_path)
    assert rows.num_rows == 4
    assert rows["ok"].to_pylist() == [True, False, True, False]
    assert rows["reason"].to_pylist() == [None, REASON_UNREADABLE, None, REASON_UNREADABLE]
    assert rows["y"].to_pylist() == [0, -1, 1, -1]
    assert not images[1].any()
    assert (summary.n_unreadable, summary.n_ok) == (2, 2)


def test_null_label_is_quarantined_as_missing_label(tmp_path):
    path = write(hf_table([0, None, 1, 1]), tmp_path / "a.parquet")
    summary, rows, _ = read(path, tmp_path)
    assert rows["reason"].to_pylist() == [None, REASON_MISSING_LABEL, None, None]
    assert rows["y"].to_pylist() == [0, -1, 1, 1]
    assert summary.n_missing_label == 1


# --- bad inputs -------------------------------------------------------------------------


def test_missing_image_column(tmp_path):
    path = write(hf_table([0, 1]).drop_columns(["image"]), tmp_path / "a.parquet")
    with pytest.raises(InputError, match=r"missing column 'image'.*--image-column"):
        read(path, tmp_path)


def test_missing_label_column(tmp_path):
    path = write(hf_table([0, 1], ids=["a", "b"]).drop_columns(["label"]), tmp_path / "a.parquet")
    with pytest.raises(
        InputError, match=r"missing column 'label' in source; columns: image, sample_id"
    ):
        read(path, tmp_path)


def test_empty_parquet(tmp_path):
    path = write(hf_table([0, 1]).slice(0, 0), tmp_path / "a.parquet")
    with pytest.raises(InputError, match="has no rows"):
        open_source(path, DataConfig())
    (tmp_path / "zero.parquet").write_bytes(b"")
    with pytest.raises(InputError, match="has no rows"):
        open_source(tmp_path / "zero.parquet", DataConfig())


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(InputError, match="has no rows"):
        open_source(tmp_path / "empty", DataConfig())


def test_single_class(tmp_path):
    path = write(hf_table([3, 3, 3], names=None), tmp_path / "a.parquet")
    with pytest.raises(InputError, match=r"only one class \(label 3\) among usable rows"):
        read(path, tmp_path)


def test_single_class_after_quarantine(tmp_path):
    path = write(hf_table([1, 2, 1], payloads=[png(0), b"bad", png(2)]), tmp_path / "a.parquet")
    with pytest.raises(InputError, match=r"only one class \(label 1\).*1 rows unreadable"):
        read(path, tmp_path)


def test_no_readable_image(tmp_path):
    path = write(hf_table([0, 1], payloads=[b"bad", b"worse"]), tmp_path / "a.parquet")
    with pytest.raises(InputError, match="no usable rows.*'image'"):
        read(path, tmp_path)


def test_non_integer_float_labels(tmp_path):
    path = write(hf_table([0.0, 1.0, 3.5]), tmp_path / "a.parquet")
    with pytest.raises(
        InputError, match=r"label column 'label' holds non-integer value 3.5 at row 2"
    ):
        read(path, tmp_path)


def test_list_labels(tmp_path):
    path = write(hf_table([[0], [1]]), tmp_path / "a.parquet")
    with pytest.raises(InputError, match=r"label column 'label' has type list<.*expected integers"):
        read(path, tmp_path)


def test_duplicated_sample_id(tmp_path):
    table = hf_table([0, 1, 0, 1], ids=["a", "b", "c", "b"])
    path = write(table, tmp_path / "a.parquet")
    with pytest.raises(InputError, match=r"duplicated sample_id 'b' at rows 1 and 3"):
        read(path, tmp_path, batch_rows=2)


def test_missing_id_column_names_it_and_the_columns(tmp_path):
    path = write(hf_table([0, 1, 0, 1]), tmp_path / "a.parquet")
    with pytest.raises(InputError, match=r"missing id column 'uid'.*columns: image, label"):
        read(path, tmp_path, id_column="uid")


def test_chosen_id_column_is_the_sample_id_and_must_be_unique(tmp_path):
    table = hf_table([0, 1, 0, 1]).append_column("uid", pa.array(["a", "b", "c", "d"]))
    _, rows, _ = read(write(table, tmp_path / "a.parquet"), tmp_path, id_column="uid")
    assert rows["sample_id"].to_pylist() == ["a", "b", "c", "d"]
    table = hf_table([0, 1, 0, 1]).append_column("uid", pa.array(["a", "b", "a", "d"]))
    with pytest.raises(InputError, match=r"duplicated uid 'a' at rows 0 and 2"):
        read(write(table, tmp_path / "b.parquet"), tmp_path, id_column="uid")


def test_chosen_id_column_beside_a_sample_id_column_is_refused(tmp_path):
    """Every output names the id sample_id; the source's own would be overwritten."""
    table = hf_table([0, 1, 0, 1], ids=[1, 2, 3, 4]).append_column("uid", pa.array(list("abcd")))
    with pytest.raises(InputError, match=r"both a 'sample_id' column and id column 'uid'"):
        read(write(table, tmp_path / "a.parquet"), tmp_path, id_column="uid")


def test_null_sample_id(tmp_path):
    path = write(hf_table([0, 1, 0], ids=["a", None, "c"]), tmp_path / "a.parquet")
    with pytest.raises(InputError, match="null sample_id at row 1"):
        read(path, tmp_path)


def test_parquet_directory_schema_mismatch_names_the_file(tmp_path):
    root = tmp_path / "parts"
    root.mkdir()
    write(hf_table([0, 1]), root / "a.parquet")
    write(hf_table(["x", "y"], names=None), root / "b.parquet")
    with pytest.raises(InputError, match=r"'b.parquet'.*column 'label' is string"):
        open_source(root, DataConfig())


def test_unknown_uri_scheme():
    with pytest.raises(InputError, match=r"unknown URI scheme 'foo' in 'foo://x'; known: file,"):
        open_source("foo://x", DataConfig())


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="source not found: .*nope.parquet"):
        open_source(tmp_path / "nope.parquet", DataConfig())


def test_unsupported_file(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="unsupported source file"):
        open_source(tmp_path / "data.csv", DataConfig())


def test_failed_read_leaves_no_stage_files(tmp_path):
    path = write(hf_table([0, 1, 0, 1], ids=["a", "b", "c", "a"]), tmp_path / "a.parquet")
    with pytest.raises(InputError):
        read(path, tmp_path)
    assert list((tmp_path / "work").iterdir()) == []


# --- decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "1", "I;16", "CMYK"])
def test_decode_converts_modes(mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8))
    image = rgb.convert("L").convert(mode) if mode in ("1", "I;16", "LA") else rgb.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="TIFF" if mode in ("CMYK", "I;16") else "PNG")
    for channels in (1, 3):
        out = decode_image(buf.getvalue(), 9, channels)
        assert out.shape == (channels, 9, 9) and out.dtype == np.uint8
    assert probe_image(buf.getvalue()) == (1 if mode in ("1", "I;16", "LA") else 3, 7)


def test_decode_rejects_garbage():
    with pytest.raises(ValueError, match="cannot decode"):
        decode_image(b"not an image", 8, 1)


def test_image_bytes_cells(tmp_path):
    (tmp_path / "a.png").write_bytes(b"payload")
    assert image_bytes({"bytes": b"abc", "path": "ignored.png"}) == b"abc"
    assert image_bytes(b"raw") == b"raw"
    assert image_bytes({"bytes": None, "path": "a.png"}, base_dir=str(tmp_path)) == b"payload"
    assert image_bytes(str(tmp_path / "a.png")) == b"payload"
    with pytest.raises(ValueError):
        image_bytes(None)
    with pytest.raises(ValueError, match="cannot read image path"):
        image_bytes({"bytes": None, "path": "missing.png"}, base_dir=str(tmp_path))


# --- a real Hugging Face export -----------------------------------------------------------


@pytest.mark.skipif(not CIFAR.exists(), reason=f"shared dataset not present: {CIFAR}")
def test_cifar10_first_rows(tmp_path):
    with pq.ParquetFile(CIFAR) as pf:
        table = pf.read_row_group(0).slice(0, 300)
    path = write(table, tmp_path / "cifar300.parquet")
    summary, rows, images = read(path, tmp_path)
    assert images.shape == (300, 3, 32, 32)
    assert summary.class_names[:3] == ["airplane", "automobile", "bird"]
    assert len(summary.class_names) == 10
    assert summary.n_ok == 300 and all(rows["ok"].to_pylist())
    assert images.reshape(300, -1).std(axis=1).min() > 0


# --- expected class distribution ------------------------------------------------------------


def test_expected_counts_from_a_split_a_json_object_or_a_report(tmp_path):
    split = write(hf_table([0, 1, 1, 2, 2, 2, None]), tmp_path / "val.parquet")
    assert read_expected_counts(split, DataConfig()) == {"0": 1.0, "1": 2.0, "2": 3.0}
    mapping = tmp_path / "counts.json"
    mapping.write_text(json.dumps({"cat": 30, "dog": 0.5}))
    assert read_expected_counts(mapping, DataConfig()) == {"cat": 30.0, "dog": 0.5}
    report = tmp_path / "report.json"
    per_class = {
        "0": {"name": "zero", "rows": 50, "removed": 10},
        "1": {"name": "one", "rows": 40, "removed": 0},
    }
    report.write_text(json.dumps({"per_class": per_class}))
    assert read_expected_counts(report, DataConfig()) == {"0": 40.0, "1": 40.0}


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "expected-classes file not found"),
        ("{not json", "is not readable JSON"),
        ("[1, 2]", "must hold a JSON object of class -> count"),
        ('{"cat": "many"}', "class 'cat' has 'many', not a number"),
    ],
)
def test_bad_expected_counts_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "counts.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_expected_counts(path, DataConfig())


def test_expected_counts_need_the_label_column(tmp_path):
    split = write(hf_table([0, 1]), tmp_path / "val.parquet")
    with pytest.raises(InputError, match="has no label column 'y'"):
        read_expected_counts(split, DataConfig(label_column="y"))
    unlabelled = write(hf_table([None, None], label_type=pa.int64()), tmp_path / "none.parquet")
    with pytest.raises(InputError, match="has no labelled rows"):
        read_expected_counts(unlabelled, DataConfig())
