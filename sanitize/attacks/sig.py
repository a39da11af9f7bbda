"""SIG: a clean-label backdoor whose trigger is a faint horizontal sinusoid.

References
----------
.. [1] M. Barni, K. Kallas and B. Tondi, "A New Backdoor Attack in CNNs by Training Set
   Corruption Without Label Poisoning", ICIP 2019. The sinusoidal signal
   ``v(i, j) = delta * sin(2 pi j f / m)`` over the m columns of the image, added to
   images of the target class only, labels kept; delta = 20, f = 6.
"""

from __future__ import annotations

import numpy as np

from sanitize.attacks.base import Attack, register
from sanitize.attacks.checks import check_number
from sanitize.attacks.triggers import to_uint8


@register
class SIG(Attack):
    """Sinusoidal-signal clean-label attack [1]_: ``x' = clip(x + v)`` on target-class rows.

    Parameters
    ----------
    delta : float, default=20
        Amplitude in grey levels (0..255), > 0.
    frequency : float, default=6
        Periods across the image width, > 0.

    References
    ----------
    .. [1] Barni, Kallas and Tondi, "A New Backdoor Attack in CNNs by Training Set
       Corruption Without Label Poisoning", ICIP 2019.

    Examples
    --------
    >>> out = SIG().apply(np.full((1, 1, 8, 24), 100, np.uint8))
    >>> out[0, 0, 0, :8].tolist()
    [100, 120, 100, 80, 100, 120, 100, 80]
    """

    name = "sig"
    clean_label = True

    def __init__(self, *, delta: float = 20.0, frequency: float = 6.0) -> None:
        self.delta = delta
        self.frequency = frequency

    def _check_params(self) -> None:
        check_number(self.name, "delta", self.delta, low=0, high=255, low_open=True)
        check_number(self.name, "frequency", self.frequency, low=0, low_open=True)

    def signal(self, width: int) -> np.ndarray:
        """``v`` along the columns: float32 (width,), ``delta * sin(2 pi j f / width)``."""
        j = np.arange(width, dtype=np.float64)
        return (self.delta * np.sin(2 * np.pi * j * self.frequency / width)).astype(np.float32)

    def _stamp(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return to_uint8(images.astype(np.float32) + self.signal(images.shape[3]))
