"""The weights lock: the sha256 and size of weights files whose publishers give no checksum.

Trust on first use: the first ``forensix weights fetch`` of such a file checks it strictly, then
records its digest here; every later load and fetch must find the same bytes. ``forensix weights
pin`` records one by hand. The lock is ``weights.lock.json`` in the forensix home (``home.py``),
keyed by the weights file's name, so a pin outlives the file it was made from:

    {"version": 1, "files": {"deeclip_weight_complete_with_lora_5.pth":
        {"sha256": "…", "size": 1234, "pinned": "first use", "url": "https://…", "date": "2026-12-01"}}}

Torch-free, like ``weights.py``. Writes are atomic and serialised (a lock on the home folder), so
two fetches at once both land.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .home import home_dir

LOCK_FILE = "weights.lock.json"
VERSION = 1
FIRST_USE = "first use"
BY_HAND = "by hand"
MANIFEST = "manifest"  # not stored: the manifest's own checksums, shown beside the lock's
_SHA256 = re.compile(r"[0-9a-f]{64}")


class LockError(ValueError):
    """The lock file can't be read or written; the message names it and says what to do."""


@dataclass(frozen=True)
class Pin:
    """What a weights file must be: its sha256 (and size, where known), and who said so."""

    sha256: str
    size: int | None
    pinned: str  # MANIFEST | FIRST_USE | BY_HAND
    url: str | None = None  # where a first-use pin's file came from
    date: str | None = None  # when it was pinned (UTC, ISO 8601)

    def describe(self) -> str:
        """'the manifest's sha256', 'pinned on first use (2026-12-01)', 'pinned by hand (…)'."""
        if self.pinned == MANIFEST:
            return "the manifest's sha256"
        when = f" ({self.date[:10]})" if self.date else ""
        return f"pinned {'on ' if self.pinned == FIRST_USE else ''}{self.pinned}{when}"


def lock_path() -> Path:
    return home_dir() / LOCK_FILE


def is_sha256(text: str) -> bool:
    return bool(_SHA256.fullmatch(text))


def read_pins() -> dict[str, Pin]:
    """Pins by weights file name; none when there is no lock file yet."""
    path = lock_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise LockError(f"{path}: cannot read the weights lock ({e.strerror or e})") from None
    return _parse(text, path)


def _parse(text: str, path: Path) -> dict[str, Pin]:
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError(f"not a version {VERSION} weights lock")
        pins = {}
        for name, raw in data["files"].items():
            pin = Pin(**raw)
            if not is_sha256(pin.sha256) or pin.pinned not in (FIRST_USE, BY_HAND):
                raise ValueError(f"bad entry for {name}")
            pins[name] = pin
        return pins
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise LockError(f"{path}: not a readable weights lock ({e}); fix it by hand or delete it") from None


def record(file: str, pin: Pin) -> Path:
    """Add or replace the pin of ``file``; returns the lock's path."""
    if pin.pinned not in (FIRST_USE, BY_HAND) or not is_sha256(pin.sha256):
        raise ValueError(f"not a pin to record: {pin}")
    path = lock_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(path):
            pins = read_pins()
            pins[file] = pin
            data = {"version": VERSION, "files": {name: asdict(p) for name, p in sorted(pins.items())}}
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, path)  # whole or absent: a reader never sees half a lock
    except OSError as e:
        raise LockError(f"{path}: cannot write the weights lock ({e.strerror or e})") from None
    return path


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Serialise writers of the lock: a POSIX advisory lock on its folder (no file left behind)."""
    try:
        import fcntl
    except ImportError:  # Windows: no fcntl; the atomic replace still keeps the file whole
        yield
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
