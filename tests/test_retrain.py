"""The retraining check (retrain) and the benchmark's case runner, on tiny data."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sanitize.config import SanitizeConfig
from sanitize.errors import InputError
from sanitize.evaluate import read_truth
from tests.conftest import REPO, SAMPLE_SOURCE

sys.path.insert(0, str(REPO / "benchmarks"))
from retrain import (  # noqa: E402  (benchmark-only code, not in the installed package)
    RetrainRecipe,
    random_crop,
    read_image_parquet,
    retrain_and_score,
)

SMALL = RetrainRecipe(width=8, batch_size=32)


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two trivially separable classes: dark (0) and bright (1) 16x16 grey noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    base = np.where(labels == 0, 40, 200)[:, None, None, None]
    images = np.clip(base + rng.normal(0, 20, (n, 1, 16, 16)), 0, 255).astype(np.uint8)
    return images, labels


def _triggered(images: np.ndarray) -> np.ndarray:
    out = images.copy()
    out[:, :, 4:12, 4:12] = 255  # a large central patch: still inside the image after a crop
    return out


def test_scores_lie_in_unit_interval_and_report_their_inputs():
    x, y = _toy(256, seed=0)
    x_test, y_test = _toy(64, seed=1)
    trig = _triggered(x_test[y_test == 1])
    result = retrain_and_score(
        x, y, None, x_test, y_test, trig, np.zeros(len(trig), np.int64),
        n_classes=2, channels=1, epochs=2, seed=0, device="cpu", recipe=SMALL,
    )  # fmt: skip
    assert set(result) >= {"clean_accuracy", "attack_success_rate", "epochs", "seconds"}
    assert 0.0 <= result["clean_accuracy"] <= 1.0
    assert 0.0 <= result["attack_success_rate"] <= 1.0
    assert result["clean_accuracy"] > 0.9  # separable by brightness alone
    assert result["epochs"] == 2 and result["train_rows"] == 256 and result["seconds"] > 0


def test_a_weight_zero_row_is_never_drawn():
    # Every class-1 row has weight 0: a model that never sees label 1 predicts 0 everywhere,
    # so its accuracy is exactly the share of class 0 in the test set.
    x, y = _toy(256, seed=0)
    weights = np.where(y == 0, 2.0, 0.0)
    x_test, y_test = _toy(64, seed=1)
    result = retrain_and_score(
        x, y, weights, x_test, y_test, x_test[:0], y_test[:0],
        n_classes=2, channels=1, epochs=2, seed=0, device="cpu", recipe=SMALL,
    )  # fmt: skip
    assert result["clean_accuracy"] == pytest.approx(float(np.mean(y_test == 0)))
    assert np.isnan(result["attack_success_rate"])  # no triggered rows
    assert result["train_rows"] == int((weights > 0).sum())


def test_same_seed_same_result():
    x, y = _toy(128, seed=0)
    args = (x, y, np.linspace(0.5, 1.5, 128), x, y, x[:8], np.zeros(8, np.int64))
    kwargs = dict(n_classes=2, channels=1, epochs=1, seed=3, device="cpu", recipe=SMALL)
    a = retrain_and_score(*args, **kwargs)
    b = retrain_and_score(*args, **kwargs)
    assert (a["clean_accuracy"], a["attack_success_rate"]) == (
        b["clean_accuracy"],
        b["attack_success_rate"],
    )


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (np.full(10, -1.0), ">= 0"),
        (np.zeros(10), "all 0"),
        (np.ones(9), "shape"),
    ],
)
def test_bad_weights_are_refused(weights, message):
    x, y = _toy(10, seed=0)
    with pytest.raises(InputError, match=message):
        retrain_and_score(
            x, y, weights, x, y, x, y, n_classes=2, channels=1, epochs=1, seed=0, recipe=SMALL
        )


def test_labels_out_of_range_are_refused():
    x, y = _toy(10, seed=0)
    with pytest.raises(InputError, match=r"\[0, 2\)"):
        retrain_and_score(
            x, y + 1, None, x, y, x, y, n_classes=2, channels=1, epochs=1, seed=0, recipe=SMALL
        )


def test_random_crop_is_a_shifted_window_of_the_zero_padded_image():
    g = torch.Generator().manual_seed(0)
    batch = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) + 1
    assert torch.equal(random_crop(batch, 0, g), batch)
    out = random_crop(batch, 4, g)
    assert out.shape == batch.shape
    padded = torch.nn.functional.pad(batch, (4, 4, 4, 4))
    for i in range(2):
        windows = [
            torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
            for dy in range(9)
            for dx in range(9)
        ]
        assert sum(windows) >= 1


def test_read_image_parquet_decodes_images_labels_and_weights(tmp_path):
    table = pq.read_table(SAMPLE_SOURCE).slice(0, 20)
    table = table.append_column("sample_weight", pa.array(np.linspace(0.5, 1.5, 20), pa.float32()))
    path = tmp_path / "clean.parquet"
    pq.write_table(table, path)
    images, labels, weights = read_image_parquet(
        path, size=16, channels=1, weight_column="sample_weight"
    )
    assert images.shape == (20, 1, 16, 16) and images.dtype == np.uint8
    assert labels.tolist() == table.column("label").to_pylist()
    assert weights is not None and weights.dtype == np.float32 and weights[0] == 0.5
    with pytest.raises(InputError, match="file not found"):
        read_image_parquet(tmp_path / "missing.parquet", size=16, channels=1)


# --- the benchmark script -------------------------------------------------------------------


def _load_script(name: str):
    """A script of benchmarks/ as a module (``benchmark_<name>``)."""
    spec = importlib.util.spec_from_file_location(
        f"benchmark_{name}", REPO / "benchmarks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _benchmark_module():
    return _load_script("detection")


def test_benchmark_help_works_without_art():
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "detection.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "--retrain-epochs" in done.stdout and "--art" in done.stdout


@pytest.mark.slow
def test_benchmark_case_runner_end_to_end_on_tiny_digits(tmp_path):
    """300 digits rows, BadNets 5%: sanitize, metrics, three retraining arms, JSON, table."""
    bench = _benchmark_module()
    table = pq.read_table(SAMPLE_SOURCE)
    (tmp_path / "digits").mkdir()
    pq.write_table(table.slice(0, 400), tmp_path / "digits" / "train.parquet")
    pq.write_table(table.slice(400, 200), tmp_path / "digits" / "test.parquet")
    case = bench.Case("digits-badnets-5pct", "digits", "badnets", target=1, rate=0.05)
    settings = bench.Settings(
        datasets=tmp_path,
        rows=300,
        test_rows=100,
        train_steps=10,
        retrain_epochs=1,
        device="cpu",
        work_dir=tmp_path,
        keep_work=True,
    )
    result = bench.run_case(case, settings)

    assert result["rows"] == 300 and result["n_poisoned"] == 15
    detection = result["detection"]
    assert "decision" in detection and len(detection) >= 2  # a column per detector
    assert all(0 <= m["fpr"] <= 1 for m in detection.values())
    assert set(result["retrain"]) == {"none", "true_clean", "ours"}
    for arm in result["retrain"].values():
        assert 0 <= arm["clean_accuracy"] <= 1 and 0 <= arm["attack_success_rate"] <= 1
    assert result["retrain"]["true_clean"]["train_rows"] == 285
    assert result["retrain"]["ours"]["train_rows"] == result["counts"]["kept"]

    result["name"] = case.name
    json.dumps(result, default=bench._json_default)  # what main() writes
    header = {
        "command": "test",
        "machine": "test",
        "code": "test",
        "wall_text": "1.0 min",
        "retrain_epochs": 1,
        "test_rows": 100,
    }
    text = bench.markdown([result], header)
    assert "| digits-badnets-5pct |" in text and "mean (1 dirty-label)" in text
    # --report-only describes what the cases ran with, not its own defaults.
    assert bench.recorded([result], "test_rows", "2,000") == "100"
    assert bench.recorded([result], "machine", "here").endswith("device cpu")
    assert bench.recorded([{}], "machine", "here") == "here"

    # The kept folder is enough to re-score every default detector (``stamp`` reads the
    # images) and to reproduce the run's decision without training.
    kept = tmp_path / f"kept-{case.name}"
    rescore = _load_script("rescore")
    arrays = rescore.load_case(kept)
    config = SanitizeConfig().replace(seed=arrays["seed"])
    again_scored, _ = rescore.rescore(arrays, list(config.detectors), config)
    assert set(again_scored) == set(config.detectors) | {"decision"}
    assert again_scored["decision"]["removed"] == detection["decision"]["removed"]
    assert again_scored["decision"]["tpr"] == detection["decision"]["tpr"]

    # The kept folder is enough to retrain the arms again, with another length.
    retrain_kept = _load_script("retrain_kept")
    again = retrain_kept.retrain_kept(kept, case, settings)
    assert set(again["retrain"]) == {"none", "true_clean", "ours"}
    assert again["retrain"]["true_clean"]["train_rows"] == 285
    assert again["retrain"]["ours"]["train_rows"] == result["counts"]["kept"]
    table = retrain_kept.markdown(
        [again], settings.arms, {"epochs": 1, "machine": "m", "command": "c"}
    )
    assert "| digits-badnets-5pct |" in table and "| - |" not in table


def test_benchmark_builds_composite_and_shaped_cases(tmp_path):
    """Every new kind of case builds its data: labels, ground truth and ASR rows agree."""
    bench = _benchmark_module()
    table = pq.read_table(SAMPLE_SOURCE)
    (tmp_path / "digits").mkdir()
    pq.write_table(table.slice(0, 400), tmp_path / "digits" / "train.parquet")
    pq.write_table(table.slice(400, 100), tmp_path / "digits" / "test.parquet")
    parts = (("badnets", (("size", 3),), 2), ("blend", (("alpha", 0.3),), 7))
    cases = [
        bench.Case("multi", "digits", "multi_target", (("parts", parts),), rate=0.06),
        bench.Case("all2all", "digits", "all_to_all", (("n_classes", 10),), rate=0.05),
        bench.Case("cl", "digits", "clean_label", (("attack", "wanet"),), target=3, rate=0.05),
        bench.Case("tail", "digits", "none", rate=0.0, subset="longtail"),
        bench.Case("dup", "digits", "badnets", target=1, rate=0.05, subset="neardup", side=24),
    ]
    assert [c.targets for c in cases] == ["2+7", "all", "3", "0", "1"]
    assert [c.dirty_label for c in cases] == [True, True, False, False, True]
    settings = bench.Settings(datasets=tmp_path, rows=200, test_rows=50)
    summaries = {}
    for case in cases:
        (tmp_path / case.name).mkdir()
        summaries[case.name] = bench.build_case(case, settings, tmp_path / case.name)[1]
    multi = pq.read_table(summaries["multi"].out).column("label").to_numpy()
    truth = read_truth(summaries["multi"].truth)
    assert sorted(multi[np.array(list(truth.values()))].tolist()) == [2] * 6 + [7] * 6
    tail = np.bincount(pq.read_table(summaries["tail"].out).column("label").to_numpy())
    assert tail[0] > tail[-1] and tail.sum() == 200
    dup = summaries["dup"]
    assert dup.n_rows == 210 and (dup.height, dup.n_poisoned) == (24, 10)
    assert bench.build_only(cases, settings) == 0
    nested = bench.Case("n", "digits", "clean_label", (("params", (("p", "triggers/x.png"),)),))
    assert nested.attack_params(Path("/d")) == {"params": (("p", "/d/triggers/x.png"),)}
