"""Time and peak memory of the `stamp` detector alone as the image size grows.

CIFAR-10 train rows (drawn with seed 3) are upscaled by pixel repetition to ``SIDE``,
poisoned with BadNets (3 x 3 at 2% into class 3) and scored; one line: rows, side,
seconds, poisons found, flagged clean rows, tracemalloc's peak during the score, and the
images' own size.

    python benchmarks/stamp_scale.py ../shared/datasets 10000 224
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stamp_survey import load_subset  # noqa: E402

from sanitize.attacks import get_attack  # noqa: E402
from sanitize.detect import DetectorContext, get_detector  # noqa: E402


def main(argv: list[str]) -> int:
    datasets, rows, side = Path(argv[0]), int(argv[1]), int(argv[2])
    x, y = load_subset(datasets / "cifar10" / "train.parquet", rows, 3)
    k = side // 32
    x = np.ascontiguousarray(x.repeat(k, axis=2).repeat(k, axis=3))
    poisoned = get_attack("badnets").poison(x, y, target=3, rate=0.02, seed=0)
    tracemalloc.start()
    start = time.perf_counter()
    result = get_detector("stamp").score(
        np.zeros((rows, 1), np.float32),
        poisoned.labels,
        DetectorContext(n_classes=10, images=poisoned.images),
    )
    seconds = time.perf_counter() - start
    truth, flagged = poisoned.poisoned, result.flagged
    print(
        f"{rows} x {side}: {seconds:.1f} s, poisons {(flagged & truth).sum()}/{truth.sum()}, "
        f"clean flagged {(flagged & ~truth).sum()}, "
        f"peak {tracemalloc.get_traced_memory()[1] >> 20} MB, images {x.nbytes >> 20} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
