"""The weights lock: the sha256 and size of weights files whose publishers give no checksum.

Trust on first use: the first ``forensix weights fetch`` of such a file checks it strictly, then
records its digest here; every later load and fetch must find the same bytes. ``forensix weights
pin`` records one by hand. The lock is ``weights.lock.json`` in the forensix home (``home.py``),
keyed by the weights file's name, so a pin outlives the file it was made from:

    {"version": 1, "files": {"deeclip_weight_complete_with_lora_5.pth":
        {"sha256": "…", "size": 1234, "pinned": "first use", "url": "https://…",
         "date": "2026-12-01T19:00:00+00:00"}}}

Torch-free, like ``weights.py``. Writes replace the file whole, under a lock that a fetch holds
from its first download to its last pin (:func:`editing`), so two fetches at once neither
interleave nor lose a pin.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .files import replacing
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

    def how(self) -> str:
        """'pinned by the manifest', 'pinned on first use (2026-12-01)', 'pinned by hand (…)'."""
        if self.pinned == MANIFEST:
            return "pinned by the manifest"
        when = f" ({self.date[:10]})" if self.date else ""
        return f"pinned {'on ' if self.pinned == FIRST_USE else ''}{self.pinned}{when}"

    def describe(self) -> str:
        """'the manifest's sha256', 'the sha256 pinned on first use (2026-12-01)', '… pinned by hand'."""
        return "the manifest's sha256" if self.pinned == MANIFEST else f"the sha256 {self.how()}"


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
            pin = Pin(**{**raw, "sha256": str(raw.get("sha256", "")).strip().lower()})
            if not is_sha256(pin.sha256) or pin.pinned not in (FIRST_USE, BY_HAND):
                raise ValueError(f"{name}: 'sha256' must be 64 hex digits and 'pinned' {FIRST_USE!r} or {BY_HAND!r}")
            if not (pin.size is None or type(pin.size) is int) or not all(
                v is None or isinstance(v, str) for v in (pin.url, pin.date)
            ):
                raise ValueError(f"{name}: 'size' must be a number, 'url' and 'date' text")
            pins[name] = pin
        return pins
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise LockError(
            f"{path}: not a readable weights lock ({e}); fix it by hand (deleting it forgets every pin it holds)"
        ) from None


class HeldLock:
    """The weights lock while this process holds it (:func:`editing`): its pins, and a way to add one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pins = read_pins()

    def record(self, file: str, pin: Pin) -> None:
        """Add or replace the pin of ``file``, at once and whole."""
        if pin.pinned not in (FIRST_USE, BY_HAND) or not is_sha256(pin.sha256):
            raise ValueError(f"not a pin to record: {pin}")
        self.pins[file] = pin
        data = {"version": VERSION, "files": {name: asdict(p) for name, p in sorted(self.pins.items())}}
        try:
            with replacing(self.path, durable=True) as tmp:  # the trust anchor: on disk before it is in place
                tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        except OSError as e:
            raise LockError(f"{self.path}: cannot write the weights lock ({e.strerror or e})") from None


_held = threading.local()  # this thread's HeldLock while it holds the lock: entering again reuses it


@contextlib.contextmanager
def editing() -> Iterator[HeldLock]:
    """Hold the weights lock: other processes' (and threads') fetches and pins wait, so none is lost.

    Readers never wait (every write replaces the file whole). Re-entered in the same thread, it gives
    the lock already held. The lock is an advisory lock on ``.weights.lock`` beside the lock file
    (POSIX; on Windows writers are not serialised).
    """
    if (held := getattr(_held, "lock", None)) is not None:
        yield held
        return
    path = lock_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LockError(f"{path}: cannot make the folder of the weights lock ({e.strerror or e})") from None
    try:
        import fcntl
    except ImportError:  # Windows: no fcntl
        fcntl = None
    guard = None
    try:
        if fcntl is not None:
            try:
                guard = open(path.with_name(".weights.lock"), "a+b")  # opened for writing: NFS's locks need it
                fcntl.flock(guard, fcntl.LOCK_EX)
            except OSError as e:
                raise LockError(
                    f"{path}: cannot lock the weights lock ({e.strerror or e}); "
                    "put the forensix home ($FORENSIX_HOME) on a file system with file locks"
                ) from None
        _held.lock = HeldLock(path)
        yield _held.lock
    finally:
        _held.lock = None
        if guard is not None:
            guard.close()  # closing releases the lock


def now() -> str:
    """The time of a pin: UTC, ISO 8601, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
