"""sanitize: find backdoor poisons in image-classification training sets.

The library has no Prefect dependency: ``flows/`` wraps these stages in Prefect tasks,
and the ``sanitize`` command runs that flow.
"""

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
