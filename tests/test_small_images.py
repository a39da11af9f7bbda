"""Images smaller than the bootstrap network takes are upsampled, and inspect says so too."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sanitize.config import MIN_IMAGE_SIZE
from sanitize.pipeline.paths import REPORT_JSON
from sanitize_cli.main import EXIT_BAD_INPUT, EXIT_OK, main


def _png(side: int, value: int) -> bytes:
    buf = io.BytesIO()
    from PIL import Image

    Image.fromarray(np.full((side, side), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _tiny_source(path):
    """A 2 x 2 first row, 1 x 1 rows among 4 x 4 ones."""
    sides = [2] + [1 if i % 10 == 0 else 4 for i in range(1, 40)]
    images = [_png(side, 6 * i) for i, side in enumerate(sides)]
    pq.write_table(pa.table({"image": images, "label": [i % 2 for i in range(40)]}), path)
    return path


def test_small_images_run_at_the_smallest_size_and_inspect_agrees(tmp_path, capsys):
    source = _tiny_source(tmp_path / "tiny.parquet")
    out = tmp_path / "out"
    argv = ["run", str(source), "--out", str(out), "--local", "--set", "bootstrap.epochs=1"]
    argv += ["--set", "bootstrap.width=4", "--set", "bootstrap.clean_epochs=1"]
    assert main(argv) == EXIT_OK
    report = json.loads((out / REPORT_JSON).read_text())
    assert report["counts"]["rows"] == 40
    capsys.readouterr()
    assert main(["inspect", str(source), "--json"]) == EXIT_OK
    description = json.loads(capsys.readouterr().out)
    assert description["image_size"] == MIN_IMAGE_SIZE
    assert description["unreadable"] == 0


def test_an_image_size_the_network_cannot_take_exits_2(tmp_path, capsys):
    source = _tiny_source(tmp_path / "tiny.parquet")
    assert main(["inspect", str(source), "--image-size", "5"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.image_size: input should be greater than or equal to 8" in err[0]
