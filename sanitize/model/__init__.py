"""Bootstrap model: architecture, training loop, feature extraction, checkpoints."""

from sanitize.model.checkpoint import load_checkpoint, save_checkpoint
from sanitize.model.device import resolve_device
from sanitize.model.embed import embed_rows
from sanitize.model.net import BootstrapNet, NetSpec
from sanitize.model.train import Normalizer, TrainResult, stratified_sample, train_model

__all__ = [
    "BootstrapNet",
    "NetSpec",
    "Normalizer",
    "TrainResult",
    "embed_rows",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "stratified_sample",
    "train_model",
]
