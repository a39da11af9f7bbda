"""Pillow against torchvision's ``decode_image`` on the image bytes of a Parquet source.

OMP_NUM_THREADS=1 python benchmarks/decode_speed.py ../shared/datasets/cifar10/train.parquet
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from torchvision.io import decode_image


def _pillow(blobs: list[bytes]) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs]


def _torchvision(blobs: list[bytes]) -> list[np.ndarray]:
    return [decode_image(torch.frombuffer(bytearray(b), dtype=torch.uint8)).numpy() for b in blobs]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="HF-layout Parquet files")
    parser.add_argument("--rows", type=int, default=5000, help="rows decoded (5000)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes of each (2)")
    args = parser.parse_args(argv)
    decoders: dict[str, Callable[[list[bytes]], list[np.ndarray]]] = {
        "pillow": _pillow,
        "torchvision": _torchvision,
    }
    for source in args.sources:
        table = pq.read_table(source, columns=["image"]).slice(0, args.rows)
        blobs = [cell["bytes"] for cell in table.column("image").to_pylist()]
        for _ in range(args.repeats):
            for name, decode in decoders.items():
                start = time.perf_counter()
                decode(blobs)
                seconds = time.perf_counter() - start
                print(f"{source} {name}: {len(blobs) / seconds:,.0f} images/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
