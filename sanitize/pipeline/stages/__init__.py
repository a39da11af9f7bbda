"""The pipeline's stages, each a function from files to files.

Every stage reads what earlier stages wrote under :class:`~sanitize.pipeline.paths.RunPaths` and
returns a small JSON-able dict (counts, seconds), so the same functions serve the plain
Python entry point (:func:`sanitize.sanitize_dataset`) and the Prefect tasks in ``flows/``
without moving arrays between tasks.
"""

from sanitize.pipeline.stages.deciding import decide_stage
from sanitize.pipeline.stages.detecting import class_stats_stage, detect_stage, shares_class_stats
from sanitize.pipeline.stages.exporting import export_stage
from sanitize.pipeline.stages.reading import read_stage
from sanitize.pipeline.stages.training import (
    bootstrap_stage,
    clean_model_stage,
    embed_shard_stage,
    embed_stage,
    merge_embed_shards_stage,
)

__all__ = [
    "bootstrap_stage",
    "class_stats_stage",
    "clean_model_stage",
    "decide_stage",
    "detect_stage",
    "embed_shard_stage",
    "embed_stage",
    "export_stage",
    "merge_embed_shards_stage",
    "read_stage",
    "shares_class_stats",
]
