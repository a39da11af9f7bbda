"""The model probes: last-conv channel norms from the embedding pass, the l_inf activation
bias and the adversarial-neuron overlap detectors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from sanitize.config import DEFAULT_DETECTORS, KNOWN_DETECTORS, SanitizeConfig
from sanitize.detect import DetectorContext, get_detector
from sanitize.detect.base import AdversarialProbe
from sanitize.errors import InputError
from sanitize.model import NetSpec, embed_rows, load_checkpoint
from sanitize.model.net import BootstrapNet
from sanitize.model.probe import adversarial_probe, probe_sample
from sanitize.model.train import Normalizer
from sanitize.pipeline.paths import RunPaths
from sanitize.pipeline.plan import build_plan
from sanitize.pipeline.stages import (
    bootstrap_stage,
    detect_stage,
    embed_shard_stage,
    embed_stage,
    merge_embed_shards_stage,
    read_stage,
)
from tests.conftest import SAMPLE_SOURCE, SAMPLE_TRUTH

CPU = torch.device("cpu")


# --- the channel norms -------------------------------------------------------------------


def test_channel_norms_come_with_the_features_of_the_same_pass():
    torch.manual_seed(0)
    model = BootstrapNet(NetSpec(channels=3, n_classes=4, width=4)).eval()
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        logits, feats, norms = model.forward_with_maps(x)
        ref_logits, ref_feats = model.forward_with_features(x)
    assert norms.shape == (5, 3, model.feature_dim)
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(feats, ref_feats)
    # Post-ReLU maps of 2 x 2: the pooled feature is the l_1 norm over 4 positions.
    torch.testing.assert_close(norms[:, 0] / 4, feats)
    assert torch.all(norms[:, 2] <= norms[:, 1] + 1e-6) and torch.all(
        norms[:, 1] <= norms[:, 0] + 1e-6
    )


def test_embed_rows_writes_the_norms_from_one_forward_pass_a_batch(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = (rng.random((70, 1, 12, 12)) * 255).astype(np.uint8)
    labels = rng.integers(0, 3, 70)
    model = BootstrapNet(NetSpec(channels=1, n_classes=3, width=4))
    calls = []
    original = BootstrapNet.forward_with_maps

    def counted(self, x):
        calls.append(len(x))
        return original(self, x)

    monkeypatch.setattr(BootstrapNet, "forward_with_maps", counted)
    monkeypatch.setattr(BootstrapNet, "forward_with_features", None)  # never a second pass
    rows = np.arange(5, 70)
    normalizer = Normalizer.fit(images, rows)
    features, _ = embed_rows(
        model,
        normalizer,
        images,
        labels,
        rows,
        device=CPU,
        batch_size=32,
        features_out=tmp_path / "f.npy",
        norms_out=tmp_path / "n.npy",
    )
    assert calls == [32, 32, 1]
    norms = np.load(tmp_path / "n.npy")
    assert norms.shape == (70, 3, model.feature_dim) and norms.dtype == np.float32
    assert not norms[:5].any() and norms[5:, 2].any()
    # 12 px -> 6 -> 3 -> 1: maps of one position, where all three norms are equal.
    np.testing.assert_allclose(norms[5:, 0], features[5:], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(norms[:, 0], norms[:, 2], rtol=1e-5, atol=1e-6)


# --- a run on the sample data, and on its clean rows alone --------------------------------


def _run(source, tmp_path_factory, name):
    config = SanitizeConfig()
    paths = RunPaths.at(tmp_path_factory.mktemp(name) / "out")
    read_stage(str(source), config, paths)
    bootstrap_stage(config, paths)
    embed_stage(config, paths)
    rows = pq.read_table(paths.rows, columns=["sample_id", "y"])
    truth = pacsv.read_csv(SAMPLE_TRUTH).to_pydict()
    poisoned = {i for i, p in zip(truth["sample_id"], truth["poisoned"], strict=True) if p}
    poison = np.array([i in poisoned for i in rows.column("sample_id").to_pylist()])
    return paths, rows.column("y").to_numpy().astype(np.int64), poison


@pytest.fixture(scope="module")
def poisoned_run(tmp_path_factory):
    """The sample data's BadNets (120 rows into class 0), as the bootstrap model learns it."""
    return _run(SAMPLE_SOURCE, tmp_path_factory, "poisoned")


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """The sample data without its poisons."""
    table = pq.read_table(SAMPLE_SOURCE)
    truth = pacsv.read_csv(SAMPLE_TRUTH).to_pydict()
    poisoned = {i for i, p in zip(truth["sample_id"], truth["poisoned"], strict=True) if p}
    keep = [i not in poisoned for i in table.column("sample_id").to_pylist()]
    source = tmp_path_factory.mktemp("clean-source") / "clean.parquet"
    pq.write_table(table.filter(keep), source)
    return _run(source, tmp_path_factory, "clean")


def _context(paths, n_rows, **fields):
    return DetectorContext(n_classes=10, seed=0, **fields)


def test_embed_stage_writes_the_channel_norms_once_and_shards_agree(poisoned_run):
    paths, y, _ = poisoned_run
    norms = np.load(paths.channel_norms)
    features = np.load(paths.features)
    assert norms.shape == (len(y), 3, features.shape[1])
    embed = next(s for s in build_plan(SanitizeConfig(), len(y)) if s.name == "embed")
    assert paths.channel_norms in embed.outputs(paths)
    # 24 px -> 12 -> 6 -> 3: the pooled features are the l_1 norms over 9 positions.
    np.testing.assert_allclose(norms[:, 0] / 9, features, rtol=1e-4, atol=1e-5)
    config = SanitizeConfig()
    ranges = [(0, 1500), (1500, len(y))]
    results = [embed_shard_stage(config, paths, i, r) for i, r in enumerate(ranges)]
    merge_embed_shards_stage(paths, ranges, results)
    np.testing.assert_allclose(np.load(paths.channel_norms), norms, rtol=1e-4, atol=1e-5)


def test_linf_activation_finds_the_planted_trigger(poisoned_run):
    paths, y, poison = poisoned_run
    result = get_detector("linf_activation").score(
        np.load(paths.features),
        y,
        _context(paths, len(y), channel_norms=np.load(paths.channel_norms)),
    )
    assert np.array_equal(result.score >= 0.5, result.flagged)
    assert result.info["classes_flagged"] == [0]
    assert result.flagged[poison].mean() >= 0.9
    assert (result.flagged & ~poison).sum() <= 3
    assert result.info["per_class"]["0"]["channels"]


def test_linf_activation_flags_nothing_on_the_clean_set(clean_run):
    paths, y, _ = clean_run
    result = get_detector("linf_activation").score(
        np.load(paths.features),
        y,
        _context(paths, len(y), channel_norms=np.load(paths.channel_norms)),
    )
    assert result.flagged.sum() == 0


def _probe(paths, y, n_probe=300):
    model, normalizer = load_checkpoint(paths.model_bootstrap, spec=NetSpec(1, 10, 32), device=CPU)
    rows = probe_sample(len(y), n_probe, seed=0)
    images = np.load(paths.images, mmap_mode="r")
    return adversarial_probe(
        model, normalizer, images, y, rows, eps=6 / 255, steps=5, step_size=6 / 255 / 5, device=CPU
    )


def test_adversarial_probe_is_bounded_and_moves_predictions(poisoned_run):
    paths, y, _ = poisoned_run
    probe = _probe(paths, y)
    assert probe.rows.shape == (300,) and np.all(np.diff(probe.rows) > 0)
    assert probe.features.shape == (300, 256) and np.isfinite(probe.features).all()
    assert probe.info["n_probe"] == 300 and probe.info["steps"] == 5
    # Untargeted PGD changes the model's answer on some of the rows.
    assert (probe.predicted != y[probe.rows]).mean() > 0.05
    assert np.array_equal(probe_sample(10, 300, 0), np.arange(10))


def test_adversarial_overlap_flags_nothing_on_the_clean_set(clean_run):
    paths, y, _ = clean_run
    probe = _probe(paths, y)
    result = get_detector("adversarial_overlap").score(
        np.load(paths.features), y, _context(paths, len(y), adversarial_probe=probe)
    )
    assert result.flagged.sum() == 0
    assert sum(result.info["landings"]) == result.info["probe"]["n_moved"]


def test_detect_stages_hand_the_probes_what_they_need(poisoned_run):
    paths, y, poison = poisoned_run
    config = SanitizeConfig(
        detectors=("linf_activation", "adversarial_overlap"),
        detector_params={"adversarial_overlap": {"n_probe": 100, "steps": 2}},
    )
    for name in config.detectors:
        result = detect_stage(name, config, paths)
        assert result["rows"] == len(y)
        saved = np.load(paths.detector_scores(name))
        assert saved["score"].shape == (len(y),)
    info = json.loads(paths.detector_info("adversarial_overlap").read_text())
    assert info["probe"]["n_probe"] == 100 and info["probe"]["steps"] == 2
    assert np.load(paths.detector_scores("linf_activation"))["flagged"][poison].mean() >= 0.9


# --- the overlap detector on planted features ---------------------------------------------


def _planted_overlap(plant: bool, seed: int = 0):
    """Ten classes of non-negative features; in class 3 a group of 40 rows drives neurons
    5-7, and the adversarial examples that reach class 3 drive the same neurons."""
    rng = np.random.default_rng(seed)
    n_per, dim = 200, 32
    y = np.repeat(np.arange(10), n_per)
    x = np.abs(rng.normal(size=(10, dim)) * 2)[y] + rng.gamma(2.0, 0.5, size=(len(y), dim))
    poison = np.zeros(len(y), dtype=bool)
    if plant:
        poison[np.flatnonzero(y == 3)[:40]] = True
        x[np.ix_(poison, [5, 6, 7])] += 6.0
    rows = np.sort(rng.choice(len(y), 400, replace=False))
    predicted = (y[rows] + 1 + rng.integers(0, 9, rows.size)) % 10  # every example moves
    adv = x[rows] + rng.normal(scale=0.3, size=(rows.size, dim))
    if plant:
        predicted[: rows.size // 3] = 3  # the backdoor draws adversarial examples
        adv[: rows.size // 3, 5:8] += 4.0
    probe = AdversarialProbe(rows, adv.astype(np.float32), predicted)
    context = DetectorContext(n_classes=10, seed=0, adversarial_probe=probe)
    return x.astype(np.float32), y, poison, context


def test_adversarial_overlap_finds_the_neurons_adversarial_examples_share_with_poisons():
    x, y, poison, context = _planted_overlap(plant=True)
    result = get_detector("adversarial_overlap").score(x, y, context)
    assert result.info["classes_flagged"] == [3]
    assert set(result.info["per_class"]["3"]["neurons"][:3]) == {5, 6, 7}
    assert result.flagged[poison].mean() >= 0.95 and (result.flagged & ~poison).sum() <= 2


def test_adversarial_overlap_flags_nothing_without_a_plant():
    x, y, _, context = _planted_overlap(plant=False)
    assert not get_detector("adversarial_overlap").score(x, y, context).flagged.any()


def test_probe_context_is_validated():
    x, y, _, context = _planted_overlap(plant=True)
    bad = dataclasses.replace(
        context.adversarial_probe, features=context.adversarial_probe.features[:, :4]
    )
    with pytest.raises(InputError, match="adversarial_probe.features has shape"):
        get_detector("adversarial_overlap").score(
            x, y, dataclasses.replace(context, adversarial_probe=bad)
        )
    with pytest.raises(InputError, match="requires context field.*channel_norms"):
        get_detector("linf_activation").score(x, y, DetectorContext(n_classes=10))
    with pytest.raises(InputError, match="channel_norms must have shape"):
        get_detector("linf_activation").score(
            x, y, DetectorContext(n_classes=10, channel_norms=np.ones((3, 3, 4)))
        )


def test_model_probes_are_known_but_off_by_default():
    for name in ("linf_activation", "adversarial_overlap"):
        assert name in KNOWN_DETECTORS and name not in DEFAULT_DETECTORS
    config = SanitizeConfig(detectors=("spectral", "linf_activation", "adversarial_overlap"))
    assert [s.name for s in build_plan(config, 100) if s.kind == "detect"] == [
        "detect_spectral",
        "detect_linf_activation",
        "detect_adversarial_overlap",
    ]
