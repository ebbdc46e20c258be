"""forensix: find AI-generated images.

>>> import forensix
>>> detector = forensix.load_detector("deeclip")          # or weights="model.safetensors"
>>> detector.score([PIL.Image.open("photo.jpg")])          # P(fake) per image
>>> for row in forensix.scan(["photos/", "set.zip"], detector, workers=4):
...     print(row["path"], row["member"], row["verdict"], row["score"])
"""

__version__ = "0.1.0"


def load_detector(*args, **kwargs):
    """See :func:`forensix.detector.load_detector` (imported lazily: torch is slow to import)."""
    from .detector import load_detector as _load

    return _load(*args, **kwargs)


def load_localizer(*args, **kwargs):
    """See :func:`forensix.localizer.load_localizer`: a DeCLIP mask model by manifest name or file."""
    from .localizer import load_localizer as _load

    return _load(*args, **kwargs)


def load_attributor(*args, **kwargs):
    """See :func:`forensix.attributor.load_attributor`: which generator made an image, or "real"."""
    from .attributor import load_attributor as _load

    return _load(*args, **kwargs)


def scan(*args, **kwargs):
    """See :func:`forensix.pipeline.scan`: one row per image, in input order."""
    from .pipeline import scan as _scan

    return _scan(*args, **kwargs)


__all__ = ["__version__", "load_attributor", "load_detector", "load_localizer", "scan"]
