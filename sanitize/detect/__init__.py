"""Detectors of poisoned rows, one module each.

Importing this package registers every built-in detector; build one by name with
:func:`get_detector`. :func:`sanitize.decision.decide` combines their results.
"""

from sanitize.detect.activation_clustering import ActivationClustering
from sanitize.detect.adversarial_overlap import AdversarialOverlap
from sanitize.detect.base import (
    Detector,
    DetectorContext,
    DetectorResult,
    DetectorTraits,
    available_detectors,
    get_detector,
    register,
)
from sanitize.detect.cbd import CBD
from sanitize.detect.contrast_spectral import ContrastSpectral
from sanitize.detect.early_loss import EarlyLoss
from sanitize.detect.linf_activation import LinfActivation
from sanitize.detect.pixel_spectral import PixelSpectral
from sanitize.detect.shared_direction import SharedDirection
from sanitize.detect.spectral import SpectralSignature
from sanitize.detect.spectre import Spectre
from sanitize.detect.stamp import Stamp

__all__ = [
    "CBD",
    "ActivationClustering",
    "AdversarialOverlap",
    "ContrastSpectral",
    "Detector",
    "DetectorContext",
    "DetectorResult",
    "DetectorTraits",
    "EarlyLoss",
    "LinfActivation",
    "PixelSpectral",
    "SharedDirection",
    "SpectralSignature",
    "Spectre",
    "Stamp",
    "available_detectors",
    "get_detector",
    "register",
]
