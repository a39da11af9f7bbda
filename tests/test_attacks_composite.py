"""Composite attacks: all-to-all and multi-target labels, any trigger clean-label; the rows,
labels, pixels and ground truth of each, in memory and through `poison_source`."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from sanitize.attacks import (
    AllToAll,
    BadNets,
    Blend,
    CleanLabel,
    MultiTarget,
    attack_class,
    get_attack,
    poison_source,
)
from sanitize.config import DataConfig
from sanitize.data import decode_image
from sanitize.errors import ConfigError, InputError
from sanitize.evaluate import read_truth
from tests.test_attacks import dataset, write_source

TWO_TRIGGERS = (("badnets", (("size", 3),), 1), ("blend", {"alpha": 0.3}, 3))


# --- all-to-all ------------------------------------------------------------------------------


def test_all_to_all_relabels_each_class_to_the_next():
    images, labels = dataset(n=200, classes=4)
    attack = get_attack("all_to_all", attack="badnets", n_classes=4)
    result = attack.poison(images, labels, target=0, rate=0.2, seed=0)
    poisoned = result.poisoned
    assert poisoned.sum() == 40 and len(set(labels[poisoned].tolist())) == 4
    assert np.array_equal(result.labels[poisoned], (labels[poisoned] + 1) % 4)
    assert np.array_equal(result.labels[~poisoned], labels[~poisoned])
    assert np.array_equal(result.images[poisoned], BadNets().apply(images[poisoned]))
    assert np.array_equal(result.images[~poisoned], images[~poisoned])
    assert result.info["targets"] is None and not attack.clean_label


def test_all_to_all_test_set_triggers_every_row():
    images, labels = dataset(classes=4)
    attack = AllToAll(attack="blend", params=(("alpha", 0.3),), n_classes=5)
    test_images, test_labels = attack.triggered_test_set(images, labels, target=2)
    assert np.array_equal(test_labels, (labels + 1) % 5)
    assert np.array_equal(test_images, Blend(alpha=0.3).apply(images))


def test_all_to_all_checks_its_classes():
    images, labels = dataset(classes=4)
    with pytest.raises(InputError, match="label 3 >= n_classes 3"):
        AllToAll(n_classes=3).poison(images, labels, target=0, rate=0.1, seed=0)
    with pytest.raises(ConfigError, match="n_classes must be an integer >= 2"):
        get_attack("all_to_all", n_classes=1)


# --- clean-label ------------------------------------------------------------------------------


def test_clean_label_patch_poisons_target_rows_and_keeps_labels():
    images, labels = dataset()
    attack = get_attack("clean_label", attack="badnets", params={"size": 4})
    result = attack.poison(images, labels, target=2, rate=0.1, seed=0)
    poisoned = result.poisoned
    assert poisoned.sum() == 12 and (labels[poisoned] == 2).all()
    assert np.array_equal(result.labels, labels)
    assert np.array_equal(result.images[poisoned], BadNets(size=4).apply(images[poisoned]))
    assert attack_class("clean_label").clean_label and result.info["clean_label"]
    test_images, test_labels = attack.triggered_test_set(images, labels, target=2)
    assert (test_labels == 2).all() and len(test_images) == (labels != 2).sum()


def test_clean_label_is_capped_at_the_target_class():
    images, labels = dataset()
    result = CleanLabel(attack="blend").poison(images, labels, target=0, rate=0.9, seed=0)
    assert result.poisoned.sum() == (labels == 0).sum() and "note" in result.info


@pytest.mark.parametrize("inner", ["sig", "none", "clean_label", "all_to_all"])
def test_composites_take_one_dirty_label_trigger(inner):
    with pytest.raises(ConfigError, match=f"{inner!r} is not a dirty-label attack"):
        get_attack("clean_label", attack=inner)
    with pytest.raises(ConfigError, match=f"{inner!r} is not a dirty-label attack"):
        get_attack("multi_target", parts=(("badnets", (), 0), (inner, (), 1)))


def test_composite_params_are_checked():
    with pytest.raises(ConfigError, match=r"blend: alpha must be a number in \(0, 1\]"):
        get_attack("all_to_all", attack="blend", params={"alpha": 2})
    with pytest.raises(ConfigError, match="must be \\(name, value\\) pairs or a dict"):
        get_attack("clean_label", params=5)
    with pytest.raises(ConfigError, match="unknown attack 'x'"):
        get_attack("clean_label", attack="x")


# --- multi-target -----------------------------------------------------------------------------


def test_multi_target_splits_rows_between_its_triggers():
    images, labels = dataset(n=200, classes=4)
    attack = get_attack("multi_target", parts=TWO_TRIGGERS)
    result = attack.poison(images, labels, target=0, rate=0.15, seed=0)
    plan = attack.plan(labels, target=0, rate=0.15, seed=0)
    assert result.poisoned.sum() == 30 and np.array_equal(plan.poisoned, result.poisoned)
    triggers = (BadNets(size=3), Blend(alpha=0.3))
    for index, (trigger, target) in enumerate(zip(triggers, (1, 3), strict=True)):
        rows = plan.part == index
        assert rows.sum() == 15 and (labels[rows] != target).all()
        assert (result.labels[rows] == target).all()
        assert np.array_equal(result.images[rows], trigger.apply(images[rows]))
    assert np.array_equal(result.images[~result.poisoned], images[~result.poisoned])
    assert result.info["targets"] == (1, 3) and result.info["per_target"] == {1: 15, 3: 15}


def test_multi_target_test_set_holds_each_trigger_into_its_target():
    images, labels = dataset(classes=4)
    attack = MultiTarget(parts=TWO_TRIGGERS)
    test_images, test_labels = attack.triggered_test_set(images, labels, target=0)
    first = (labels != 1).sum()
    assert (test_labels[:first] == 1).all() and (test_labels[first:] == 3).all()
    assert np.array_equal(test_images[:first], BadNets(size=3).apply(images[labels != 1]))
    assert np.array_equal(test_images[first:], Blend(alpha=0.3).apply(images[labels != 3]))


def test_multi_target_batches_equal_one_pass_with_per_row_triggers():
    images, labels = dataset(classes=4)
    attack = MultiTarget(parts=(("badnets", {"position": "random"}, 0), ("wanet", (), 2)))
    result = attack.poison(images, labels, target=0, rate=0.2, seed=5)
    plan = attack.plan(labels, target=0, rate=0.2, seed=5)
    pieces = [attack.execute(images[s : s + 9], plan, start=s) for s in range(0, len(images), 9)]
    assert np.array_equal(np.concatenate(pieces), result.images)


def test_multi_target_checks_its_parts():
    with pytest.raises(ConfigError, match="targets must differ"):
        get_attack("multi_target", parts=(("badnets", (), 1), ("blend", (), 1)))
    with pytest.raises(ConfigError, match="two or more"):
        get_attack("multi_target", parts=(("badnets", (), 1),))
    with pytest.raises(ConfigError, match=r"each part is \(attack, params, target\)"):
        get_attack("multi_target", parts=(("badnets", 1), ("blend", (), 2)))
    images, labels = dataset(n=10)
    plan = MultiTarget().plan(labels, target=0, rate=0.2, seed=0)
    plan.part = None
    with pytest.raises(InputError, match="which part poisons each row"):
        MultiTarget().execute(images, plan)


# --- on disk ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attack",
    [MultiTarget(parts=TWO_TRIGGERS), AllToAll(attack="trojan", n_classes=4)],
    ids=["multi_target", "all_to_all"],
)
def test_poison_source_writes_composite_labels_and_truth(tmp_path, attack):
    images, labels = dataset(n=40, side=12, classes=4)
    source = tmp_path / "train.parquet"
    write_source(source, images, labels)
    out = tmp_path / "poisoned.parquet"
    summary = poison_source(
        source, out, attack, target=0, rate=0.25, seed=3, data=DataConfig(batch_rows=7)
    )
    expected = attack.poison(images, labels, target=0, rate=0.25, seed=3)
    table = pq.read_table(out)
    assert np.array_equal(table.column("label").to_numpy(), expected.labels)
    decoded = np.stack([decode_image(c["bytes"], 12, 3) for c in table.column("image").to_pylist()])
    assert np.array_equal(decoded, expected.images)
    truth = read_truth(summary.truth)
    assert [truth[f"s{i:03d}"] for i in range(40)] == expected.poisoned.tolist()
    assert summary.n_poisoned == 10
