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
from .digests import remember_sha256
from .download import ChecksumError, DownloadError, download
from .pins import FIRST_USE, MANIFEST, HeldLock, Pin, editing, now

FileProgress = Callable[[str, int, int | None], None]


class Refused(DownloadError):
    """What arrived is not the file the entry expects; the message says what it was."""


def fetch(name: str, url: str | None = None, progress: FileProgress | None = None) -> dict[str, Path]:
    """Make every file of entry ``name`` present and pinned; their paths by role.

    ``url`` overrides the address of a single-file entry (a mirror, or a copy the authors shared).
    The weights lock is held throughout: another fetch waits, and no pin is lost.
    """
    entry = W.get_entry(name)
    if url is not None and len(entry.files) != 1:
        raise ValueError(f"--url needs a single-file entry; {name} has {len(entry.files)} files")
    with editing() as lock:
        # Pinned files first: an unpinned main file is checked with its companions (a backbone) in place.
        order = sorted(entry.files, key=lambda f: W.pin_of(f, lock.pins) is None)
        paths: dict[str, Path] = {}
        for f in order:
            paths[f.role] = _fetch_file(entry, f, url, lock, paths, progress)
    return {f.role: paths[f.role] for f in entry.files}


def _fetch_file(
    entry: W.ManifestEntry,
    f: W.WeightFile,
    url: str | None,
    lock: HeldLock,
    ready: dict[str, Path],
    progress: FileProgress | None,
) -> Path:
    dest = W.local_path(f)
    pin = W.pin_of(f, lock.pins)
    if dest.is_file():
        if pin is not None:
            W.check_pinned(entry, f, dest, pin)
            return dest
        try:  # placed by hand: checked as a download would be, then pinned
            digest = W.cached_sha256(dest)
            _check_arrived(entry, f, dest, digest, ready, what=str(dest))
        except Refused as e:
            raise Refused(f"{e}; not pinned: delete or replace it") from None
        _pin_first_use(lock, f, dest, digest, None)
        return dest
    source = url or f.url
    if source is None and f.hub is None:
        hint = f" {entry.notes}" if entry.notes else ""
        raise W.WeightsMissing(f"{entry.name}: no public download address for {f.file}.{hint}")
    report = (lambda done, total: progress(f.file, done, total)) if progress else None
    if source is None:
        from .hub import fetch_from_hub  # huggingface_hub: only for Hub files

        if pin is None:  # weights.load_manifest refuses a Hub file without a sha256
            raise W.WeightsMissing(f"{entry.name}: {f.file} has no sha256 to check a Hub download by")
        remember_sha256(dest, fetch_from_hub(f.hub, dest, sha256=pin.sha256, size=pin.size, progress=report))
        return dest

    def check(part: Path, digest: str) -> None:
        """Before the move: say what arrived if it is no weights file; an unpinned one is checked, then pinned."""
        try:
            if pin is not None:
                if junk := describe_junk(part):
                    raise Refused(f"{source} is {junk}, not {f.file}")
                return
            _check_arrived(entry, f, part, digest, ready, what=str(source))
        except Refused as e:
            raise Refused(f"{e}; nothing kept") from None
        _pin_first_use(lock, f, part, digest, source)

    # A first-use pin's size is not checked up front: a page in its place should be named as one.
    size = pin.size if pin is not None and pin.pinned == MANIFEST and not url else None
    try:
        digest = download(source, dest, sha256=pin.sha256 if pin else None, size=size, progress=report, check=check)
    except ChecksumError as e:
        if pin is None or pin.pinned == MANIFEST:
            raise
        raise ChecksumError(
            f"{e}: the file at that address is not the one {pin.describe()}; nothing kept. If its publisher "
            f"replaced it, check the new file and pin it by hand: forensix weights pin {entry.name} SHA256"
        ) from None
    remember_sha256(dest, digest)  # hashed once, as it arrived: the rename is not a reason to read it again
    return dest


def _pin_first_use(lock: HeldLock, f: W.WeightFile, path: Path, digest: str, url: str | None) -> None:
    lock.record(f.file, Pin(digest, path.stat().st_size, FIRST_USE, url=url, date=now()))


def _check_arrived(
    entry: W.ManifestEntry, f: W.WeightFile, path: Path, digest: str, ready: dict[str, Path], what: str
) -> None:
    """Refused unless ``path`` is what ``f`` should be: for the entry's main file, the layout the entry
    names, of its kind, needing no files but the entry's own, loading strictly into its model."""
    # torch and the model families: only once a file is to be checked (a failed fetch is quick).
    from .models.checkpoints import CheckpointError, check_kind, check_loadable, read_model_file, read_state_dict
    from .models.registry import get_format

    size = path.stat().st_size
    if junk := describe_junk(path):
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
        others = {role: p for role, p in ready.items() if role != f.role}
        found = read_model_file(path, companions=others, sha256=digest)
        if found.native or found.format != entry.format:
            raise CheckpointError(f"it is {'a forensix file' if found.native else 'a ' + found.format + ' checkpoint'}")
        check_kind(found.config.kind, entry.kind, str(path))
        check_loadable(found)
    except Exception as e:  # noqa: BLE001 - whatever reading or building it raised, the file is not the one
        reason = " ".join(str(e).split()).removeprefix(f"{path}: ").removeprefix(f"{path} ") or type(e).__name__
        raise Refused(f"{what} is not the {entry.format} file {f.file} ({size:,} bytes: {reason})") from None


def describe_junk(path: Path) -> str | None:
    """What a file plainly is when it is no weights file at all (a web page, text, nothing); else None."""
    size = os.path.getsize(path)
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
