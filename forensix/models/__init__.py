"""forensix's models: one module per family, each registered (models/registry.py) when imported here.

Importing any ``forensix.models`` module imports this package first, so every bundled family is
known before a config is read.
"""

from . import attribution, declip, deeclip, univfd  # noqa: F401  (registration)
