"""forensix: find AI-generated images.

>>> import forensix
>>> detector = forensix.load_detector("deeclip")          # or weights="model.safetensors"
>>> detector.score([PIL.Image.open("photo.jpg")])          # P(fake) per image
"""

__version__ = "0.1.0"


def load_detector(*args, **kwargs):
    """See :func:`forensix.detector.load_detector` (imported lazily: torch is slow to import)."""
    from .detector import load_detector as _load

    return _load(*args, **kwargs)


__all__ = ["__version__", "load_detector"]
