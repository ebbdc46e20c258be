"""Writing a file so that readers see the old one or the whole new one, never half of it.

Torch-free: any module may use it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(dest: Path, durable: bool = False) -> Iterator[Path]:
    """A temporary path beside ``dest`` (hidden, unique) that becomes ``dest`` if the block ends without
    an error, and is removed whatever happens: a crash or an exception leaves ``dest`` as it was.

    ``durable``: the new bytes reach the disk before the rename (fsync), so a power cut leaves the
    old file or the new one, never an empty one.
    """
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def new_file_mode() -> int:
    """The permissions the umask gives a new file (for files made by libraries that pick their own)."""
    try:  # Linux says the umask without changing it
        with open("/proc/self/status", encoding="ascii") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)  # elsewhere, reading it means setting it: put it straight back
        os.umask(mask)
    return 0o666 & ~mask
