"""Text from the source reaches the terminal escaped and the report truncated."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from sanitize.pipeline.paths import REPORT_HTML
from sanitize.report.html import CSV_BYTES
from sanitize_cli.main import EXIT_OK, main

ANSI = "\x1b[2J\x1b[31mcat"


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _source(path, id_chars: int = 10):
    features = {"label": {"names": [ANSI, "dog"], "_type": "ClassLabel"}}
    table = pa.table(
        {
            "image": [_png(6 * i) for i in range(40)],
            "label": [i % 2 for i in range(40)],
            "sample_id": [f"{i:03d}" + "x" * id_chars for i in range(40)],
        }
    )
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), path)
    return path


def test_inspect_escapes_control_characters(tmp_path, capsys):
    assert main(["inspect", str(_source(tmp_path / "s.parquet"))]) == EXIT_OK
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\\x1b[31mcat" in out


def test_long_ids_are_truncated_in_report_html(tmp_path):
    source = _source(tmp_path / "s.parquet", id_chars=100_000)
    out = tmp_path / "out"
    argv = ["run", str(source), "--out", str(out), "--local", "--set", "bootstrap.epochs=1"]
    argv += ["--set", "bootstrap.width=4", "--set", "bootstrap.clean_epochs=1"]
    assert main(argv) == EXIT_OK
    html = (out / REPORT_HTML).read_text()
    # Ids in full only in the CSV, whose text is capped (base64 adds a third).
    assert len(html) < 4 / 3 * CSV_BYTES + 500_000
    assert "quarantine.parquet holds them all" in html
    assert "000" + "x" * 61 + "…" in html
