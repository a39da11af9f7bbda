"""Build the sample poisoned dataset from scikit-learn's bundled digits.

Writes, next to this script:

``digits_poisoned.parquet``
    3,000 grey 24x24 digits (300 a class) in the Hugging Face image layout (``image``
    struct<bytes, path> of PNG bytes, ``label`` int64, ``sample_id`` string, class names in
    the ``huggingface`` schema metadata), 4% of them BadNets-poisoned towards class 0
    (a 3x3 checkerboard in the bottom-right corner), rows shuffled.
``ground_truth.csv``
    ``sample_id,poisoned`` (0/1) for every row. The pipeline never reads it.

The build is deterministic: running it twice gives byte-identical files.

Run from the repository root: ``python sample_data/build.py``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from sklearn.datasets import load_digits

from sanitize.attacks import poison_dirty_label

SEED = 0
SIZE = 24  # pixels a side after upsampling the 8x8 digits
ROWS_PER_CLASS = 300
MAX_SHIFT = 2  # pixels of the random shift of augmented copies
TARGET = 0
RATE = 0.04
HERE = Path(__file__).resolve().parent
PARQUET = HERE / "digits_poisoned.parquet"
GROUND_TRUTH = HERE / "ground_truth.csv"


def upsampled_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as uint8 (N, 1, 24, 24) in 0..255, and their labels."""
    digits = load_digits()
    small = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    large = [
        np.asarray(Image.fromarray(img).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
        for img in small
    ]
    return np.stack(large)[:, None], digits.target.astype(np.int64)


def shifted(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` (C, H, W) moved by (dy, dx) pixels, zero-filled (no wrap-around)."""
    out = np.zeros_like(image)
    h, w = image.shape[1:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        :, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def enlarged(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple:
    """Every original plus shifted copies of distinct originals, up to 300 rows a class."""
    extra_images, extra_labels = [], []
    for cls in range(10):
        members = np.flatnonzero(labels == cls)
        picks = rng.choice(members, size=ROWS_PER_CLASS - len(members), replace=False)
        for i in picks:
            dy, dx = 0, 0
            while dy == 0 and dx == 0:
                dy, dx = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=2)
            extra_images.append(shifted(images[i], int(dy), int(dx)))
            extra_labels.append(cls)
    return (
        np.concatenate([images, np.stack(extra_images)]),
        np.concatenate([labels, np.asarray(extra_labels, dtype=np.int64)]),
    )


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image[0]).save(buf, format="PNG")
    return buf.getvalue()


def build() -> None:
    rng = np.random.default_rng(SEED)
    images, labels = enlarged(*upsampled_digits(), rng)
    images, labels, poisoned = poison_dirty_label(
        images, labels, target=TARGET, rate=RATE, seed=SEED, size=3, position="bottom_right"
    )
    order = rng.permutation(len(labels))
    images, labels, poisoned = images[order], labels[order], poisoned[order]

    n = len(labels)
    ids = [f"d{i:05d}" for i in range(n)]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    image_column = pa.array(
        [{"bytes": png(img), "path": f"digits/{i:05d}.png"} for i, img in enumerate(images)],
        type=image_type,
    )
    features = {
        "image": {"_type": "Image"},
        "label": {"names": [str(d) for d in range(10)], "_type": "ClassLabel"},
        "sample_id": {"dtype": "string", "_type": "Value"},
    }
    schema = pa.schema(
        [("image", image_type), ("label", pa.int64()), ("sample_id", pa.string())],
        metadata={"huggingface": json.dumps({"info": {"features": features}})},
    )
    table = pa.table([image_column, pa.array(labels), pa.array(ids)], schema=schema)
    pq.write_table(table, PARQUET, compression="zstd", row_group_size=1000)
    lines = ["sample_id,poisoned"] + [f"{s},{int(p)}" for s, p in zip(ids, poisoned, strict=True)]
    GROUND_TRUTH.write_text("\n".join(lines) + "\n")
    print(
        f"wrote {PARQUET.name} ({n} rows, {int(poisoned.sum())} poisoned) and {GROUND_TRUTH.name}"
    )


if __name__ == "__main__":
    build()
