"""`forensix weights fetch`: an entry's files downloaded, checked, pinned, and only then put in place.

A file the manifest gives a sha256 for (or the weights lock pins) must have it. A file with no
published checksum is trusted on first use: what arrives is imported strictly — the layout the
entry names, every key and shape of its model — and only then is its sha256 recorded in the lock
(pins.py) and the file moved where loads find it. What is not what the entry expects (an HTML page
from an expired share link, a truncated file, another model) is refused, with what it was, and
deleted. A file already present but unpinned (placed by hand) gets the same check, and its pin.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from . import weights as W
from .download import ChecksumError, DownloadError, download
from .models.checkpoints import CheckpointError, check_kind, check_loadable, read_model_file, read_state_dict
from .models.registry import get_format
from .pins import FIRST_USE, MANIFEST, Pin, record, today

FileProgress = Callable[[str, int, int | None], None]


class Refused(DownloadError):
    """What arrived is not the file the entry expects; the message says what it was."""


def fetch(name: str, url: str | None = None, progress: FileProgress | None = None) -> dict[str, Path]:
    """Make every file of entry ``name`` present and pinned; their paths by role.

    ``url`` overrides the address of a single-file entry (a mirror, or a copy the authors shared).
    """
    entry = W.get_entry(name)
    if url is not None and len(entry.files) != 1:
        raise ValueError(f"--url needs a single-file entry; {name} has {len(entry.files)} files")
    pins = W.read_pins()
    # Pinned files first: an unpinned main file is checked with its companions (a backbone) in place.
    order = sorted(entry.files, key=lambda f: W.pin_of(f, pins) is None)
    paths: dict[str, Path] = {}
    for f in order:
        paths[f.role] = _fetch_file(entry, f, url, W.pin_of(f, pins), paths, progress)
    return {f.role: paths[f.role] for f in entry.files}


def _fetch_file(
    entry: W.ManifestEntry,
    f: W.WeightFile,
    url: str | None,
    pin: Pin | None,
    ready: dict[str, Path],
    progress: FileProgress | None,
) -> Path:
    dest = W.local_path(f)
    if dest.is_file():
        W.check_pinned(entry, f, dest, pin)
        if pin is None:  # placed by hand: checked as a download would be, then pinned
            try:
                _check_arrived(entry, f, dest, ready, what=str(dest))
            except Refused as e:
                raise Refused(f"{e}; not pinned: delete or replace it") from None
            _pin_first_use(f, dest, None)
        return dest
    source = url or f.url
    if source is None and f.hub is None:
        hint = f" {entry.notes}" if entry.notes else ""
        raise W.WeightsMissing(f"{entry.name}: no public download address for {f.file}.{hint}")
    report = (lambda done, total: progress(f.file, done, total)) if progress else None
    expected = pin.sha256 if pin else None
    size = pin.size if pin and not url else None
    try:
        if source is None:
            from .hub import fetch_from_hub  # huggingface_hub: only for Hub files

            fetch_from_hub(f.hub, dest, sha256=expected, size=size, progress=report)  # type: ignore[arg-type]
        else:

            def check(part: Path) -> None:
                try:
                    _check_arrived(entry, f, part, ready, what=str(source))
                except Refused as e:
                    raise Refused(f"{e}; nothing kept") from None

            download(source, dest, sha256=expected, size=size, progress=report, check=None if pin else check)
    except ChecksumError as e:
        if pin is None or pin.pinned == MANIFEST:
            raise
        raise ChecksumError(
            f"{e}: the file at that address is not the one {pin.describe()}; nothing kept. If its publisher "
            f"replaced it, check the new file and pin it by hand: forensix weights pin {entry.name} SHA256"
        ) from None
    if pin is None:
        _pin_first_use(f, dest, source)
    return dest


def _pin_first_use(f: W.WeightFile, path: Path, url: str | None) -> None:
    record(f.file, Pin(W.cached_sha256(path), path.stat().st_size, FIRST_USE, url=url, date=today()))


def _check_arrived(entry: W.ManifestEntry, f: W.WeightFile, path: Path, ready: dict[str, Path], what: str) -> None:
    """Refused unless ``path`` is what ``f`` should be: the entry's layout, loading strictly (its main file)."""
    size = path.stat().st_size
    if junk := describe_junk(path, size):
        raise Refused(f"{what} is {junk}, not {f.file}")
    try:
        main_role = get_format(entry.format)[1].main_role if entry.kind != "backbone" else None
    except ValueError:
        main_role = None
    try:
        if f.role != main_role:
            if not read_state_dict(path):
                raise CheckpointError("no tensors in it")
            return
        found = read_model_file(path, companions={role: p for role, p in ready.items() if role != f.role})
        if found.native or found.format != entry.format:
            raise CheckpointError(f"it is {'a forensix file' if found.native else 'a ' + found.format + ' checkpoint'}")
        check_kind(found.config.kind, entry.kind, str(path))
        check_loadable(found)
    except (CheckpointError, W.WeightsMissing) as e:
        reason = str(e).removeprefix(f"{path}: ").removeprefix(f"{path} ")
        raise Refused(f"{what} is not the {entry.format} file {f.file} ({size:,} bytes: {reason})") from None


def describe_junk(path: Path, size: int | None = None) -> str | None:
    """What a file plainly is when it is no weights file at all (a web page, text, nothing); else None."""
    size = os.path.getsize(path) if size is None else size
    if size == 0:
        return "an empty file"
    with open(path, "rb") as fh:
        head = fh.read(512)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or (b"<html" in text[:200]):
        return f"an HTML page ({size:,} bytes: an expired or private share link, or a login page?)"
    if text.startswith((b"{", b"[")) and all(32 <= c < 127 or c in b"\t\r\n" for c in head):
        return f"a JSON document ({size:,} bytes: {_first_line(head)!r})"
    if all(32 <= c < 127 or c in b"\t\r\n" for c in head):
        return f"text ({size:,} bytes: {_first_line(head)!r})"
    return None


def _first_line(head: bytes) -> str:
    line = head.decode("ascii", "replace").strip().splitlines()[0] if head.strip() else ""
    return line[:80]
