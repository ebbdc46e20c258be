"""Where forensix keeps files of its own (caches): never beside the inputs it reads.

``$FORENSIX_HOME/cache`` if ``FORENSIX_HOME`` is set, else ``~/.cache/forensix``. Torch-free, so
that any module may ask.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    home = os.environ.get("FORENSIX_HOME")
    return Path(home).expanduser() / "cache" if home else Path("~/.cache/forensix").expanduser()
