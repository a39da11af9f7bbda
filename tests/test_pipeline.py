"""The output contract of DESIGN.md, checked on real runs of the whole pipeline."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sanitize import sanitize_dataset
from sanitize.config import DEFAULT_DETECTORS
from sanitize.errors import SourceChangedError
from sanitize.pipeline import stages
from sanitize.pipeline.paths import (
    CLEAN_FILE,
    OUTPUT_FILES,
    QUARANTINE_FILE,
    REPORT_JSON,
    SCORES_FILE,
)
from sanitize.pipeline.stages import reading
from sanitize_cli.main import EXIT_BAD_INPUT, main
from tests.conftest import SAMPLE_SOURCE


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 12), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def source_with_bad_rows(tmp_path_factory):
    """Sample data plus one corrupt image and one null label, with an extra user column."""
    table = pq.read_table(SAMPLE_SOURCE)
    n = table.num_rows
    images = table.column("image").to_pylist()
    images[5] = {"bytes": b"not an image", "path": "broken.png"}
    labels = table.column("label").to_pylist()
    labels[9] = None
    table = table.set_column(
        table.schema.get_field_index("image"),
        table.schema.field("image"),
        pa.array(images, type=table.schema.field("image").type),
    )
    table = table.set_column(
        table.schema.get_field_index("label"), "label", pa.array(labels, type=pa.int64())
    )
    table = table.append_column("note", pa.array([f"n{i}" for i in range(n)]))
    path = tmp_path_factory.mktemp("src") / "source.parquet"
    pq.write_table(table, path, row_group_size=700)
    return path


@pytest.fixture(scope="module")
def run(source_with_bad_rows, tmp_path_factory, fast_config):
    out = tmp_path_factory.mktemp("out")
    result = sanitize_dataset(source_with_bad_rows, out, fast_config)
    return source_with_bad_rows, out, result


def test_four_outputs_and_no_leftovers(run):
    _, out, result = run
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(OUTPUT_FILES)
    assert result.counts["rows"] == 3000


def test_rows_are_neither_lost_nor_duplicated(run):
    source, out, _ = run
    src = pq.read_table(source)
    clean = pq.read_table(out / CLEAN_FILE)
    quarantine = pq.read_table(out / QUARANTINE_FILE)
    scores = pq.read_table(out / SCORES_FILE)
    assert clean.num_rows + quarantine.num_rows == src.num_rows == scores.num_rows
    ids = clean.column("sample_id").to_pylist() + quarantine.column("sample_id").to_pylist()
    assert sorted(ids) == sorted(src.column("sample_id").to_pylist())
    for table in (clean, quarantine, scores):
        assert len(set(table.column("sample_id").to_pylist())) == table.num_rows


def test_source_columns_carried_unchanged(run):
    source, out, _ = run
    src = pq.read_table(source)
    by_id = {sid: i for i, sid in enumerate(src.column("sample_id").to_pylist())}
    for name in (CLEAN_FILE, QUARANTINE_FILE):
        table = pq.read_table(out / name)
        rows = [by_id[s] for s in table.column("sample_id").to_pylist()]
        assert rows == sorted(rows)  # source order kept
        for column in src.column_names:
            assert table.schema.field(column).type == src.schema.field(column).type
            assert table.column(column).to_pylist() == src.take(rows).column(column).to_pylist()
    meta = pq.read_schema(out / CLEAN_FILE).metadata
    hf = json.loads(meta[b"huggingface"])
    assert hf["info"]["features"]["label"]["names"][0] == "0"
    assert "sample_weight" in hf["info"]["features"]
    assert b"sanitize" in meta


def test_contract_columns_and_ranges(run):
    _, out, _ = run
    clean = pq.read_table(out / CLEAN_FILE)
    assert clean.schema.field("sample_weight").type == pa.float32()
    assert clean.schema.field("poison_score").type == pa.float32()
    weights = clean.column("sample_weight").to_numpy()
    assert (weights > 0).all()
    np.testing.assert_allclose(weights.mean(), 1.0, rtol=1e-4)
    quarantine = pq.read_table(out / QUARANTINE_FILE)
    assert quarantine.schema.field("reasons").type == pa.list_(pa.string())
    scores = pq.read_table(out / SCORES_FILE)
    for name in DEFAULT_DETECTORS:
        name = f"score_{name}"
        assert name in scores.column_names
    poison = scores.column("poison_score").to_numpy()
    assert ((poison >= 0) & (poison <= 1)).all()
    flagged = scores.column("flagged").to_numpy(zero_copy_only=False)
    assert ((poison >= 0.5) == flagged).all()
    removed_weight = scores.column("sample_weight").to_numpy()[flagged]
    assert (removed_weight == 0).all()


def test_bad_rows_go_to_quarantine_with_their_reason(run):
    source, out, result = run
    quarantine = pq.read_table(out / QUARANTINE_FILE).to_pylist()
    reasons = {row["note"]: row["reasons"] for row in quarantine}
    assert reasons["n5"] == ["unreadable"]
    assert reasons["n9"] == ["missing_label"]
    assert result.counts["unreadable"] == 1 and result.counts["missing_label"] == 1


def test_output_directory_loads_as_a_hugging_face_dataset(run, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # A cache of its own: the user's (or an earlier run's, keyed by the same path) would
    # serve stale rows. datasets reads HF_HOME once, at import, so it is passed here.
    cache = str(tmp_path / "hf")
    _, out, result = run
    clean = datasets.load_dataset(str(out), split="train", cache_dir=cache)
    assert clean.num_rows == result.counts["kept"]
    assert clean.features["label"].names == [str(d) for d in range(10)]
    assert type(clean.features["image"]).__name__ == "Image"
    assert clean[0]["image"].size == (24, 24)  # the sample digits, upscaled by its build
    quarantine = datasets.load_dataset(str(out), "quarantine", split="train", cache_dir=cache)
    assert quarantine.num_rows == result.counts["removed"]
    scores = datasets.load_dataset(str(out), "scores", split="train", cache_dir=cache)
    assert scores.num_rows == 3000
    assert scores.features["label"].names == [str(d) for d in range(10)]
    assert scores.features["is_spectral_issue"].dtype == "bool"


def test_cleanlab_style_issue_columns_and_tables(run):
    _, out, result = run
    scores = pq.read_table(out / SCORES_FILE)
    report = result.report
    for name in DEFAULT_DETECTORS:
        own = scores.column(f"is_{name}_issue").to_numpy(zero_copy_only=False)
        score = scores.column(f"score_{name}").to_numpy(zero_copy_only=False)
        assert (own == (np.nan_to_num(score) >= 0.5)).all(), name
        assert report["per_detector"][name]["flagged"] == own.sum(), name
    issues = result.issues()
    assert len(issues) == 3000
    assert {"sample_id", "label", "is_stamp_issue", "score_stamp", "flagged"} <= set(issues)
    assert issues["flagged"].sum() == result.counts["removed"]
    summary = result.summary()
    assert summary["rows"].sum() == 3000 and summary["removed"].sum() == result.counts["removed"]
    for name in DEFAULT_DETECTORS:
        assert summary[name].sum() == report["per_detector"][name]["flagged"]


def test_report_json(run):
    _, out, _ = run
    report = json.loads((out / REPORT_JSON).read_text())
    assert report["counts"]["kept"] + report["counts"]["removed"] == 3000
    assert set(report["per_detector"]) == set(DEFAULT_DETECTORS)
    assert {"read", "bootstrap", "embed", "decide", "export"} <= set(report["stage_timings"])
    assert report["device"] == "cpu"
    assert report["versions"]["torch"]
    assert len(report["source"]["fingerprint"]) == 16
    assert report["config"]["bootstrap"]["epochs"] == 2
    assert sum(c["rows"] for c in report["per_class"].values()) == 3000
    verdict = report["verdict"]
    assert verdict["poison_suspected"] == bool(verdict["suspect_classes"])
    assert isinstance(verdict["text"], str)


def test_failure_leaves_no_output_under_final_names(tmp_path, fast_config):
    from sanitize.errors import InputError

    bad = tmp_path / "one_class.parquet"
    table = pq.read_table(SAMPLE_SOURCE).slice(0, 50)
    table = table.set_column(1, "label", pa.array([3] * 50, type=pa.int64()))
    pq.write_table(table, bad)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="only one class"):
        sanitize_dataset(bad, out, fast_config)
    assert not any(
        p.name in (CLEAN_FILE, QUARANTINE_FILE, SCORES_FILE, REPORT_JSON) for p in out.iterdir()
    )


def test_given_checkpoint_skips_training_and_says_why_early_loss_is_skipped(tmp_path, fast_config):
    first = sanitize_dataset(SAMPLE_SOURCE, tmp_path / "first", fast_config, keep_work=True)
    checkpoint = first.out / ".work" / "model_bootstrap.safetensors"
    config = fast_config.replace(
        bootstrap=fast_config.bootstrap.__class__(
            checkpoint=str(checkpoint), clean_epochs=2, width=fast_config.bootstrap.width
        )
    )
    result = sanitize_dataset(SAMPLE_SOURCE, tmp_path / "second", config)
    early = result.report["per_detector"]["early_loss"]
    assert early["flagged"] == 0
    assert early["info"]["skipped"].startswith("skipped: no loss_history")
    assert result.report["stage_timings"]["bootstrap"]["rows"] == result.counts["rows"]


def test_chosen_id_column_is_the_sample_id_of_every_output(tmp_path, fast_config):
    table = pq.read_table(SAMPLE_SOURCE).slice(0, 300).drop_columns(["sample_id"])
    table = table.append_column("uid", pa.array([f"u{i}" for i in range(300)]))
    pq.write_table(table, tmp_path / "src.parquet")
    data = fast_config.data.replace(id_column="uid")
    result = sanitize_dataset(
        tmp_path / "src.parquet", tmp_path / "out", fast_config.replace(data=data)
    )
    ids = {}
    for name in (CLEAN_FILE, QUARANTINE_FILE, SCORES_FILE):
        part = pq.read_table(result.out / name)
        ids[name] = part.column("sample_id").to_pylist()
        if name != SCORES_FILE:
            assert part.column("sample_id").to_pylist() == part.column("uid").to_pylist()
    assert sorted(ids[CLEAN_FILE] + ids[QUARANTINE_FILE]) == sorted(ids[SCORES_FILE])
    assert sorted(ids[SCORES_FILE]) == sorted(f"u{i}" for i in range(300))


@pytest.mark.parametrize(
    "change",
    ["reversed", "reversed_without_ids", "fewer_rows"],
)
def test_source_replaced_during_the_run_stops_it_with_exit_2(
    tmp_path, monkeypatch, capsys, fast_config, change
):
    """The source is swapped after the read stage, as `mv copy.parquet in.parquet` would;
    export must not pair the new rows with the old decisions."""
    table = pq.read_table(SAMPLE_SOURCE).slice(0, 300)
    if change == "reversed_without_ids":
        table = table.drop_columns(["sample_id"])
    source = tmp_path / "in.parquet"
    pq.write_table(table, source)
    changed = table.take(np.arange(299, -1, -1)) if change.startswith("reversed") else table[:200]
    pq.write_table(changed, tmp_path / "copy.parquet")
    bootstrap = stages.bootstrap_stage

    def swap_then_bootstrap(*args, **kwargs):
        os.replace(tmp_path / "copy.parquet", source)
        return bootstrap(*args, **kwargs)

    monkeypatch.setattr(stages, "bootstrap_stage", swap_then_bootstrap)
    (tmp_path / "fast.toml").write_text("[bootstrap]\nepochs = 2\nclean_epochs = 2\nwidth = 8\n")
    out = tmp_path / "out"
    argv = [
        "run",
        str(source),
        "--out",
        str(out),
        "--local",
        "--config",
        str(tmp_path / "fast.toml"),
    ]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "changed during the run" in err[0], err
    assert not any((out / name).exists() for name in (CLEAN_FILE, QUARANTINE_FILE, SCORES_FILE))
    assert not list(out.glob(".*.tmp"))


def test_source_replaced_while_it_is_read_stops_the_read_stage(tmp_path, monkeypatch, fast_config):
    table = pq.read_table(SAMPLE_SOURCE).slice(0, 100)
    source = tmp_path / "in.parquet"
    pq.write_table(table, source)
    pq.write_table(table.take(np.arange(99, -1, -1)), tmp_path / "copy.parquet")
    read = reading.read_source

    def read_then_swap(*args, **kwargs):
        summary = read(*args, **kwargs)
        os.replace(tmp_path / "copy.parquet", source)
        return summary

    monkeypatch.setattr(reading, "read_source", read_then_swap)
    with pytest.raises(SourceChangedError, match="changed while it was read"):
        sanitize_dataset(source, tmp_path / "out", fast_config)
