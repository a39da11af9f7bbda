"""Malformed ``huggingface`` schema metadata is ignored with a warning, never a crash at
export after the training."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sanitize.pipeline.paths import CLEAN_FILE
from sanitize_cli.main import EXIT_OK, main


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("metadata", [b"{not json", b"[1, 2]", b'{"info": {"features": 3}}'])
def test_malformed_hf_metadata_is_ignored_with_a_warning(tmp_path, capsys, metadata):
    table = pa.table(
        {"image": [_png(6 * i) for i in range(40)], "label": [i % 2 for i in range(40)]}
    )
    source = tmp_path / "odd.parquet"
    pq.write_table(table.replace_schema_metadata({b"huggingface": metadata}), source)
    out = tmp_path / "out"
    argv = ["run", str(source), "--out", str(out), "--local", "--set", "bootstrap.epochs=1"]
    argv += ["--set", "bootstrap.width=4", "--set", "bootstrap.clean_epochs=1"]
    assert main(argv) == EXIT_OK
    err = capsys.readouterr().err
    assert "huggingface" in err and "Traceback" not in err
    assert b"huggingface" not in (pq.read_schema(out / CLEAN_FILE).metadata or {})
