"""What to scan: image files, directories (recursive, sorted) and path lists → input items."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .imaging import sniff_image


@dataclass(frozen=True)
class InputItem:
    """One thing that will become one report row."""

    path: str
    member: str = ""  # archive member name (archives: the scan issue's next step)
    error: str = ""  # set when the input could not even be listed or read

    def read(self, max_bytes: int) -> bytes:
        size = os.path.getsize(self.path)
        if size > max_bytes:
            raise ValueError(f"file is {size} bytes, over the max-bytes limit ({max_bytes})")
        with open(self.path, "rb") as f:
            return f.read()


@dataclass
class InputStats:
    skipped_non_images: int = 0
    listing_errors: int = 0


def _looks_like_image(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return sniff_image(f.read(16))
    except OSError:
        return True  # let it through: the decode step turns it into an error row that says why


def _walk(root: Path, stats: InputStats) -> Iterator[InputItem]:
    """Regular files under root in sorted order; unreadable folders become error rows."""

    def on_error(e: OSError) -> None:
        stats.listing_errors += 1
        raise e

    entries: list[tuple[str, str]] = []
    try:
        for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
            dirnames.sort()
            entries.extend((dirpath, name) for name in filenames)
    except OSError as e:
        yield InputItem(str(e.filename or root), error=f"cannot list directory: {e.strerror or e}")
    for dirpath, name in sorted(entries):
        path = Path(dirpath) / name
        if not path.is_file():
            continue  # sockets, fifos, dangling links
        if _looks_like_image(path):
            yield InputItem(str(path))
        else:
            stats.skipped_non_images += 1


def read_path_list(stream: Iterable[str]) -> Iterator[str]:
    for line in stream:
        line = line.rstrip("\n").rstrip("\r")
        if line.strip():
            yield line


def iter_inputs(paths: Iterable[str], stats: InputStats | None = None) -> Iterator[InputItem]:
    """Items for the given paths; ``-`` reads a list of paths from stdin.

    A file named explicitly always yields a row (an error row if it is no readable image); in a
    directory, files that are not images by their first bytes are only counted.
    """
    stats = stats if stats is not None else InputStats()
    for raw in paths:
        if raw == "-":
            yield from iter_inputs(read_path_list(sys.stdin), stats)
            continue
        path = Path(raw)
        if path.is_dir():
            yield from _walk(path, stats)
        elif path.exists():
            yield InputItem(str(path))
        else:
            yield InputItem(str(path), error="no such file or directory")
