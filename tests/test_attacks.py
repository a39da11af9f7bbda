"""Attack simulation: each trigger is where it should be, labels and ground truth are right,
poisoning is seeded, and a dataset on disk round-trips through `poison_source` and the CLI."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sanitize.attacks import (
    SIG,
    BadNets,
    Blend,
    Filter,
    LowFrequency,
    Trojan,
    WaNet,
    available_attacks,
    checkerboard,
    get_attack,
    poison_source,
)
from sanitize.attacks.filter import FILTERS
from sanitize.config import DataConfig
from sanitize.data import decode_image
from sanitize.errors import ConfigError, InputError
from sanitize_cli.main import EXIT_BAD_INPUT, EXIT_OK, main

TRIGGERS = Path(__file__).resolve().parents[1].parent / "shared/datasets/triggers/backdoor-toolbox"
DIRTY = ("badnets", "blend", "trojan", "filter", "wanet", "lowfreq")
COMPOSITE = ("all_to_all", "multi_target", "clean_label")
CHANNELS = pytest.mark.parametrize("channels", [1, 3], ids=["grey", "rgb"])


def dataset(n: int = 120, channels: int = 3, side: int = 16, classes: int = 4, seed: int = 1):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, channels, side, side), dtype=np.uint8)
    labels = rng.integers(0, classes, n).astype(np.int64)
    return images, labels


# --- interface and registry -----------------------------------------------------------------


def test_registry_lists_every_attack():
    assert set(available_attacks()) == {*DIRTY, "sig", "none", *COMPOSITE}
    assert get_attack("sig").clean_label and not get_attack("blend").clean_label


def test_unknown_attack_and_bad_params_raise_config_errors():
    with pytest.raises(ConfigError, match=r"unknown attack 'x'; known: all_to_all, badnets, blend"):
        get_attack("x")
    with pytest.raises(ConfigError, match=r"has no parameter\(s\) \['beta'\]"):
        get_attack("blend", beta=1)
    for name, params, message in [
        ("blend", {"alpha": 1.5}, r"alpha must be a number in \(0, 1\]"),
        ("filter", {"kind": "lomo"}, "unknown kind 'lomo'; known: tint"),
        ("wanet", {"k": 1}, "k must be an integer >= 2"),
        ("badnets", {"position": "middle"}, "unknown position 'middle'"),
        ("blend", {"trigger_path": "/no/such.png"}, "trigger file not found"),
        ("blend", {"pattern": "image"}, "needs a trigger_path"),
    ]:
        with pytest.raises(ConfigError, match=message) as err:
            get_attack(name, **params)
        assert "\n" not in str(err.value)


def test_params_are_stored_as_given():
    attack = Blend(alpha=0.3)
    assert attack.get_params() == {
        "trigger_path": None,
        "alpha": 0.3,
        "pattern": None,
        "noise_seed": 0,
    }
    assert repr(attack).startswith("Blend(trigger_path=None, alpha=0.3")


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 3, 16, 16), np.float32),
        np.zeros((2, 2, 16, 16), np.uint8),
        np.zeros((2, 3, 4, 4), np.uint8),
        np.zeros((3, 16, 16), np.uint8),
    ],
)
def test_bad_images_are_input_errors(images):
    with pytest.raises(InputError):
        get_attack("badnets").apply(images)


# --- poisoning: counts, labels, ground truth, seeds ----------------------------------------


@pytest.mark.parametrize("name", DIRTY)
@CHANNELS
def test_dirty_label_poisoning(name, channels):
    images, labels = dataset(channels=channels)
    attack, rate, target = get_attack(name), 0.1, 2
    result = attack.poison(images, labels, target=target, rate=rate, seed=0)
    poisoned = result.poisoned
    assert poisoned.dtype == bool and poisoned.sum() == round(rate * len(labels))
    assert (labels[poisoned] != target).all()
    assert (result.labels[poisoned] == target).all()
    assert np.array_equal(result.labels[~poisoned], labels[~poisoned])
    assert np.array_equal(result.images[~poisoned], images[~poisoned])
    assert np.array_equal(result.images[poisoned], attack.apply(images[poisoned]))
    assert (result.images[poisoned] != images[poisoned]).any(axis=(1, 2, 3)).all()
    assert result.info["n_poisoned"] == poisoned.sum() and result.info["attack"] == name


@pytest.mark.parametrize("name", [*DIRTY, "sig"])
def test_poisoning_is_seeded(name):
    images, labels = dataset()
    attack = get_attack(name)
    first = attack.poison(images, labels, target=0, rate=0.1, seed=3)
    again = attack.poison(images, labels, target=0, rate=0.1, seed=3)
    other = attack.poison(images, labels, target=0, rate=0.1, seed=4)
    assert np.array_equal(first.images, again.images)
    assert np.array_equal(first.poisoned, again.poisoned)
    assert not np.array_equal(first.poisoned, other.poisoned)


@CHANNELS
def test_clean_label_poisons_only_target_rows_and_keeps_labels(channels):
    images, labels = dataset(channels=channels)
    result = SIG().poison(images, labels, target=1, rate=0.1, seed=0)
    assert result.poisoned.sum() == 12
    assert (labels[result.poisoned] == 1).all()
    assert np.array_equal(result.labels, labels)
    assert "note" not in result.info


def test_clean_label_rate_is_capped_at_the_target_class():
    images, labels = dataset()
    size = int((labels == 3).sum())
    result = SIG().poison(images, labels, target=3, rate=0.9, seed=0)
    assert result.poisoned.sum() == size == result.info["n_poisoned"]
    assert result.info["requested"] == 108
    assert f"target class 3 has {size} rows" in result.info["note"]


@pytest.mark.parametrize("name", available_attacks())
def test_rate_zero_is_the_clean_dataset(name):
    images, labels = dataset()
    result = get_attack(name).poison(images, labels, target=0, rate=0.0, seed=0)
    assert not result.poisoned.any()
    assert np.array_equal(result.images, images) and np.array_equal(result.labels, labels)


def test_attack_none_changes_nothing_at_any_rate():
    images, labels = dataset()
    result = get_attack("none").poison(images, labels, target=0, rate=0.2, seed=0)
    assert not result.poisoned.any()
    assert np.array_equal(result.images, images) and np.array_equal(result.labels, labels)
    assert "poisons no row" in result.info["note"]


def test_rate_beyond_non_target_rows_and_bad_arguments():
    images, _ = dataset(n=10)
    labels = np.array([0] * 9 + [1])
    with pytest.raises(ConfigError, match="only 1 rows are outside target class 0"):
        get_attack("blend").poison(images, labels, target=0, rate=0.5, seed=0)
    with pytest.raises(ConfigError, match=r"rate must be a number in \[0, 1\]"):
        get_attack("blend").poison(images, labels, target=0, rate=1.5, seed=0)
    with pytest.raises(InputError, match="labels must have shape"):
        get_attack("blend").poison(images, labels[:5], target=0, rate=0.1, seed=0)


@pytest.mark.parametrize("name", [*DIRTY, "sig", "none"])
def test_triggered_test_set(name):
    images, labels = dataset()
    attack = get_attack(name)
    test_images, test_labels = attack.triggered_test_set(images, labels, target=2)
    keep = labels != 2
    assert len(test_images) == keep.sum() and (test_labels == 2).all()
    assert np.array_equal(test_images, attack.apply(images[keep]))


@pytest.mark.parametrize(
    "attack", [BadNets(), WaNet(noise=True), SIG()], ids=["badnets", "wanet-noise", "sig"]
)
def test_plan_executed_batch_by_batch_equals_poison(attack):
    images, labels = dataset()
    result = attack.poison(images, labels, target=1, rate=0.1, seed=5)
    plan = attack.plan(labels, target=1, rate=0.1, seed=5)
    pieces = [attack.execute(images[s : s + 7], plan, start=s) for s in range(0, len(images), 7)]
    assert np.array_equal(np.concatenate(pieces), result.images)


# --- the triggers themselves ----------------------------------------------------------------


@CHANNELS
def test_badnets_patch_pixels_equal_the_pattern(channels):
    images, _ = dataset(n=4, channels=channels)
    out = BadNets().apply(images)
    board = np.broadcast_to(checkerboard(3), (4, channels, 3, 3))
    assert np.array_equal(out[:, :, 12:15, 12:15], board)
    outside = np.ones((16, 16), bool)
    outside[12:15, 12:15] = False
    assert np.array_equal(out[:, :, outside], images[:, :, outside])
    white = BadNets(pattern="white", size=4, position="top_left", margin=0).apply(images)
    assert (white[:, :, :4, :4] == 255).all()


@CHANNELS
def test_blend_equals_the_formula(channels):
    images, _ = dataset(n=5, channels=channels)
    attack = Blend(alpha=0.2, noise_seed=7)
    t = attack.trigger(channels, 16, 16).astype(np.float64)
    expected = np.clip(np.rint(0.8 * images + 0.2 * t), 0, 255)
    assert np.abs(attack.apply(images).astype(int) - expected).max() <= 1
    other = Blend(noise_seed=8).trigger(channels, 16, 16)
    assert not np.array_equal(other, attack.trigger(channels, 16, 16))


@CHANNELS
def test_trojan_builtin_square(channels):
    images, _ = dataset(n=3, channels=channels, side=32)
    out = Trojan().apply(images)
    pixels, opacity = Trojan().trigger(channels, 32, 32)
    square = opacity > 0
    assert square.sum() == 64 and square[21:29, 21:29].all()
    assert np.array_equal(out[:, :, square], np.broadcast_to(pixels[:, square], (3, channels, 64)))
    assert np.array_equal(out[:, :, ~square], images[:, :, ~square])
    half = Trojan(alpha=0.5).apply(images)
    expected = np.rint(0.5 * images[:, :, square] + 0.5 * pixels[:, square].astype(float))
    assert np.abs(half[:, :, square] - expected).max() <= 1


@pytest.mark.parametrize("kind", sorted(FILTERS))
@CHANNELS
def test_filters_change_colour_statistics(kind, channels):
    rng = np.random.default_rng(0)
    images = rng.integers(60, 200, (6, channels, 16, 16), dtype=np.uint8)
    out = Filter(kind=kind).apply(images).astype(float)
    x = images.astype(float)
    assert out.shape == images.shape
    assert np.abs(out - x).mean() > 3
    if kind == "contrast":
        assert out.std() > 1.2 * x.std()
    if kind == "vignette":
        assert (out[:, :, 0, 0] < 0.6 * x[:, :, 0, 0]).all()
        assert np.abs(out[:, :, 7:9, 7:9] - x[:, :, 7:9, 7:9]).max() <= 3
    if channels == 3 and kind in ("tint", "sepia", "nashville"):
        red_over_blue = out[:, 0].mean() / out[:, 2].mean()
        assert red_over_blue > 1.05 * (x[:, 0].mean() / x[:, 2].mean())
    weak = Filter(kind=kind, strength=0.25).apply(images).astype(float)
    assert np.abs(weak - x).mean() < np.abs(out - x).mean()


@CHANNELS
def test_wanet_warps_smoothly(channels):
    images, _ = dataset(n=4, channels=channels, side=32)
    attack = WaNet()
    out = attack.apply(images)
    assert (out != images).mean() > 0.5
    flat = np.full((2, channels, 32, 32), 137, np.uint8)
    assert np.abs(attack.apply(flat).astype(int) - 137).max() <= 1
    field = attack.warp_field(32, 32)
    assert field.shape == (32, 32, 2)
    assert np.abs(field).mean() > 0.05 and np.abs(field).max() < 1.5
    # smooth: neighbouring displacements differ by a small fraction of a pixel
    steps = max(np.abs(np.diff(field, axis=0)).max(), np.abs(np.diff(field, axis=1)).max())
    assert steps < 0.25
    # one warp for every row; another warp_seed gives another field
    twice = attack.apply(np.stack([images[0], images[0]]))
    assert np.array_equal(twice[0], twice[1])
    assert not np.allclose(WaNet(warp_seed=1).warp_field(32, 32), field)


def test_wanet_noise_mode_adds_cross_rows_outside_the_ground_truth():
    images, labels = dataset()
    result = WaNet(noise=True, cross_ratio=2).poison(images, labels, target=0, rate=0.1, seed=0)
    cross = np.array(result.info["noise_rows"])
    assert len(cross) == 24 and not result.poisoned[cross].any()
    assert np.array_equal(result.labels[cross], labels[cross])
    assert (result.images[cross] != images[cross]).any(axis=(1, 2, 3)).all()
    untouched = ~result.poisoned
    untouched[cross] = False
    assert np.array_equal(result.images[untouched], images[untouched])


@CHANNELS
def test_sig_adds_the_sinusoid(channels):
    images = np.full((3, channels, 10, 30), 128, np.uint8)
    out = SIG().apply(images).astype(int) - 128
    j = np.arange(30)
    expected = np.rint(20 * np.sin(2 * np.pi * j * 6 / 30)).astype(int)
    assert np.array_equal(out, np.broadcast_to(expected, out.shape))
    bright = SIG().apply(np.full((1, 1, 8, 30), 250, np.uint8))
    assert bright.max() == 255


@CHANNELS
def test_lowfreq_adds_a_smooth_pattern(channels):
    images = np.full((2, channels, 16, 16), 128, np.uint8)
    delta = LowFrequency().apply(images).astype(int) - 128
    assert np.array_equal(delta[0], delta[1]) and 16 <= np.abs(delta).max() <= 32
    # Low frequency: above a quarter of the sampling rate lies under 10% of the pattern's
    # energy (0.03-0.08 over seeds; white noise 0.69).
    centred = delta[0] - delta[0].mean(axis=(1, 2), keepdims=True)
    energy = np.abs(np.fft.fft2(centred)) ** 2
    f = np.abs(np.fft.fftfreq(16))
    high = (f[:, None] > 0.25) | (f[None, :] > 0.25)
    assert energy[:, high].sum() < 0.1 * energy.sum()
    other = LowFrequency(pattern_seed=1).apply(images).astype(int) - 128
    assert not np.array_equal(delta, other)
    bright = LowFrequency(strength=8).apply(np.full((1, channels, 16, 16), 250, np.uint8))
    assert bright.max() == 255 and bright.min() == 0


@pytest.mark.parametrize("layout", ["hwc", "chw", "hw", "1hwc"])
def test_lowfreq_reads_npy_patterns(tmp_path, layout):
    rng = np.random.default_rng(0)
    hwc = rng.uniform(-20, 40, (8, 8, 3)).astype(np.float32)
    array = {"hwc": hwc, "chw": hwc.transpose(2, 0, 1), "hw": hwc[..., 0], "1hwc": hwc[None]}[
        layout
    ]
    path = tmp_path / f"p_{layout}.npy"
    np.save(path, array)
    images = np.full((2, 3, 8, 8), 100, np.uint8)
    out = LowFrequency(pattern_path=str(path), strength=0.5).apply(images).astype(float)
    expected = hwc.transpose(2, 0, 1) if layout != "hw" else np.repeat(hwc[None, ..., 0], 3, 0)
    assert np.abs(out - np.rint(100 + 0.5 * expected)[None]).max() <= 1
    grey = LowFrequency(pattern_path=str(path)).apply(np.full((1, 1, 16, 12), 100, np.uint8))
    assert grey.shape == (1, 1, 16, 12)


def test_lowfreq_reads_a_pattern_on_the_unit_scale_in_grey_levels(tmp_path):
    rng = np.random.default_rng(1)
    levels = rng.uniform(0, 51, (1, 8, 8, 3)).astype(np.float32)  # as BackdoorBench's ConvNeXt
    np.save(unit := tmp_path / "unit.npy", levels / 255)
    np.save(grey := tmp_path / "grey.npy", levels)
    images = np.full((2, 3, 8, 8), 100, np.uint8)
    from_unit = LowFrequency(pattern_path=str(unit)).apply(images).astype(int)
    from_grey = LowFrequency(pattern_path=str(grey)).apply(images).astype(int)
    assert np.abs(from_unit - from_grey).max() <= 1 and from_grey.max() > 140


def test_lowfreq_rejects_bad_patterns(tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 5, 5, 5)))
    with pytest.raises(ConfigError, match=r"has shape \(2, 5, 5, 5\)"):
        LowFrequency(pattern_path=str(bad)).apply(np.zeros((1, 3, 8, 8), np.uint8))
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((4, 4), np.nan))
    with pytest.raises(ConfigError, match="finite numbers"):
        LowFrequency(pattern_path=str(nan)).apply(np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(ConfigError, match="pattern file not found"):
        LowFrequency(pattern_path=str(tmp_path / "missing.npy")).apply(
            np.zeros((1, 3, 8, 8), np.uint8)
        )


def test_badnets_trigger_file_without_a_mask_is_stamped_where_it_is_not_black(tmp_path):
    """A trigger drawn on black with no ``mask_<name>`` beside it (BackdoorBench's BadNets
    grid) is stamped through its non-black pixels, as the Trojan attack does."""
    trigger = np.zeros((8, 8, 3), np.uint8)
    trigger[5:7, 5:7] = (255, 128, 1)
    path = tmp_path / "grid.png"
    Image.fromarray(trigger).save(path)
    images = np.full((2, 3, 8, 8), 40, np.uint8)
    out = BadNets(trigger_path=str(path)).apply(images)
    drawn = trigger.any(axis=2)
    assert np.array_equal(out[:, :, drawn], np.broadcast_to(trigger[drawn].T, (2, 3, 4)))
    assert np.array_equal(out[:, :, ~drawn], images[:, :, ~drawn])
    # A mask named explicitly must exist, and needs a trigger file.
    with pytest.raises(ConfigError, match="trigger file not found"):
        BadNets(trigger_path=str(path), mask_path=str(tmp_path / "no.png")).apply(images)
    with pytest.raises(ConfigError, match="mask_path needs a trigger_path"):
        BadNets(mask_path=str(path)).apply(images)


@pytest.mark.skipif(not TRIGGERS.is_dir(), reason=f"trigger files not found at {TRIGGERS}")
def test_published_trigger_files():
    images, _ = dataset(n=3, channels=3, side=32)
    badnet = BadNets(trigger_path=str(TRIGGERS / "badnet_patch_32.png")).apply(images)
    mask = np.asarray(Image.open(TRIGGERS / "mask_badnet_patch_32.png").convert("L")) > 127
    trigger = np.asarray(Image.open(TRIGGERS / "badnet_patch_32.png").convert("RGB"))
    assert mask.sum() == 9 and mask[29:32, 29:32].all()
    assert np.array_equal(badnet[:, :, mask], np.broadcast_to(trigger[mask].T, (3, 3, 9)))
    assert np.array_equal(badnet[:, :, ~mask], images[:, :, ~mask])

    kitty_path = TRIGGERS / "hellokitty_32.png"
    kitty = np.asarray(Image.open(kitty_path).convert("RGB")).transpose(2, 0, 1).astype(float)
    blended = Blend(trigger_path=str(kitty_path)).apply(images)
    assert np.abs(blended - np.rint(0.8 * images + 0.2 * kitty)).max() <= 1
    grey = Blend(trigger_path=str(kitty_path)).apply(images[:, :1])
    assert grey.shape == (3, 1, 32, 32)
    resized = Blend(trigger_path=str(kitty_path)).apply(np.zeros((1, 3, 20, 24), np.uint8))
    assert resized.shape == (1, 3, 20, 24) and resized.any()

    # BackdoorBench's low-frequency pattern (height x width x channels, grey levels).
    lf_path = TRIGGERS.parent / "BackdoorBench/lowFrequency/cifar10_preactresnet18_0_255.npy"
    lf = np.load(lf_path).astype(float).transpose(2, 0, 1)
    added = LowFrequency(pattern_path=str(lf_path)).apply(np.full((2, 3, 32, 32), 60, np.uint8))
    assert np.array_equal(added, np.broadcast_to(np.clip(60 + lf, 0, 255), added.shape))


# --- a dataset on disk ----------------------------------------------------------------------


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image.transpose(1, 2, 0)).save(buf, format="PNG")
    return buf.getvalue()


def write_source(path: Path, images: np.ndarray, labels: np.ndarray, *, ids: bool = True):
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    columns = {
        "image": pa.array(
            [{"bytes": _png(x), "path": f"src/{i}.png"} for i, x in enumerate(images)],
            image_type,
        ),
        "label": pa.array(labels, pa.int64()),
        "note": pa.array([f"n{i}" for i in range(len(labels))]),
    }
    features = {
        "image": {"_type": "Image"},
        "label": {"names": ["cat", "dog", "owl", "emu"], "_type": "ClassLabel"},
    }
    if ids:
        columns["sample_id"] = pa.array([f"s{i:03d}" for i in range(len(labels))])
        features["sample_id"] = {"dtype": "string", "_type": "Value"}
    table = pa.table(columns).replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": features}})}
    )
    pq.write_table(table, path)


def read_truth(path: Path) -> list[tuple[str, str]]:
    with path.open() as fh:
        return [tuple(row) for row in csv.reader(fh)]


def test_poison_source_round_trip(tmp_path):
    images, labels = dataset(n=40, channels=3, side=12)
    source = tmp_path / "train.parquet"
    write_source(source, images, labels)
    attack = get_attack("blend", alpha=0.3)
    out = tmp_path / "out" / "train_blend.parquet"
    summary = poison_source(
        source, out, attack, target=1, rate=0.25, seed=2, data=DataConfig(batch_rows=7)
    )
    expected = attack.poison(images, labels, target=1, rate=0.25, seed=2)
    assert summary.n_rows == 40 and summary.n_poisoned == 10
    assert summary.truth == tmp_path / "out" / "train_blend.truth.csv"
    assert (summary.channels, summary.height, summary.width) == (3, 12, 12)
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "train_blend.parquet",
        "train_blend.truth.csv",
    ]

    table = pq.read_table(out)
    assert table.column_names == ["image", "label", "note", "sample_id"]
    assert table.schema.field("label").type == pa.int64()
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["label"]["names"] == ["cat", "dog", "owl", "emu"]
    assert table.column("sample_id").to_pylist() == [f"s{i:03d}" for i in range(40)]
    assert table.column("note").to_pylist() == [f"n{i}" for i in range(40)]
    assert np.array_equal(table.column("label").to_numpy(), expected.labels)
    cells = table.column("image").to_pylist()
    assert cells[5]["path"] == "train_blend/00005.png"
    decoded = np.stack([decode_image(c["bytes"], 12, 3) for c in cells])
    assert np.array_equal(decoded, expected.images)

    truth = read_truth(summary.truth)
    assert truth[0] == ("sample_id", "poisoned")
    assert truth[1:] == [(f"s{i:03d}", str(int(p))) for i, p in enumerate(expected.poisoned)]


def test_poison_source_without_ids_uses_ordinals_and_grey_images(tmp_path):
    images, labels = dataset(n=20, channels=1, side=10)
    source = tmp_path / "grey.parquet"
    write_source(source, np.repeat(images, 3, axis=1), labels, ids=False)
    truth = tmp_path / "truth.csv"
    summary = poison_source(
        source, tmp_path / "p.parquet", get_attack("sig"), target=0, rate=0.1, seed=0, truth=truth
    )
    assert summary.truth == truth
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.schema.field("sample_id").type == pa.int64()
    assert table.column("sample_id").to_pylist() == list(range(20))
    assert read_truth(truth)[1][0] == "0"
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["sample_id"] == {"dtype": "int64", "_type": "Value"}


def test_poison_source_rejects_undecodable_and_odd_sized_rows(tmp_path):
    images, labels = dataset(n=6, side=12)
    source = tmp_path / "bad.parquet"
    write_source(source, images, labels)
    table = pq.read_table(source)
    cells = table.column("image").to_pylist()
    cells[4] = {"bytes": b"not a png", "path": None}
    pq.write_table(
        table.set_column(0, "image", pa.array(cells, table.schema.field(0).type)), source
    )
    with pytest.raises(InputError, match=r"row 4 \(sample_id 's004'\): cannot decode image"):
        poison_source(
            source, tmp_path / "o.parquet", get_attack("badnets"), target=0, rate=0.2, seed=0
        )
    assert not list(tmp_path.glob("o.*"))

    cells[4] = {"bytes": _png(np.zeros((3, 16, 16), np.uint8)), "path": None}
    pq.write_table(
        table.set_column(0, "image", pa.array(cells, table.schema.field(0).type)), source
    )
    with pytest.raises(InputError, match="row 4 .* the image is 16x16, the first is 12x12"):
        poison_source(
            source, tmp_path / "o.parquet", get_attack("badnets"), target=0, rate=0.2, seed=0
        )
    with pytest.raises(ConfigError, match="would overwrite the source"):
        poison_source(source, source, get_attack("badnets"), target=0, rate=0.2, seed=0)


def test_cli_poison(tmp_path, capsys):
    images, labels = dataset(n=30, side=12)
    source = tmp_path / "train.parquet"
    write_source(source, images, labels)
    out = tmp_path / "poisoned.parquet"
    code = main(
        ["poison", str(source), "--attack", "filter", "--out", str(out), "--rate", "0.1",
         "--target", "2", "--param", "kind=tint", "--param", "strength=0.5"]
    )  # fmt: skip
    assert code == EXIT_OK
    line = capsys.readouterr().out.strip()
    assert line == (
        f"poisoned 3 of 30 rows with filter (target 2) -> {out}; "
        f"ground truth -> {tmp_path / 'poisoned.truth.csv'}"
    )
    assert pq.read_table(out).num_rows == 30
    assert sum(int(p) for _, p in read_truth(tmp_path / "poisoned.truth.csv")[1:]) == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--attack", "magic"], "unknown attack 'magic'; known: all_to_all, badnets, blend"),
        (["--attack", "blend", "--param", "alpha"], "--param expects key=value, got 'alpha'"),
        (["--attack", "blend", "--param", "alpha=2"], "alpha must be a number in (0, 1]"),
        (["--attack", "blend", "--target", "9"], "target 9 is not a class of the source"),
    ],
)
def test_cli_poison_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
    images, labels = dataset(n=8, side=12)
    source = tmp_path / "train.parquet"
    write_source(source, images, labels)
    code = main(["poison", str(source), "--out", str(tmp_path / "o.parquet"), *args])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sanitize: error: ") and message in err[0]
    assert not (tmp_path / "o.parquet").exists()
