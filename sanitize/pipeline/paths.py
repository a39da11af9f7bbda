"""Where a run keeps its files: final outputs in ``out``, stage outputs in ``out/.work``.

Stages exchange files, never arrays, so each stage can run in a separate task, process
or machine, and a later stage only needs the paths below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sanitize.data.schema import CLASSES_FILE, IMAGES_FILE, ROWS_FILE
from sanitize.errors import ConfigError

CLEAN_FILE = "clean.parquet"
QUARANTINE_FILE = "quarantine.parquet"
SCORES_FILE = "scores.parquet"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
DATASET_CARD = "README.md"
OUTPUT_FILES = (
    CLEAN_FILE,
    QUARANTINE_FILE,
    SCORES_FILE,
    DATASET_CARD,
    REPORT_HTML,
    REPORT_JSON,
)


def check_locations(source: str | os.PathLike[str], out: str | os.PathLike[str]) -> None:
    """Refuse an empty source or output path, and an output directory that is, or lies
    inside, a directory source (its outputs would become part of the source).

    Raises
    ------
    ConfigError
        With a one-line message naming the path.
    """
    source, out = os.fspath(source), os.fspath(out)
    if not source.strip():
        raise ConfigError(
            "empty source path: name the dataset (it would mean the current directory)"
        )
    if not out.strip():
        raise ConfigError("empty output directory: name one (it would mean the current directory)")
    local = source.removeprefix("file://") if "::" not in source else source
    if "://" in local or not Path(local).is_dir():
        return  # a remote source or a file: the outputs cannot land in it
    root, target = Path(local).resolve(), Path(out).resolve()
    if target == root:
        raise ConfigError(
            f"output directory {out} is the source directory {source}; choose another"
        )
    if root in target.parents:
        raise ConfigError(
            f"output directory {out} is inside the source directory {source}; choose one outside it"
        )


@dataclass(frozen=True)
class RunPaths:
    """Paths of one run, all derived from the output directory."""

    out: Path

    @classmethod
    def at(cls, out: str | Path) -> RunPaths:
        return cls(Path(out).resolve())

    @property
    def work(self) -> Path:
        return self.out / ".work"

    def prepare(self) -> RunPaths:
        self.work.mkdir(parents=True, exist_ok=True)
        return self

    # read stage
    @property
    def images(self) -> Path:
        return self.work / IMAGES_FILE

    @property
    def rows(self) -> Path:
        return self.work / ROWS_FILE

    @property
    def classes(self) -> Path:
        return self.work / CLASSES_FILE

    # model stages
    @property
    def model_bootstrap(self) -> Path:
        return self.work / "model_bootstrap.safetensors"

    @property
    def loss_history(self) -> Path:
        return self.work / "loss_history.npy"

    @property
    def features(self) -> Path:
        return self.work / "features.npy"

    @property
    def loss_bootstrap(self) -> Path:
        return self.work / "loss_bootstrap.npy"

    @property
    def channel_norms(self) -> Path:
        """Per-channel l_1 / l_2 / l_inf norms of the last conv maps, (rows, 3, channels)."""
        return self.work / "channel_norms.npy"

    def shard_features(self, shard: int) -> Path:
        """Features of one embedding shard (its source rows only); merged into ``features``."""
        return self.work / f"features_shard{shard}.npy"

    def shard_channel_norms(self, shard: int) -> Path:
        return self.work / f"channel_norms_shard{shard}.npy"

    def shard_loss(self, shard: int) -> Path:
        return self.work / f"loss_bootstrap_shard{shard}.npy"

    @property
    def model_clean(self) -> Path:
        return self.work / "model_clean.safetensors"

    @property
    def loss_clean(self) -> Path:
        return self.work / "loss_clean.npy"

    @property
    def train_rows(self) -> Path:
        return self.work / "train_rows.npy"

    # detection and decision
    @property
    def class_stats(self) -> Path:
        """Per-class means and top directions (see ``sanitize.detect.class_stats``)."""
        return self.work / "class_stats.npz"

    @property
    def class_projections(self) -> Path:
        return self.work / "class_projections.npy"

    def detector_scores(self, name: str) -> Path:
        return self.work / f"detector_{name}.npz"

    def detector_info(self, name: str) -> Path:
        return self.work / f"detector_{name}.json"

    @property
    def decision(self) -> Path:
        return self.work / "decision.parquet"

    @property
    def decision_info(self) -> Path:
        return self.work / "decision.json"

    # final outputs
    def output(self, name: str) -> Path:
        return self.out / name
