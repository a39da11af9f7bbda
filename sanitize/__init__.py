"""sanitize: find backdoor poisons in image-classification training sets.

The library has no Prefect dependency: ``flows/`` wraps these stages in Prefect tasks,
and the ``sanitize`` command runs that flow.
"""

import os as _os

# Idle OpenMP (torch) and OpenBLAS (numpy, scipy) threads spin by default, waiting for the
# next parallel region. On a CPU shared with other jobs (a training node, a CI runner) the
# spinning threads hold cores the working ones need: the sample run's bootstrap took
# 98 s instead of 10 s next to two busy processes on 2 cores, activation clustering 48 s
# instead of 0.07 s. Sleeping waits cost nothing measurable alone (see benchmarks/RESULTS.md)
# and leave the results unchanged. Both are read when the libraries load, so this has
# effect only if sanitize is imported before numpy and torch; a user's setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from sanitize.api import SanitizeResult, sanitize_dataset
from sanitize.config import BootstrapConfig, DataConfig, DecisionConfig, SanitizeConfig
from sanitize.errors import ConfigError, InputError, SanitizeError
from sanitize.torch_data import ImageParquetDataset, weighted_sampler

__all__ = [
    "BootstrapConfig",
    "ConfigError",
    "DataConfig",
    "DecisionConfig",
    "ImageParquetDataset",
    "InputError",
    "SanitizeConfig",
    "SanitizeError",
    "SanitizeResult",
    "sanitize_dataset",
    "weighted_sampler",
]

try:
    from importlib.metadata import version as _version

    __version__ = _version("sanitize")
except Exception:  # running from a source tree that is not installed
    __version__ = "0.0.0+local"
