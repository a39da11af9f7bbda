"""The `stamp` detector alone on every case of `detection.py`'s suites (no model needed).

Each case's dataset is subset (``--rows`` rows drawn with ``--seed``), decoded, poisoned
with :mod:`sanitize.attacks` and scored; one JSON line per case: poisons, flagged poisons
(``tp``), flagged clean rows (``fp``), and the stamps accepted (class, rows, near rows over
carriers, exclusivity, spread ratio).

    python benchmarks/stamp_survey.py --datasets ../shared/datasets --seed 7 > survey.jsonl
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import detection  # noqa: E402

from sanitize.attacks import get_attack  # noqa: E402
from sanitize.detect import DetectorContext, get_detector  # noqa: E402


def load_subset(path: Path, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` rows of a split drawn with ``seed``, as uint8 (n, channels, h, w) and labels."""
    table = pq.read_table(path)
    order = np.random.default_rng(seed).permutation(table.num_rows)[:rows]
    table = table.take(np.sort(order))
    images = np.stack(
        [np.asarray(Image.open(io.BytesIO(cell["bytes"]))) for cell in table["image"].to_pylist()]
    )
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images), table["label"].to_numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--part", type=int, nargs=2, default=(0, 1), metavar=("I", "OF"))
    args = parser.parse_args(argv)
    cases = {}
    for suite in detection.SUITES.values():
        for case in suite:
            cases.setdefault(case.name, case)
    for name in sorted(cases)[args.part[0] :: args.part[1]]:
        case = cases[name]
        x, y = load_subset(args.datasets / case.dataset / "train.parquet", args.rows, args.seed)
        truth = np.zeros(len(y), dtype=bool)
        if case.attack != "none":
            attack = get_attack(case.attack, **case.attack_params(args.datasets))
            poisoned = attack.poison(x, y, target=case.target, rate=case.rate, seed=args.seed)
            x, y, truth = poisoned.images, poisoned.labels, poisoned.poisoned
        context = DetectorContext(n_classes=int(y.max()) + 1, images=x)
        result = get_detector("stamp").score(np.zeros((len(y), 1), np.float32), y, context)
        flagged = result.flagged
        accepted = [s for s in result.info["stamps"] if s.get("accepted")]
        line = {
            "case": name,
            "attack": case.attack,
            "seed": args.seed,
            "poisons": int(truth.sum()),
            "tp": int((flagged & truth).sum()),
            "fp": int((flagged & ~truth).sum()),
            "stamps": [
                [
                    s["class"],
                    s["n_rows"],
                    round(s["near"] / s["n_rows"], 3),
                    round(s["exclusivity"], 1),
                    round(s["spread_ratio"], 2),
                    round(s["class_rate"], 3),
                ]
                for s in accepted
            ],
        }
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
