"""The pictures of a report's page: a thumbnail and a preview of each image, made from the scan's inputs.

The inputs are read again where the scan found them (a folder's file, an archive's member read from
the archive, never extracted to disk) by the scan's own record builder in its own runner
(:func:`forensix.stages.loader.prepared_blocks`): the same limits, time budget and safe decoding,
worker processes, and a decoder that crashes costs only that image's pictures. Each picture is
named by the sha256 of the bytes it was made from; a file whose bytes are no longer those the
scan hashed is said to have changed, not shown. Pictures already in the folder are not made again.
A row's mask overlay (a PNG the scan wrote) gets a thumbnail and a preview the same way.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..files import replacing
from ..imaging import DEFAULT_MAX_PIXELS
from ..inputs import InputItem, Limits, file_entry, iter_entries
from ..limits import DEFAULT_DECODE_TIMEOUT, PREVIEW_SIZE, THUMB_SIZE
from ..stages.loader import LoaderOptions, prepared_blocks
from ..stages.records import RecordBuilder

THUMB, PREVIEW = "thumb", "preview"  # the two pictures of an image, and the folders they go in
SIZES = "sizes.json"  # in the pictures folder: the sizes its pictures were made at
JPEG_QUALITY = 85


@dataclass(frozen=True)
class Thumbnails:
    """The record builder's ``views``: JPEGs of the decoded image no larger than each size (long edge)."""

    thumb: int = THUMB_SIZE
    preview: int = PREVIEW_SIZE  # 0: no preview (the detail view shows the thumbnail)

    def __call__(self, image: Image.Image) -> dict[str, bytes]:
        views = {}
        if self.preview:
            image = _shrunk(image, self.preview)
            views[PREVIEW] = _jpeg(image)
        views[THUMB] = _jpeg(_shrunk(image, self.thumb))
        return views


def _shrunk(image: Image.Image, size: int) -> Image.Image:
    if max(image.size) <= size:
        return image
    small = image.copy()
    small.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return small


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


@dataclass
class Found:
    """What reading the inputs again gave: the pictures by sha256, and why the others have none."""

    pictures: set[str] = field(default_factory=set)  # the sha256s whose pictures are in the folder
    read: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (path, member) → sha256s read there
    errors: dict[tuple[str, str], str] = field(default_factory=dict)  # (path, member) → why it gave nothing
    masks: dict[str, str] = field(default_factory=dict)  # a mask overlay's path → the sha256 of its pictures

    def why_missing(self, path: str, member: str, sha256: str) -> str:
        """Why the row's image has no pictures ('' when it has them)."""
        if sha256 in self.pictures:
            return ""
        if not sha256:
            return "the report gives no sha256 to find it by"
        if error := self.errors.get((path, member)):
            return error
        if (path, member) in self.read:
            return "changed since the scan (its sha256 is not the report's)"
        return "no longer in the archive" if member else "not found"


def make_views(
    rows: Sequence[dict[str, Any]],
    folder: Path,
    root: str = "",
    thumbnails: Thumbnails = Thumbnails(),
    workers: int = 0,
    limits: Limits | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decode_timeout: float = DEFAULT_DECODE_TIMEOUT,
) -> Found:
    """The pictures of every row that has an image (and of its mask overlay), written under ``folder``.

    Relative paths in the rows are taken from ``root`` (default: the current folder).
    """
    found = Found()
    wanted = _wanted(rows, _pictures_in(folder, thumbnails), found)
    jobs: list[tuple[str, str]] = []  # per entry of the stream: the row key (path, member), or ("", a mask's path)
    build = RecordBuilder(
        cfg=None, max_pixels=max_pixels, views=thumbnails, decode_timeout=decode_timeout, metadata=False
    )
    options = LoaderOptions(workers=workers, block_size=8)
    entries = _entries(rows, wanted, root, limits or Limits(), jobs)
    for block in prepared_blocks(entries, build, options):
        for record in block.records:
            path, member = jobs[record.index]
            if record.skip:
                continue
            if path == "" and not record.error:  # a mask overlay
                found.masks[member] = record.sha256
            elif record.error:
                if path:
                    found.errors[(path, member)] = record.error
                continue
            else:
                found.read.setdefault((path, member), set()).add(record.sha256)
            if record.views:
                _write(folder, record.sha256, record.views)
                found.pictures.add(record.sha256)
    return found


def _wanted(rows: Sequence[dict[str, Any]], have: set[str], found: Found) -> dict[tuple[str, str], None]:
    """The (path, member) to read again, in the report's order: rows with an image but no pictures yet."""
    wanted: dict[tuple[str, str], None] = {}
    for row in rows:
        sha256 = row.get("sha256")
        if row.get("verdict") == "error" or not isinstance(sha256, str) or not sha256:
            continue  # nothing of an unreadable image is decoded again
        key = (row["path"], row["member"])
        if picture_name(sha256) in have:
            found.read.setdefault(key, set()).add(sha256)
            found.pictures.add(sha256)
        else:
            wanted[key] = None
    return wanted


def _entries(
    rows: Sequence[dict[str, Any]],
    wanted: dict[tuple[str, str], None],
    root: str,
    limits: Limits,
    jobs: list[tuple[str, str]],
) -> Iterator[InputItem]:
    """The entries to read, each once, in the report's order: files, the wanted members of each
    archive (one walk of the archive), then mask overlays. ``jobs`` is told what each one is for."""
    archives: dict[str, set[str]] = {}
    for path, member in wanted:
        if member:
            archives.setdefault(path, set()).add(member)
    walked: set[str] = set()
    for path, member in wanted:
        if not member:
            jobs.append((path, ""))
            yield file_entry(os.path.join(root, path), limits.max_bytes)
        elif path not in walked:
            walked.add(path)
            for item in iter_entries([os.path.join(root, path)], limits):
                if not item.member and item.error:  # the archive itself: missing or unreadable
                    for name in archives[path]:
                        jobs.append((path, name))
                        yield InputItem(path, name, error=item.error)
                    break
                if item.member in archives[path] and not item.skipped:
                    jobs.append((path, item.member))
                    yield item
    masks = dict.fromkeys(row["mask"] for row in rows if isinstance(row.get("mask"), str) and row["mask"])
    for mask in masks:
        jobs.append(("", mask))
        yield file_entry(os.path.join(root, mask), limits.max_bytes)


def picture_name(sha256: str) -> str:
    """The name of an image's pictures (``thumb/NAME.jpg``, ``preview/NAME.jpg``): its sha256's first 128 bits."""
    return sha256[:32]


def _pictures_in(folder: Path, thumbnails: Thumbnails) -> set[str]:
    """The sha256s (their first 32 hex digits) whose pictures a former run already wrote at these sizes:
    not made again. Pictures of other sizes are removed, to be made again (and the sizes recorded)."""
    sizes = folder / SIZES
    wanted = {THUMB: thumbnails.thumb, PREVIEW: thumbnails.preview}
    try:
        if json.loads(sizes.read_text(encoding="utf-8")) != wanted:
            raise ValueError("other sizes")
    except (OSError, ValueError):
        for kind in (THUMB, PREVIEW):  # pictures of other sizes (or of unknown ones) go: none is mixed in
            for old in (folder / kind).glob("*.jpg"):
                old.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        with replacing(sizes) as tmp:
            tmp.write_text(json.dumps(wanted), encoding="utf-8")
        return set()
    try:
        made = {p.stem for p in (folder / THUMB).iterdir() if p.suffix == ".jpg"}
        if thumbnails.preview:
            made &= {p.stem for p in (folder / PREVIEW).iterdir() if p.suffix == ".jpg"}
    except FileNotFoundError:
        return set()
    return made


def _write(folder: Path, sha256: str, views: dict[str, bytes]) -> None:
    for kind, data in views.items():
        (folder / kind).mkdir(parents=True, exist_ok=True)
        with replacing(folder / kind / f"{picture_name(sha256)}.jpg") as tmp, open(tmp, "wb") as f:
            f.write(data)
