"""forensix: find AI-generated images.

>>> import forensix
>>> detector = forensix.load_detector("deeclip")          # or weights="model.safetensors"
>>> detector.score([PIL.Image.open("photo.jpg")])          # P(fake) per image
>>> for row in forensix.scan(["photos/", "set.zip"], detector, workers=4):
...     print(row["path"], row["member"], row["verdict"], row["score"])
>>> summary = forensix.write_report(["photos/"], detector, "report.csv", resume=True)
>>> forensix.write_html("report.csv", "report.html")            # report_files/ beside it

The functions are imported on first use (``import forensix`` does not import torch, which takes
seconds): ``forensix --help`` stays fast, and each name is the real function, signature and all.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# name → the module that defines it
_LAZY = {
    "load_detector": "detector",  # a detector by manifest name or weights file
    "load_localizer": "localizer",  # a DeCLIP mask model
    "load_attributor": "attributor",  # which generator made an image, or "real"
    "scan": "pipeline",  # one row per image, in input order
    "write_report": "scan_report",  # a whole scan into a CSV/JSON/JSONL report, resumable, interrupt-safe
    "ScanSummary": "scan_report",
    "write_html": "html_report",  # a page of a report to look at, its pictures beside it
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'forensix' has no attribute {name!r}")
    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # found once; later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["__version__", *_LAZY]
