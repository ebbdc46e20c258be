"""What to scan: image files, directories, zip/tar archives and path lists → a stream of entries.

The stream is deterministic (directories in sorted order, archive members in archive order), so
every DataLoader worker can walk it independently and take its own share. Archive members are
read in memory and never extracted; their names are labels only. Errors are values: an entry that
can't be listed or read carries an ``error`` and becomes an error row; nothing here raises for
bad input.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

from .imaging import sniff_image
from .limits import DEFAULT_MAX_BYTES, Limits
from .text import one_line

try:
    from lzma import LZMAError
except ImportError:  # a Python built without lzma: tarfile then reports .xz archives as unreadable
    LZMAError = OSError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
SNIFF_BYTES = 16
# What reading a damaged archive raises besides OSError/ValueError (zlib and lzma errors come through unwrapped).
_DAMAGED = (zipfile.BadZipFile, tarfile.TarError, zlib.error, LZMAError)
_ARCHIVE_ERRORS = (OSError, EOFError, RuntimeError, ValueError, *_DAMAGED)


@dataclass
class InputItem:
    """One entry of the input stream: an image to score, a non-image to count, or an error.

    An archive member's ``read`` works while the stream is at that member (the archive is open
    only then): read items as they come, as the scan does.
    """

    path: str
    member: str = ""  # archive member name ('' for plain files)
    error: str = ""
    skipped: bool = False  # a non-image found in a directory or archive: counted, no row
    reader: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)
    # Earlier entries of the stream with this path and member that are not skipped; counted only
    # when resuming, and only for names in the report (forensix.pipeline.ResumeIndex.walk).
    repeats: int = field(default=0, compare=False)

    def read(self) -> bytes:
        if self.reader is None:
            raise OSError(self.error or "nothing to read")
        return self.reader()


@dataclass
class InputStats:
    skipped_non_images: int = 0


def read_file(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of the file at ``path``; ValueError when it holds more than ``max_bytes``, OSError when unreadable."""
    size = os.path.getsize(path)
    if size > max_bytes:
        raise ValueError(f"file is {size} bytes, over the max-bytes limit ({max_bytes})")
    with open(path, "rb") as f:
        return f.read(max_bytes + 1)


def file_entry(path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> InputItem:
    """The entry of one plain file, read when asked (a dataset's sample, an explicit input)."""
    return InputItem(path, reader=partial(read_file, path, max_bytes))


def _sniff_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return sniff_image(f.read(SNIFF_BYTES))
    except OSError:
        return True  # let it through: reading it again gives the error row that says why


def is_archive(path: str) -> bool:
    lower = path.lower()
    return lower.endswith(".zip") or lower.endswith(TAR_SUFFIXES)


def _file_entry(path: str, limits: Limits, explicit: bool) -> Iterator[InputItem]:
    if is_archive(path):
        yield from _archive_entries(path, limits)
    elif explicit or _sniff_file(path):
        yield file_entry(path, limits.max_bytes)
    else:
        yield InputItem(path, skipped=True)


def _walk(top: str, limits: Limits, seen: set[tuple[int, int]]) -> Iterator[InputItem]:
    """Depth-first, names sorted, without recursion (any depth); each folder is scanned once.

    ``seen`` holds the (device, inode) of every folder scanned so far in this input stream, so a
    symlink back to an ancestor (a loop) or a second way into the same folder yields one error
    item instead of repeating rows or never ending.
    """
    stack: list[tuple[tuple[int, int], str, Iterator[str]]] = []  # the folders on the current path

    def enter(path: str) -> InputItem | None:
        try:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino)
            if key in seen:
                if any(k == key for k, _, _ in stack):
                    return InputItem(path, error="symlink loop: leads back to a folder being scanned")
                return InputItem(path, error="folder already scanned under another path")
            with os.scandir(path) as it:
                names = sorted(e.name for e in it)
        except OSError as e:
            return InputItem(path, error=f"cannot list directory: {e.strerror or e}")
        seen.add(key)
        stack.append((key, path, iter(names)))
        return None

    if (error := enter(top)) is not None:
        yield error
    while stack:
        _, folder, names = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        path = os.path.join(folder, name)
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            yield InputItem(path, error="broken symlink" if os.path.islink(path) else f"cannot stat: {e.strerror or e}")
            continue
        if stat.S_ISDIR(mode):
            if (error := enter(path)) is not None:
                yield error
        elif stat.S_ISREG(mode):
            yield from _file_entry(path, limits, explicit=False)
        else:  # sockets, fifos and devices: never opened (a fifo would block), but counted as skipped
            yield InputItem(path, skipped=True)


SYMLINK_NOT_FOLLOWED = "symbolic link in archive: not followed"


@dataclass
class _Member:
    """An archive member as the walk sees it: the size of its data and how to read it, or why it has none."""

    name: str
    size: int = 0
    compressed: int | None = None  # zip: its stored size, for the ratio limit
    read: Callable[[int], bytes] | None = None  # the first n bytes of its data
    error: str = ""  # an error row without reading anything (a link not followed)
    skipped: bool = False  # no data: a device or a fifo, counted as a non-image


def _member_entries(path: str, members: Iterable[_Member], limits: Limits) -> Iterator[InputItem]:
    """Entries for an archive's members: each sniffed first, the limits applied to the images, read whole.

    Sniffing reads only the first bytes (it streams, from a bomb too), so a non-image is a counted
    skip whatever its size; the limits bound what is read whole, and the archive's total counts
    only that.
    """
    total = 0
    for m in members:
        if m.read is None:
            yield InputItem(path, member=m.name, error=m.error, skipped=m.skipped or not m.error)
            continue
        try:
            is_image = sniff_image(m.read(SNIFF_BYTES))
        except _ARCHIVE_ERRORS as e:
            yield InputItem(path, member=m.name, error=f"cannot read member: {e}")
            continue
        if not is_image:
            yield InputItem(path, member=m.name, skipped=True)
            continue
        total += m.size
        error = ""
        if m.size > limits.max_bytes:
            error = f"member is {m.size} bytes, over the max-bytes limit ({limits.max_bytes})"
        elif m.compressed is not None and m.size > limits.max_ratio * max(m.compressed, 1):
            ratio = m.size / max(m.compressed, 1)
            error = f"compression ratio {ratio:.0f} exceeds the max-ratio limit ({limits.max_ratio:g})"
        elif total > limits.max_archive_bytes:
            error = f"archive exceeds the max-archive-bytes limit ({limits.max_archive_bytes}) of uncompressed data"
        if error:
            yield InputItem(path, member=m.name, error=error)
            continue

        def reader(read: Callable[[int], bytes] = m.read, size: int = m.size, name: str = m.name) -> bytes:
            try:
                data = read(limits.max_bytes + 1)
            except _DAMAGED as e:
                # Readers raise only OSError/ValueError (what callers catch), never these.
                raise ValueError(f"member {name!r} is damaged: {e}") from e
            if len(data) != size:  # a header that lies about the size
                raise ValueError(f"member {name!r} holds {len(data)} bytes, its header says {size}")
            return data

        yield InputItem(path, member=m.name, reader=reader)


def _zip_members(archive: zipfile.ZipFile) -> Iterator[_Member]:
    for info in archive.infolist():
        if info.filename.endswith("/"):  # a folder (ZipInfo.is_dir raises IndexError for a member without a name)
            continue
        if stat.S_ISLNK(info.external_attr >> 16):  # zip -y: the data is the link's target, a path
            yield _Member(info.filename, error=SYMLINK_NOT_FOLLOWED)
            continue

        def read(n: int, info: zipfile.ZipInfo = info) -> bytes:
            with archive.open(info) as f:
                return f.read(n)

        yield _Member(info.filename, info.file_size, info.compress_size, read)


class _ForwardReads:
    """``read(n)``: a tar member's first ``n`` bytes, the sniff's and then the whole read's from one handle.

    A second ``extractfile`` would seek back to the member's start, and going back in a gzip, bzip2
    or xz stream means decompressing it again from the archive's start: every member would cost the
    archive up to it (issue 15). So the handle the sniff opened reads on, and only the sniff's few
    bytes are kept; a read after a whole one (rare: a retry) opens the member again.
    """

    def __init__(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.archive, self.member = archive, member
        self.file: IO[bytes] | None = None
        self.head = b""  # what the handle has read so far, while that is only a sniff

    def __call__(self, n: int) -> bytes:
        if self.file is None or self.file.tell() != len(self.head):  # first read, or after a whole one
            self.file, self.head = self.archive.extractfile(self.member), b""
            if self.file is None:
                return b""
        if n <= len(self.head):
            return self.head[:n]
        more = self.file.read(n - len(self.head))
        if len(self.head) + len(more) <= SNIFF_BYTES:
            self.head += more
            return self.head
        return self.head + more


def _tar_members(archive: tarfile.TarFile, path: str) -> Iterator[_Member]:
    """The members of a tar: files; hard links as the file they name; other links and devices as what they are.

    A hard link (``tar`` stores a file's second name so) is read from the earlier member holding
    its data, through a second handle on the archive: the walk's stream goes on undisturbed, and
    for a compressed tar the second handle only decompresses forward while the links come in the
    order of their files (tarfile's own ``extractfile`` of a link would first read every header to
    the end of the archive, then rewind the walk's stream). Symbolic links are never followed (a
    member's name is a label, never a path: it may point anywhere), but each is an error row.
    """
    named: dict[str, tarfile.TarInfo] = {}  # what each name seen so far holds: a file, a link, a device
    with ExitStack() as close:
        second: list[tarfile.TarFile] = []

        def read_linked(n: int, target: tarfile.TarInfo) -> bytes:
            if not second:
                second.append(close.enter_context(tarfile.open(path, mode="r:*")))
            f = second[0].extractfile(target)  # a regular member: read from its offset, nothing searched
            return f.read(n) if f is not None else b""

        for member in archive:
            if member.isdir():
                continue
            target = named.get(os.path.normpath(member.linkname), member) if member.islnk() else member
            named[os.path.normpath(member.name)] = target
            if target.issym():
                yield _Member(member.name, error=SYMLINK_NOT_FOLLOWED)
            elif target.islnk():
                error = f"hard link to {member.linkname!r}, which is not an earlier member of the archive"
                yield _Member(member.name, error=error)
            elif target.isreg() or target.type not in tarfile.SUPPORTED_TYPES:  # unknown types hold data, as in tarfile
                reader = _ForwardReads(archive, member) if target is member else partial(read_linked, target=target)
                yield _Member(member.name, target.size, None, reader)
            else:  # fifos and devices: nothing to read
                yield _Member(member.name, skipped=True)


def _archive_entries(path: str, limits: Limits) -> Iterator[InputItem]:
    try:
        if path.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                yield from _member_entries(path, _zip_members(archive), limits)
        else:
            with tarfile.open(path, mode="r:*") as archive:
                yield from _member_entries(path, _tar_members(archive, path), limits)
    except _ARCHIVE_ERRORS as e:
        # A corrupt archive: one error row for what could not be listed.
        yield InputItem(path, member="", error=f"cannot read archive: {one_line(str(e))}")


def read_path_list(source: str, nul: bool = False) -> Iterator[str]:
    """Paths from a list file (``-`` = stdin), one per line, or NUL-separated with ``nul``.

    The list is read as bytes and each name decoded as the file system decodes names
    (``os.fsdecode``), so a name that is not UTF-8 opens the same file. Lines end at LF only (a CR
    inside a name is part of it); one CR just before the LF is dropped (a CRLF list), and lines of
    only white space are skipped. A NUL-separated list (``find -print0``) takes every byte of each
    name as it is: only empty entries are skipped.
    """
    separator = b"\0" if nul else b"\n"
    stream = _binary_stdin() if source == "-" else open(source, "rb")
    try:
        for record in _split(stream, separator):
            if not nul:
                record = record.removesuffix(b"\r")
                if not record.strip():
                    continue
            elif not record:
                continue
            yield os.fsdecode(record)
    finally:
        if source != "-":
            stream.close()


def _binary_stdin() -> IO[bytes]:
    """stdin's bytes; a text stream put in its place (tests, embedding programs) is encoded back."""
    binary = getattr(sys.stdin, "buffer", None)
    if binary is not None:
        return binary
    text = sys.stdin.read()
    return io.BytesIO(os.fsencode(text))


def _split(stream: IO[bytes], separator: bytes) -> Iterator[bytes]:
    """The records of a byte stream between separators, read in chunks (a list of any length)."""
    pending: list[bytes] = []
    while chunk := stream.read(1 << 16):
        *done, last = chunk.split(separator)
        for record in done:
            yield b"".join([*pending, record])
            pending = []
        pending.append(last)
    if tail := b"".join(pending):
        yield tail


def iter_entries(paths: Iterable[str], limits: Limits | None = None) -> Iterator[InputItem]:
    """The whole input stream, skipped non-images included, in a deterministic order.

    A path named explicitly always yields a row (an error row if it is no readable image);
    directories are walked recursively; archives are listed member by member.
    """
    limits = limits or Limits()
    seen: set[tuple[int, int]] = set()
    for path in paths:
        if os.path.isdir(path):
            yield from _walk(path, limits, seen)
        elif os.path.isfile(path):
            yield from _file_entry(path, limits, explicit=True)
        elif os.path.exists(path):  # a fifo or device would block or never end
            yield InputItem(path, error="not a regular file")
        else:
            error = "broken symlink" if os.path.islink(path) else "no such file or directory"
            yield InputItem(path, error=error)


def iter_inputs(
    paths: Iterable[str], stats: InputStats | None = None, limits: Limits | None = None
) -> Iterator[InputItem]:
    """The entries that become rows; skipped non-images are only counted in ``stats``."""
    for item in iter_entries(paths, limits):
        if item.skipped:
            if stats is not None:
                stats.skipped_non_images += 1
        else:
            yield item


@dataclass(frozen=True)
class InputSpec:
    """What the user asked to scan, re-walkable: paths, and files that list paths (in order).

    Each source is ``("path", p)`` or ``("list", file)``. stdin can only be read once, so a ``-``
    is spooled to a file first (:meth:`from_args`); then every DataLoader worker can walk the same
    stream, and memory stays bounded however long the list.
    """

    sources: tuple[tuple[str, str], ...]

    @classmethod
    def from_args(
        cls,
        paths: Iterable[str],
        from_lists: Iterable[str] = (),
        spool_dir: Path | None = None,
        from_lists0: Iterable[str] = (),
    ) -> InputSpec:
        """Paths, then the line lists ``from_lists``, then the NUL-separated lists ``from_lists0``."""
        sources: list[tuple[str, str]] = []
        listed = [("list", f) for f in from_lists] + [("list0", f) for f in from_lists0]
        for kind, value in [("path", p) for p in paths] + listed:
            option = "--from-list0" if kind == "list0" else "--from-list"
            if kind != "path" and value != "-" and (os.path.isdir(value) or not os.access(value, os.R_OK)):
                raise ValueError(f"{option} {value}: cannot read that file")
            # stdin, or a list that is a pipe (--from-list <(find ...)), can be read only once: keep a copy.
            if value == "-" or (kind != "path" and not os.path.isfile(value)):
                if spool_dir is None:
                    raise ValueError("reading paths from stdin or a pipe needs a spool folder")
                spool = spool_dir / f"list-{len(sources)}.txt"
                with open(spool, "wb") as f:
                    if value == "-":
                        shutil.copyfileobj(_binary_stdin(), f)
                    else:
                        with open(value, "rb") as pipe:
                            shutil.copyfileobj(pipe, f)
                sources.append(("list0" if kind == "list0" else "list", str(spool)))
            else:
                sources.append((kind, value))
        return cls(tuple(sources))

    def paths(self) -> Iterator[str]:
        for kind, value in self.sources:
            if kind in ("list", "list0"):
                yield from read_path_list(value, nul=kind == "list0")
            else:
                yield value
