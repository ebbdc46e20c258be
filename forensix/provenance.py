"""What produced a result: one builder for a scan's ``.meta.json``, eval's ``metrics.json`` and bench.

A result can be reproduced from it: the models (name, weights file and sha256 with the weights' own
provenance, config, preprocessing, device, precision), the detector's threshold and temperature,
the run's settings, package versions, the start time and the command line.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .attributor import Attributor
    from .detector import Detector
    from .localizer import Localizer
    from .runner import Runner

PACKAGES = ("forensix", "torch", "open_clip_torch", "pillow", "numpy", "exifread", "c2pa-python", "onnxruntime")


def package_versions() -> dict[str, str]:
    """Python's version and those of the installed packages that shape a score."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def model_provenance(runner: Runner) -> dict[str, Any]:
    """One model: its name, weights (file, sha256, their provenance), config, preprocessing, device, precision."""
    info = runner.info
    return {
        "model": runner.name,
        "weights": {"source": info.source, "sha256": info.sha256, "provenance": info.provenance},
        "config": runner.config.name,
        "preprocess": asdict(runner.config.preprocess),
        "device": str(runner.device),
        "precision": runner.precision,
    }


def provenance(
    detector: Detector,
    localizer: Localizer | None = None,
    attributor: Attributor | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """The detector's record with its threshold and temperature, the other models' (None when absent),
    the run's ``settings``, then versions, start time and command line."""
    return {
        **model_provenance(detector),
        "threshold": detector.threshold,
        "band_low": detector.band_low,
        "temperature": detector.temperature,
        "localizer": None if localizer is None else model_provenance(localizer),
        "attributor": None
        if attributor is None
        else {**model_provenance(attributor), "classes": list(attributor.classes)},
        **settings,
        "versions": package_versions(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
    }
