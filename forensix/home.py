"""Where forensix keeps files of its own (caches, the weights lock): never beside the inputs it reads.

The home is ``$FORENSIX_HOME`` if set, else ``~/.cache/forensix``; caches live in its ``cache``
folder (in the home itself when ``FORENSIX_HOME`` is unset). Torch-free, so that any module may ask.
"""

from __future__ import annotations

import os
from pathlib import Path


def home_dir() -> Path:
    home = os.environ.get("FORENSIX_HOME")
    return Path(home).expanduser() if home else Path("~/.cache/forensix").expanduser()


def cache_dir() -> Path:
    return home_dir() / "cache" if os.environ.get("FORENSIX_HOME") else home_dir()
