"""sha256 of files, and of large files remembered under the forensix home (never beside the file).

A weights file of a gigabyte takes seconds to hash, and every scan names its model by that hash,
so the digest is remembered in ``<cache>/sha256/``. The key is everything that changes when the
file does: its real path, device, inode, size, modification time and *change* time (ctime, which
every write and every ``touch`` moves on, and which no user tool can set back). A file rewritten
in place, or swapped for another, is hashed again; nothing is ever written into an input's folder,
and a digest can't be planted beside a file to make rows name a model it is not.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .files import replacing
from .home import cache_dir


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _cache_entry(path: Path) -> Path:
    st = os.stat(path)
    key = f"{os.path.realpath(path)}\0{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
    name = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
    return cache_dir() / "sha256" / name[:2] / name


def cached_sha256(path: Path) -> str:
    """sha256 of the file at ``path``, remembered under the forensix home (see the module's doc)."""
    entry = _cache_entry(Path(path))
    try:
        digest = entry.read_text().strip()
        if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
            return digest
    except OSError:
        pass
    digest = sha256_file(path)
    _store(entry, digest)
    return digest


def remember_sha256(path: Path, digest: str) -> None:
    """Remember ``digest`` for the file at ``path`` as it is now: forensix just hashed its bytes (a
    download, before it was renamed into place), so the next cached_sha256 need not read it again."""
    _store(_cache_entry(Path(path)), digest)


def _store(entry: Path, digest: str) -> None:
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with replacing(entry) as tmp:  # whole or absent: concurrent scans never read half a digest
            tmp.write_text(digest + "\n")
    except OSError:
        pass  # an unwritable cache only costs a re-hash next time
