"""The run plan: which stages a config runs, in which order, and what each depends on.

One list, built from the config, is the only place the stage order lives: the in-process
runner (:func:`sanitize.api.run_stages`) walks it in order, the Prefect flow
(``flows/sanitize_flow.py``) submits one task a stage and waits on ``needs``, and the resume
keys (:mod:`sanitize.pipeline.resume`) chain along ``needs``. A stage must declare in
``config_fields`` every top-level config field its function reads (``seed``, ``data``,
``bootstrap``, ...; ``detector`` stands for that detector's own parameters, ``*`` for the
whole config): the fields key
its saved outputs, so a field left out would let a later run reuse stale files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sanitize.config import SanitizeConfig
from sanitize.detect import get_detector
from sanitize.pipeline import stages
from sanitize.pipeline.paths import OUTPUT_FILES, RunPaths

StageResults = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    """One step of a run: a function of files to files, with its dependencies.

    Attributes
    ----------
    name : str
        Unique in a plan; the key of its result in ``report.json``'s ``stage_timings`` and
        the name of its Prefect task (``read``, ``detect_spectral``, ...).
    kind : str
        Which function of :mod:`sanitize.pipeline.stages` runs it.
    needs : tuple of str
        Stages whose files or results this one reads; they come earlier in the plan.
    config_fields : tuple of str
        Top-level config fields the stage reads (see the module docstring).
    detector : str or None
        The detector a ``detect`` stage runs.
    shard, rows : int or None, tuple of (int, int) or None
        Index and source rows ``[start, stop)`` of an ``embed_shard`` stage.
    shards : tuple of (int, int) pairs
        The shards' row ranges, in order, for the ``embed_merge`` stage.
    """

    name: str
    kind: str
    needs: tuple[str, ...]
    config_fields: tuple[str, ...]
    detector: str | None = None
    shard: int | None = None
    rows: tuple[int, int] | None = None
    shards: tuple[tuple[int, int], ...] = ()

    def run(
        self, source: str, config: SanitizeConfig, paths: RunPaths, inputs: StageResults
    ) -> dict[str, Any]:
        """Run the stage; ``inputs`` holds the results of ``needs`` by name."""
        return _RUNNERS[self.kind](self, source, config, paths, inputs)

    def outputs(self, paths: RunPaths) -> tuple[Path, ...]:
        """The files the stage writes (all of them exist once it returns)."""
        return _OUTPUTS[self.kind](self, paths)

    def config_part(self, config: SanitizeConfig) -> dict[str, Any]:
        """The part of ``config`` that the stage's outputs depend on, as plain data."""
        whole = config.to_dict()
        if "*" in self.config_fields:
            return whole
        part = {name: whole[name] for name in self.config_fields if name != "detector"}
        if "detector" in self.config_fields:
            part["detector"] = config.params_for(self.detector or "")
        return part


_RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "read": lambda st, source, cfg, paths, inputs: stages.read_stage(source, cfg, paths),
    "bootstrap": lambda st, source, cfg, paths, inputs: stages.bootstrap_stage(cfg, paths),
    "embed": lambda st, source, cfg, paths, inputs: stages.embed_stage(cfg, paths),
    "embed_shard": lambda st, source, cfg, paths, inputs: stages.embed_shard_stage(
        cfg, paths, st.shard, st.rows
    ),
    "embed_merge": lambda st, source, cfg, paths, inputs: stages.merge_embed_shards_stage(
        paths, list(st.shards), [inputs[name] for name in st.needs]
    ),
    "clean_model": lambda st, source, cfg, paths, inputs: stages.clean_model_stage(cfg, paths),
    "class_stats": lambda st, source, cfg, paths, inputs: stages.class_stats_stage(paths),
    "detect": lambda st, source, cfg, paths, inputs: stages.detect_stage(st.detector, cfg, paths),
    "decide": lambda st, source, cfg, paths, inputs: stages.decide_stage(cfg, paths),
    "export": lambda st, source, cfg, paths, inputs: stages.export_stage(
        source, cfg, paths, dict(inputs)
    ),
}

_OUTPUTS: dict[str, Callable[[Stage, RunPaths], tuple[Path, ...]]] = {
    "read": lambda st, p: (p.images, p.rows, p.classes),
    "bootstrap": lambda st, p: (p.train_rows, p.model_bootstrap, p.loss_history),
    "embed": lambda st, p: (p.features, p.channel_norms, p.loss_bootstrap),
    "embed_shard": lambda st, p: (
        p.shard_features(st.shard),
        p.shard_channel_norms(st.shard),
        p.shard_loss(st.shard),
    ),
    "embed_merge": lambda st, p: (p.features, p.channel_norms, p.loss_bootstrap),
    "clean_model": lambda st, p: (p.model_clean, p.loss_clean),
    "class_stats": lambda st, p: (p.class_stats, p.class_projections),
    "detect": lambda st, p: (p.detector_scores(st.detector), p.detector_info(st.detector)),
    "decide": lambda st, p: (p.decision, p.decision_info),
    "export": lambda st, p: tuple(p.output(name) for name in OUTPUT_FILES),
}


# Rule: a shard is a task's worth of embedding (a minute or so on a CPU worker, seconds on
# a GPU) whose features (64 Mi floats at 256 a row) fit a worker's memory; a multiple of
# the embedding batch (512) keeps the batches the same as one unsharded pass.
EMBED_SHARD_ROWS = 65_536


def build_plan(
    config: SanitizeConfig, n_rows: int, *, shard_rows: int | None = None
) -> tuple[Stage, ...]:
    """The stages ``config`` runs on a source of ``n_rows`` rows, each after its ``needs``.

    read -> bootstrap -> embed -> clean_model (only with the ``cbd`` detector) ->
    class_stats (only with a detector that shares them) -> one ``detect_<name>`` per
    detector, independent of each other -> decide -> export. Above
    ``shard_rows`` rows (default :data:`EMBED_SHARD_ROWS`), embed is ``embed_<i>`` stages
    over consecutive row ranges, independent of each other, then ``embed`` merging them.
    Every detector waits for the clean model when there is one: the detector context hands
    each of them f_C's losses.
    """
    plan = [
        Stage("read", "read", (), ("data",)),
        Stage("bootstrap", "bootstrap", ("read",), ("bootstrap", "seed")),
    ]
    shard_rows = shard_rows or EMBED_SHARD_ROWS
    if n_rows <= shard_rows:
        plan.append(Stage("embed", "embed", ("bootstrap",), ("bootstrap",)))
    else:
        ranges = tuple((lo, min(lo + shard_rows, n_rows)) for lo in range(0, n_rows, shard_rows))
        shards = [
            Stage(f"embed_{i}", "embed_shard", ("bootstrap",), ("bootstrap",), shard=i, rows=rows)
            for i, rows in enumerate(ranges)
        ]
        plan += shards
        names = tuple(s.name for s in shards)
        plan.append(Stage("embed", "embed_merge", names, ("bootstrap",), shards=ranges))
    before_detect = ("embed",)
    if "cbd" in config.detectors:
        plan.append(Stage("clean_model", "clean_model", ("embed",), ("bootstrap", "seed")))
        before_detect = ("embed", "clean_model")
    sharing = [name for name in config.detectors if get_detector(name).shares_class_stats]
    if sharing:
        plan.append(Stage("class_stats", "class_stats", ("embed",), ()))
    detects = [
        Stage(
            f"detect_{name}",
            "detect",
            before_detect + (("class_stats",) if name in sharing else ()),
            ("seed", "detector"),
            detector=name,
        )
        for name in config.detectors
    ]
    plan += detects
    # decide also reads the class statistics' projections, when there are any, to refine.
    plan.append(
        Stage(
            "decide",
            "decide",
            tuple(s.name for s in detects) + (("class_stats",) if sharing else ()),
            ("detectors", "decision", "seed"),
        )
    )
    # export writes every stage's timings and the whole config into report.json.
    plan.append(Stage("export", "export", tuple(s.name for s in plan), ("*",)))
    return tuple(plan)
