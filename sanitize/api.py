"""``sanitize_dataset``: the whole pipeline in-process, for use as a pre-training hook."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from sanitize.config import SanitizeConfig
from sanitize.data.schema import issue_column
from sanitize.pipeline.export import remove_stale_staged
from sanitize.pipeline.lock import run_lock
from sanitize.pipeline.paths import (
    CLEAN_FILE,
    OUTPUT_FILES,
    QUARANTINE_FILE,
    REPORT_JSON,
    SCORES_FILE,
    RunPaths,
    check_locations,
)
from sanitize.pipeline.resume import plan_run, run_stage
from sanitize.pipeline.threads import stage_threads

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class SanitizeResult:
    """What a run produced.

    Attributes
    ----------
    out : Path
        The output directory.
    counts : dict
        ``rows``, ``kept``, ``removed`` and the other counts of ``report.json``.
    report : dict
        The whole ``report.json``.
    """

    out: Path
    counts: dict[str, Any]
    report: dict[str, Any]

    @property
    def clean_path(self) -> Path:
        return self.out / CLEAN_FILE

    @property
    def quarantine_path(self) -> Path:
        return self.out / QUARANTINE_FILE

    @property
    def scores_path(self) -> Path:
        return self.out / SCORES_FILE

    @property
    def report_path(self) -> Path:
        return self.out / REPORT_JSON

    @classmethod
    def load(cls, out: str | Path) -> SanitizeResult:
        """Read the result of a finished run from its output directory."""
        out = Path(out)
        report = json.loads((out / REPORT_JSON).read_text())
        return cls(out=out, counts=report["counts"], report=report)

    @property
    def verdict(self) -> dict[str, Any]:
        """``poison_suspected``, ``suspect_classes`` and a one-line ``text``."""
        return self.report["verdict"]

    def __str__(self) -> str:
        c = self.counts
        return (
            f"{c['rows']:,} rows: kept {c['kept']:,}, removed {c['removed']:,} "
            f"({100 * c['removed_fraction']:.1f}%); {self.verdict['text']}; outputs in {self.out}"
        )

    def issues(self) -> pd.DataFrame:
        """Every row's findings, as cleanlab's ``Datalab.get_issues()`` gives them.

        Returns
        -------
        pandas.DataFrame of shape (n_rows, ...)
            ``sample_id``, ``label``, per detector ``is_<detector>_issue`` (its own flag) and
            ``score_<detector>`` (in [0, 1]), then ``poison_score``, ``sample_weight``,
            ``flagged`` (removed) and ``reasons``; in source order.
        """
        scores = pq.read_table(self.scores_path)
        keep = [name for name in scores.column_names if not name.startswith("embedding_")]
        return scores.select(keep).to_pandas()

    def summary(self) -> pd.DataFrame:
        """Rows, removals and each detector's own flags per class.

        Returns
        -------
        pandas.DataFrame of shape (n_classes, 4 + n_detectors)
            Indexed by label value: ``name``, ``rows``, ``removed``, ``removed_fraction``,
            then one column a detector with the rows it flagged in that class.
        """
        import pandas as pd

        issues = self.issues()
        per_class = pd.DataFrame.from_dict(self.report["per_class"], orient="index")
        # Keys as report.json writes them: str() of each label value (None for a missing one).
        labels = pq.read_table(self.scores_path, columns=["label"]).column("label").to_pylist()
        flags = issues.groupby([str(label) for label in labels])[
            [issue_column(name) for name in self.report["per_detector"]]
        ].sum()
        flags.columns = list(self.report["per_detector"])
        table = per_class.join(flags).fillna(0)
        table.index.name = "label"
        table = table.sort_index(key=lambda labels: pd.to_numeric(labels, errors="coerce"))
        return table.astype({name: int for name in flags.columns})


def run_stages(source: str, config: SanitizeConfig, paths: RunPaths) -> dict[str, dict]:
    """Run the plan's stages in order in this process; returns each stage's result by name.

    A stage that an earlier run into ``paths.out`` finished with the same inputs is reused
    (see :mod:`sanitize.pipeline.resume`). The caller holds the run lock.
    """
    threads = stage_threads()
    plan, keys = plan_run(source, config, threads)
    results: dict[str, dict] = {}
    for stage in plan:
        inputs = {name: results[name] for name in stage.needs}
        results[stage.name] = run_stage(
            stage, source, config, paths, keys[stage.name], inputs, threads
        )
    return results


def sanitize_dataset(
    source: str | Path,
    out: str | Path,
    config: SanitizeConfig | None = None,
    *,
    keep_work: bool = False,
) -> SanitizeResult:
    """Find likely poisons in ``source`` and write the filtered dataset to ``out``.

    ``source`` is never modified. ``out`` receives ``clean.parquet``,
    ``quarantine.parquet``, ``scores.parquet`` and ``report.json`` (see DESIGN.md,
    "Outputs"). With ``keep_work``, a later run into ``out`` with the same source and
    config reuses the stage files.

    Parameters
    ----------
    source : str or Path
        HF-layout Parquet file or directory, image folder, or ``.npz``; local path or fsspec URI.
    out : str or Path
        Output directory (the four output files, see above).
    config : SanitizeConfig, optional
        Defaults to ``SanitizeConfig()``.
    keep_work : bool, default=False
        Keep the stage files (decoded images, features, models) under ``out/.work``.

    Raises
    ------
    ConfigError
        ``source`` or ``out`` is empty, or ``out`` is, or lies inside, a directory source.
    RunLockedError
        Another run is writing into ``out`` (``out/.sanitize.lock``).

    Returns
    -------
    SanitizeResult

    Examples
    --------
    >>> result = sanitize_dataset("sample_data/digits_poisoned.parquet", "out")  # doctest: +SKIP
    >>> result.counts["removed"]  # doctest: +SKIP
    """
    config = config or SanitizeConfig()
    check_locations(source, out)
    paths = RunPaths.at(out)
    with run_lock(paths.out):
        remove_stale_staged(paths.out)
        run_stages(str(source), config, paths)
        if not keep_work:
            shutil.rmtree(paths.work, ignore_errors=True)
    return SanitizeResult.load(paths.out)


__all__ = ["OUTPUT_FILES", "SanitizeResult", "run_stages", "sanitize_dataset"]
