"""The verdict of a score: its one rule, for the scan, eval, calibrate and the ONNX sidecar's readers.

``fake`` when the score is at or above the threshold. Below it, ``real``, unless the detector has an
uncertain band: then scores in ``[band_low, threshold)`` are ``uncertain``, the answer services give
as "inconclusive". A band is set by ``forensix calibrate --target-fnr`` or ``scan --uncertain``.
Torch- and numpy-free at import: the command line parses bands with it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

FAKE, REAL, UNCERTAIN, ERROR = "fake", "real", "uncertain", "error"


def verdict(score: float, threshold: float, band_low: float | None = None) -> str:
    """``fake``, ``uncertain`` or ``real`` for a finite score."""
    if score >= threshold:
        return FAKE
    return UNCERTAIN if band_low is not None and score >= band_low else REAL


def in_band(scores: np.ndarray, threshold: float, band_low: float | None) -> np.ndarray:
    """Which scores are ``uncertain`` (all False without a band)."""
    import numpy as np  # here: the command line imports this module, and numpy takes a while

    s = np.asarray(scores)
    if band_low is None:
        return np.zeros(s.shape, dtype=bool)
    return (s >= band_low) & (s < threshold)


def check_band(band_low: float | None, threshold: float) -> None:
    """ValueError unless ``band_low`` is None or a number in [0, threshold]."""
    if band_low is None:
        return
    if isinstance(band_low, bool) or not isinstance(band_low, (int, float)) or not math.isfinite(band_low):
        raise ValueError(f"the uncertain band's lower edge must be a number, got {band_low!r}")
    if not 0.0 <= band_low <= threshold:
        raise ValueError(f"the uncertain band [{band_low:g}, {threshold:g}) must lie in [0, 1] with its low edge first")


def parse_band(text: str) -> tuple[float, float]:
    """``LOW,HIGH`` (``scan --uncertain``) as two numbers with 0 <= LOW <= HIGH <= 1."""
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
    except ValueError:
        low = high = math.nan
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"--uncertain takes LOW,HIGH (two scores, e.g. 0.2,0.8), got {text!r}")
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"--uncertain {text}: needs 0 <= LOW <= HIGH <= 1")
    return low, high
