"""What to scan: image files, directories, zip/tar archives and path lists → a stream of entries.

The stream is deterministic (directories in sorted order, archive members in archive order) and
is walked once, in stream order: an archive is read forward, and a compressed one is decompressed
once. An entry is read where it is handed (:meth:`InputItem.detach` makes it readable in another
process: a file, a zip member and a plain tar's member by where they are; a compressed stream's
member by its bytes, read now). Archive members are read in memory and never extracted; their
names are labels only. Errors are values: an entry that can't be listed or read carries an
``error`` and becomes an error row; nothing here raises for bad input.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import threading
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import IO, Any

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
# What reading an entry raises (zipfile and tarfile: all of these); the record builder's read errors.
READ_ERRORS = (OSError, ValueError, EOFError, RuntimeError)
_ARCHIVE_ERRORS = (*READ_ERRORS, *_DAMAGED)


@dataclass
class InputItem:
    """One entry of the input stream: an image to score, a non-image to count, or an error.

    A compressed tar's member (and a sparse one, or a hard link to either) can be read only while
    the stream is at it: read items as they come, or :meth:`detach` them as they come. A file found in a
    folder walked with ``sniff=False`` is sniffed by its ``read``, which raises :class:`NotAnImage`
    when it holds no image.
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

    def detach(self) -> InputItem:
        """This entry, readable after the stream has moved on and in another process (it pickles).

        A member of a compressed tar, a sparse member, or a hard link to either can only be read
        while the walk is at it: it is read now, in stream order, and carries its bytes (or what
        reading it raised). Every other entry already says where its bytes are, and is itself.
        """
        if isinstance(self.reader, _MemberRead) and not self.reader.portable:
            return replace(self, reader=self.reader.held())
        return self

    @property
    def held_bytes(self) -> int:
        """How many bytes of its data this entry holds in memory (a detached compressed member's)."""
        return len(self.reader.data) if isinstance(self.reader, _Held) else 0


class NotAnImage(ValueError):
    """What reading a file that has to be sniffed raises when it holds no image: a skip, not an error."""


@dataclass
class InputStats:
    skipped_non_images: int = 0


def read_file(path: str, max_bytes: int = DEFAULT_MAX_BYTES, sniff: bool = False) -> bytes:
    """The bytes of the file at ``path``; ValueError when it holds more than ``max_bytes``, OSError when unreadable.

    With ``sniff``, its first bytes are looked at first, from the same open file: NotAnImage when
    they are no image's (whatever its size).
    """
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES) if sniff else b""
        if sniff and not sniff_image(head):
            raise NotAnImage(f"{path}: not an image")
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise ValueError(f"file is {size} bytes, over the max-bytes limit ({max_bytes})")
        return head + f.read(max_bytes + 1 - len(head))


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


# How a walk treats what it finds: folder files sniffed as listed; sniffed by their read (each file
# opened once); or only counted, nothing read (a progress bar's total). DEFER is READ with no archive
# opened: each is an ArchiveAt for an ArchiveLister.
SNIFF, READ, COUNT, DEFER = "sniff", "read", "count", "defer"


class _Uncountable(Exception):
    """A count that needs every byte read: a compressed tar's members are spread through its stream."""


@dataclass(frozen=True)
class ArchiveAt:
    """An archive where a walk that opens none (``iter_entries(archives=...)``) has reached it: its
    entries (:func:`archive_entries`) go in its place."""

    path: str


# What puts each archive's entries in its place in a walk (the stream, with an ArchiveAt for each archive).
ArchiveLister = Callable[[Iterator["InputItem | ArchiveAt"], Limits], Iterator["InputItem"]]


def _file_entry(path: str, limits: Limits, explicit: bool, how: str) -> Iterator[InputItem | ArchiveAt]:
    if is_archive(path):
        if how == DEFER:
            yield ArchiveAt(path)
        else:
            yield from _archive_entries(path, limits, how)
    elif explicit:
        yield file_entry(path, limits.max_bytes)
    elif how == COUNT:
        yield InputItem(path)
    elif how in (READ, DEFER):
        yield InputItem(path, reader=partial(read_file, path, limits.max_bytes, sniff=True))
    elif _sniff_file(path):
        yield file_entry(path, limits.max_bytes)
    else:
        yield InputItem(path, skipped=True)


def _walk(top: str, limits: Limits, seen: set[tuple[int, int]], how: str) -> Iterator[InputItem | ArchiveAt]:
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
            yield from _file_entry(path, limits, explicit=False, how=how)
        else:  # sockets, fifos and devices: never opened (a fifo would block), but counted as skipped
            yield InputItem(path, skipped=True)


SYMLINK_NOT_FOLLOWED = "symbolic link in archive: not followed"


@dataclass
class _Member:
    """An archive member as the walk sees it: the size of its data and how to read it, or why it has none."""

    name: str
    size: int = 0
    compressed: int | None = None  # zip: its stored size, for the ratio limit
    read: Callable[[int], bytes] | None = None  # the first n bytes of its data, from the walk's own handle
    whole: Callable[[int], bytes] | None = None  # the same from where its bytes are, when that can be said
    error: str = ""  # an error row without reading anything (a link not followed)
    skipped: bool = False  # no data: a device or a fifo, counted as a non-image


@dataclass(frozen=True)
class _MemberRead:
    """An archive member's whole read: at most ``max_bytes + 1`` bytes, which must be as many as its header says."""

    read: Callable[[int], bytes]
    size: int
    name: str
    max_bytes: int

    @property
    def portable(self) -> bool:
        """Whether it reads the member from where it lies, in any process, after the walk has moved on."""
        return isinstance(self.read, (_ZipRead, _FileSlice))

    def __call__(self) -> bytes:
        try:
            data = self.read(self.max_bytes + 1)
        except _DAMAGED as e:
            # Readers raise only OSError/ValueError (what callers catch), never these.
            raise ValueError(f"member {self.name!r} is damaged: {e}") from e
        if len(data) != self.size:  # a header that lies about the size
            raise ValueError(f"member {self.name!r} holds {len(data)} bytes, its header says {self.size}")
        return data

    def held(self) -> _Held | _Failed:
        """The read done now: its bytes, or what it raised, to hand on."""
        try:
            return _Held(self())
        except READ_ERRORS as e:
            return _Failed(_plain_error(e))


def _plain_error(e: BaseException) -> Exception:
    """``e`` as the read-error class it is of, with its message (and errno), no traceback: it always pickles."""
    if isinstance(e, OSError) and e.strerror:
        return OSError(e.errno, e.strerror)
    kind = next(k for k in READ_ERRORS if isinstance(e, k))
    return kind(str(e))


@dataclass(frozen=True)
class _Held:
    """A detached member's bytes, read in stream order."""

    data: bytes = field(repr=False)

    def __call__(self) -> bytes:
        return self.data


@dataclass(frozen=True)
class _Failed:
    """A detached member whose read failed: reading it raises that again, wherever it is read."""

    error: BaseException

    def __call__(self) -> bytes:
        raise self.error


Stamp = tuple[int, int, int, int]  # a file's device, inode, size and mtime (ns): which file, in which state


def file_stamp(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class _OpenArchives:
    """This process's open archive files, the few it used last, so that a member read is not an open.

    Each is the file the walk listed: opened by path, then held to the stamp the walk took (an
    archive replaced or rewritten since is an error, never another file's bytes). A forked process
    starts with none: an inherited handle shares its file offset with the parent's.
    """

    def __init__(self, keep: int = 4) -> None:
        self.keep, self.files = keep, OrderedDict[tuple[str, str, Stamp], tuple[Any, IO[bytes]]]()
        self.inherited: list[object] = []  # a forked child's copies of its parent's handles
        self.lock = threading.Lock()

    def get(self, kind: str, path: str, stamp: Stamp) -> Any:
        with self.lock:
            key = (kind, path, stamp)
            if key in self.files:
                self.files.move_to_end(key)
                return self.files[key][0]
            f = open(path, "rb")
            try:
                if file_stamp(os.fstat(f.fileno())) != stamp:
                    raise OSError(f"{path} changed after it was listed")
                opened = zipfile.ZipFile(f) if kind == "zip" else f
            except BaseException:
                f.close()
                raise
            self.files[key] = (opened, f)
            while len(self.files) > self.keep:
                old, old_file = self.files.popitem(last=False)[1]
                old.close()
                old_file.close()  # a ZipFile does not close a file it was given (closing twice is nothing)
            return opened

    def forget(self) -> None:
        """In a forked child: start afresh. The inherited handles are kept, unused, never collected
        (their destructors are the parent's business; see forensix.workers)."""
        self.lock = threading.Lock()
        self.inherited.append(self.files)
        self.files = OrderedDict()


_open_archives = _OpenArchives()
if hasattr(os, "register_at_fork"):  # where processes fork
    os.register_at_fork(after_in_child=_open_archives.forget)


@dataclass(frozen=True)
class _ZipRead:
    """``read(n)``: a zip member's first ``n`` bytes, through this process's own handle on the zip."""

    path: str
    stamp: Stamp
    info: zipfile.ZipInfo

    def __call__(self, n: int) -> bytes:
        with _open_archives.get("zip", self.path, self.stamp).open(self.info) as f:
            return f.read(n)


@dataclass(frozen=True)
class _FileSlice:
    """``read(n)``: the first ``n`` of ``size`` bytes at ``offset`` in a file (a member of an uncompressed tar)."""

    path: str
    stamp: Stamp
    offset: int
    size: int

    def __call__(self, n: int) -> bytes:
        f = _open_archives.get("file", self.path, self.stamp)
        want, parts, got = min(n, self.size), [], 0
        while got < want:  # one pread gives at most about 2 GiB, and a network file system may give less
            part = os.pread(f.fileno(), want - got, self.offset + got)
            if not part:  # tarfile's own words for a member cut short
                raise tarfile.ReadError("unexpected end of data")
            parts.append(part)
            got += len(part)
        return b"".join(parts)


class MemberSpool:
    """Where detached members' bytes wait for the worker that reads them: one file per batch of
    entries, in a private temporary folder, removed once that batch is done.

    A compressed tar's members can only be read by the walk; held in memory until a worker took
    them, every batch in flight would hold its members' bytes in the walking process (and again in
    the queue that pickles them to a worker). Spooled, the walk holds one batch's bytes at a time,
    and a worker reads them as a slice of a file, as it reads an uncompressed tar's.
    """

    def __init__(self) -> None:
        self.folder: str | None = None
        self.written = 0

    def store(self, items: list[Any]) -> tuple[list[Any], str | None]:
        """``items``, those holding bytes now reading them from a new spool file; and that file (None: none held)."""
        if not any(isinstance(i.reader, _Held) for i in items):
            return items, None
        if self.folder is None:
            self.folder = tempfile.mkdtemp(prefix="forensix-spool-")
        path = os.path.join(self.folder, f"{self.written}.bin")
        self.written += 1
        placed: list[tuple[InputItem, int, int]] = []  # each item, where its bytes start (-1: none held), how many
        with open(path, "wb") as f:
            for item in items:
                if isinstance(item.reader, _Held):
                    placed.append((item, f.tell(), len(item.reader.data)))
                    f.write(item.reader.data)
                else:
                    placed.append((item, -1, 0))
        stamp = file_stamp(os.stat(path))
        spooled = []
        for item, at, n in placed:
            spooled.append(item if at < 0 else replace(item, reader=partial(_FileSlice(path, stamp, at, n), n)))
        return spooled, path

    def release(self, path: str | None) -> None:
        if path is not None:
            with suppress(FileNotFoundError):
                os.unlink(path)

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


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
        yield InputItem(path, member=m.name, reader=_MemberRead(m.whole or m.read, m.size, m.name, limits.max_bytes))


def _zip_members(archive: zipfile.ZipFile, path: str, stamp: Stamp) -> Iterator[_Member]:
    for info in archive.infolist():
        if info.filename.endswith("/"):  # a folder (ZipInfo.is_dir raises IndexError for a member without a name)
            continue
        if stat.S_ISLNK(info.external_attr >> 16):  # zip -y: the data is the link's target, a path
            yield _Member(info.filename, error=SYMLINK_NOT_FOLLOWED)
            continue

        def read(n: int, info: zipfile.ZipInfo = info) -> bytes:
            with archive.open(info) as f:
                return f.read(n)

        yield _Member(info.filename, info.file_size, info.compress_size, read, _ZipRead(path, stamp, info))


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


def _uncompressed(archive: tarfile.TarFile) -> bool:
    """Whether tarfile reads the archive's file itself (no gzip, bzip2 or xz stream in between)."""
    return isinstance(archive.fileobj, io.BufferedReader)


def _tar_members(archive: tarfile.TarFile, path: str, stamp: Stamp) -> Iterator[_Member]:
    """The members of a tar: files; hard links as the file they name; other links and devices as what they are.

    A hard link (``tar`` stores a file's second name so) is read from the earlier member holding
    its data, through a second handle on the archive: the walk's stream goes on undisturbed, and
    for a compressed tar the second handle only decompresses forward while the links come in the
    order of their files (tarfile's own ``extractfile`` of a link would first read every header to
    the end of the archive, then rewind the walk's stream). Symbolic links are never followed (a
    member's name is a label, never a path: it may point anywhere), but each is an error row.

    In an uncompressed tar, a file's data (a hard link's too) is a slice of the archive at a known
    offset, which any process reads directly; in a compressed one, only the walk can read it.
    """
    named: dict[str, tarfile.TarInfo] = {}  # what each name seen so far holds: a file, a link, a device
    plain = _uncompressed(archive)
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
                where = None
                if plain and not target.issparse():
                    where = _FileSlice(path, stamp, target.offset_data, target.size)
                yield _Member(member.name, target.size, None, reader, where)
            else:  # fifos and devices: nothing to read
                yield _Member(member.name, skipped=True)


def _archive_entries(path: str, limits: Limits, how: str) -> Iterator[InputItem]:
    try:
        # The stamp of the very file that is listed: a worker reading a member checks it is still that file.
        with open(path, "rb") as f, ExitStack() as close:
            stamp = file_stamp(os.fstat(f.fileno()))
            if path.lower().endswith(".zip"):
                members = _zip_members(close.enter_context(zipfile.ZipFile(f)), path, stamp)
            else:
                archive = close.enter_context(tarfile.open(fileobj=f, mode="r:*"))
                if how == COUNT and not _uncompressed(archive):
                    raise _Uncountable(path)
                members = _tar_members(archive, path, stamp)
            yield from _counted(path, members) if how == COUNT else _member_entries(path, members, limits)
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


def _counted(path: str, members: Iterable[_Member]) -> Iterator[InputItem]:
    """An entry for each member, from the archive's index alone (a zip's directory, a plain tar's headers)."""
    return (InputItem(path, member=m.name) for m in members)


def iter_entries(
    paths: Iterable[str], limits: Limits | None = None, sniff: bool = True, archives: ArchiveLister | None = None
) -> Iterator[InputItem]:
    """The whole input stream, skipped non-images included, in a deterministic order.

    A path named explicitly always yields a row (an error row if it is no readable image);
    directories are walked recursively; archives are listed member by member. A folder's files
    are sniffed as they are listed (``skipped`` says which hold no image), or with ``sniff=False``
    only when read (the scan's way: nothing is opened while listing, and each file once): their
    ``read`` then raises :class:`NotAnImage` for a non-image.

    With ``archives`` (``sniff=False`` only), the walk opens no archive: ``archives`` gets the stream
    with an :class:`ArchiveAt` for each, and puts each one's :func:`archive_entries` in its place
    (the Ray engine lists them in tasks of their own, several at once).
    """
    limits = limits or Limits()
    if archives is None:
        return _entries(paths, limits, SNIFF if sniff else READ)  # type: ignore[return-value]
    if sniff:
        raise ValueError("archives listed elsewhere: a walk that sniffs nothing (sniff=False)")
    return archives(_entries(paths, limits, DEFER), limits)


def archive_entries(path: str, limits: Limits) -> Iterator[InputItem]:
    """One archive's entries, as a walk gives them: its members (each sniffed), or a damaged archive's error entry."""
    return _archive_entries(path, limits, READ)


def count_entries(paths: Iterable[str], limits: Limits | None = None) -> int | None:
    """How many entries :func:`iter_entries` gives, reading no file: folders listed, archives' indexes read.

    None when only reading everything would tell: a compressed tar's member headers are spread
    through its compressed stream.
    """
    try:
        return sum(1 for _ in _entries(paths, limits or Limits(), COUNT))
    except _Uncountable:
        return None


def _entries(paths: Iterable[str], limits: Limits, how: str) -> Iterator[InputItem | ArchiveAt]:
    seen: set[tuple[int, int]] = set()
    for path in paths:
        if os.path.isdir(path):
            yield from _walk(path, limits, seen, how)
        elif os.path.isfile(path):
            yield from _file_entry(path, limits, explicit=True, how=how)
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


class MissingInput(ValueError):
    """A path named directly (on the command line, to write_report) does not exist."""


@dataclass(frozen=True)
class InputSpec:
    """What the user asked to scan, re-walkable: paths, and files that list paths (in order).

    Each source is ``("path", p)`` or ``("list", file)``. stdin can only be read once, so a ``-``
    is spooled to a file first (:meth:`from_args`); then the scan's walk, the progress bar's count
    and the ``--gpu-decode`` parity check each walk the same stream, and memory stays bounded
    however long the list.
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

    def check_named_paths(self) -> None:
        """MissingInput naming every path given directly (not in a list) that does not exist.

        A typo on the command line is the caller's error, not a row: a script must be able to tell
        it from a clean scan, as with ``ls`` or ``cp``. A path inside a list stays an error row.
        """
        missing = [value for kind, value in self.sources if kind == "path" and not os.path.lexists(value)]
        if missing:
            raise MissingInput(f"no such file or directory: {', '.join(repr(m) for m in missing)}")

    def paths(self) -> Iterator[str]:
        for kind, value in self.sources:
            if kind in ("list", "list0"):
                yield from read_path_list(value, nul=kind == "list0")
            else:
                yield value
