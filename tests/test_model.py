import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from sanitize.config import SanitizeConfig
from sanitize.errors import ConfigError, InputError
from sanitize.model import (
    NetSpec,
    embed_rows,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
    stratified_sample,
    train_model,
)
from sanitize.model.device import autocast, memory_format
from sanitize.model.train import Normalizer
from sanitize.pipeline.paths import RunPaths
from sanitize.pipeline.stages import bootstrap_stage, embed_stage, read_stage
from tests.conftest import SAMPLE_SOURCE, SAMPLE_TRUTH

CPU = torch.device("cpu")


def _toy(n=200, seed=0):
    rng = np.random.default_rng(seed)
    images = (rng.random((n, 1, 12, 12)) * 255).astype(np.uint8)
    labels = rng.integers(0, 3, n)
    return images, labels


def test_device_selection_on_cpu():
    assert resolve_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
    # The CPU path runs in fp32 and contiguous memory: autocast is a no-op there.
    with autocast(CPU):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    assert memory_format(CPU) == torch.contiguous_format


def test_stratified_sample_keeps_class_shares():
    labels = np.array([0] * 900 + [1] * 100)
    rows = stratified_sample(labels, np.arange(1000), cap=200, seed=0)
    assert len(rows) == 200
    assert np.sum(labels[rows] == 1) == 20
    assert np.array_equal(rows, stratified_sample(labels, np.arange(1000), cap=200, seed=0))


def test_training_is_seeded_and_records_losses():
    images, labels = _toy()
    rows = np.arange(150)
    kwargs = dict(epochs=2, batch_size=32, lr=1e-3, seed=7, device=CPU)
    a = train_model(images, labels, rows, NetSpec(1, 3, width=4), **kwargs)
    b = train_model(images, labels, rows, NetSpec(1, 3, width=4), **kwargs)
    assert a.loss_history.shape == (200, 2)
    assert np.isfinite(a.loss_history[rows]).all()
    assert np.isnan(a.loss_history[150:]).all()  # rows not trained on
    np.testing.assert_allclose(a.loss_history[rows], b.loss_history[rows], rtol=1e-5)


def test_batch_norm_statistics_are_recomputed_for_the_final_weights():
    images, labels = _toy()
    rows = np.arange(192)  # six full batches of 32
    kwargs = dict(epochs=2, batch_size=32, lr=1e-2, seed=0, device=CPU)

    def first_norm(precise_bn: bool) -> tuple[torch.nn.Module, torch.nn.BatchNorm2d]:
        model = train_model(
            images, labels, rows, NetSpec(1, 3, width=4), precise_bn=precise_bn, **kwargs
        ).model
        return model, next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))

    model, first = first_norm(True)
    seen: list[torch.Tensor] = []
    hook = first.register_forward_hook(lambda mod, inputs, out: seen.append(inputs[0]))
    normalizer = Normalizer.fit(images, rows)
    with torch.no_grad():
        model.eval()(normalizer.apply(torch.from_numpy(images[rows])))
    hook.remove()
    # Six equal batches: the average of their means is the mean over all training rows.
    expected = seen[0].mean(dim=(0, 2, 3))
    torch.testing.assert_close(first.running_mean, expected, rtol=1e-4, atol=1e-5)
    assert not model.training and first.momentum == 0.1
    # Off (the default), the running statistics are the training-time moving averages.
    _, stale = first_norm(False)
    assert not torch.allclose(stale.running_mean, expected, rtol=1e-4, atol=1e-5)


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    images, labels = _toy()
    result = train_model(
        images,
        labels,
        np.arange(200),
        NetSpec(1, 3, width=4),
        epochs=1,
        batch_size=64,
        lr=1e-3,
        seed=0,
        device=CPU,
    )
    path = tmp_path / "m.safetensors"
    save_checkpoint(result.model, result.normalizer, path)
    model, normalizer = load_checkpoint(path, spec=NetSpec(1, 3, width=4), device=CPU)
    f1, l1 = embed_rows(result.model, result.normalizer, images, labels, np.arange(200), device=CPU)
    f2, l2 = embed_rows(model, normalizer, images, labels, np.arange(200), device=CPU)
    np.testing.assert_allclose(f1, f2, atol=1e-6)
    # A torch.save state dict loads with weights_only=True.
    pt = tmp_path / "m.pt"
    torch.save(result.model.state_dict(), pt)
    load_checkpoint(pt, spec=NetSpec(1, 3, width=4), device=CPU)
    with pytest.raises(InputError, match="does not fit the network"):
        load_checkpoint(path, spec=NetSpec(1, 5, width=4), device=CPU)
    with pytest.raises(InputError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.safetensors", spec=NetSpec(1, 3), device=CPU)


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(InputError, match="cannot read checkpoint"):
        load_checkpoint(path, spec=NetSpec(1, 3), device=CPU)


@pytest.mark.slow
def test_bootstrap_learns_the_backdoor_on_sample_data(tmp_path):
    """The default recipe learns the trigger: poisons' loss falls far below clean rows'."""
    config = SanitizeConfig()
    paths = RunPaths.at(tmp_path / "out")
    read_stage(str(SAMPLE_SOURCE), config, paths)
    bootstrap_stage(config, paths)
    embed_stage(config, paths)
    ids = pq.read_table(paths.rows, columns=["sample_id"]).column("sample_id").to_pylist()
    truth = pacsv.read_csv(SAMPLE_TRUTH).to_pydict()
    poisoned_ids = {i for i, p in zip(truth["sample_id"], truth["poisoned"], strict=True) if p}
    poisoned = np.array([i in poisoned_ids for i in ids])
    loss = np.load(paths.loss_bootstrap)
    assert np.median(loss[poisoned]) < 0.25 * np.median(loss[~poisoned])
    # Training stopped early, once the set was fit, well inside the step budget.
    assert np.load(paths.loss_history).shape[1] < 10
