"""Entries → prepared records: read, sha256, decode, notes, preprocess; the one record builder.

A :class:`RecordBuilder` is a plain picklable callable, ``build(index, entry) -> Record``: it needs
no DataLoader, no worker and no model, so any runner can call it (a DataLoader worker, a process of
its own after a crash, a Ray task). Scan, eval, calibrate and train differ only in its settings:
which model inputs to make, whether to read notes, keep the bytes, look a logit up in the cache,
leave JPEGs for the device, or transform the decoded image (eval's perturbations, training's
augmentations). Every failure becomes the record's ``error``; nothing here raises for bad input,
and nothing is printed: what the decoder warns of about a file is in its notes.

Each entry's decoding, notes and preprocessing run under its time budget, ``decode_timeout``
(:mod:`forensix.timeouts`): past it, the entry is an error record and the next one begins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from PIL import Image

from ..gpu_decode import is_complete_jpeg
from ..imaging import DEFAULT_MAX_PIXELS, DecodeError, decode_image, file_warnings, open_image, preprocess, to_rgb
from ..inputs import READ_ERRORS, NotAnImage
from ..limits import DEFAULT_DECODE_TIMEOUT
from ..metadata import read_metadata
from ..models.config import PreprocessConfig
from ..text import one_line
from ..timeouts import TimeLimit, hard_timeout
from ..watermarks import not_checked, not_read, read_watermark, watermark_note
from ..workers import worker_time_limit

IMAGE = "image"  # the main model's input (the detector's, or the model being trained)
MASK, ATTR = "localizer", "attributor"  # a scan's localizer's and attributor's inputs (when they differ from IMAGE)
SKIP_NON_IMAGE = "non-image"
SKIP_RESUMED = "resumed"
DECODE_ERRORS = (DecodeError, ValueError, OSError)  # what decoding, transforming and preprocessing raise


class Entry(Protocol):
    """What a record is built from: :class:`forensix.inputs.InputItem` (a file, a member, an error)."""

    path: str
    member: str
    error: str
    skipped: bool
    repeats: int  # earlier entries of the stream with this path and member (resuming: see ``done``)
    held_bytes: int  # bytes of its data it holds in memory (a compressed archive's member, detached)

    def read(self) -> bytes: ...

    def detach(self) -> Entry:
        """The entry, readable in another process after the stream has moved on."""
        ...


@dataclass
class Record:
    """One entry made ready: its header and notes, its model inputs by name, or why it has none.

    ``skip`` marks an entry that yields no row (a non-image, an input already in a resumed report)
    but keeps the stream's order gapless. ``logit`` is a cached raw logit (nothing decoded), ``jpeg``
    a JPEG left for the device to decode, ``raw`` the file's bytes when a later stage needs them.
    """

    index: int
    path: str = ""
    member: str = ""
    sha256: str = ""
    error: str = ""
    skip: str = ""
    width: int | None = None
    height: int | None = None
    format: str = ""
    notes: str = ""
    metadata: dict[str, Any] | None = None  # only when notes were read
    watermark: dict[str, Any] | None = None  # only when watermarks were read (forensix.watermarks)
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    raw: bytes | None = None
    jpeg: bytes | None = None
    views: dict[str, bytes] = field(default_factory=dict)  # pictures for people, by name (the HTML report's)
    logit: float | None = None
    label: int | None = None  # training: the sample's class

    @property
    def has_input(self) -> bool:
        """Whether a model input is (or, for a device JPEG, will be) there: read, decoded, not cached."""
        return not self.skip and not self.error and self.logit is None


# A change to the decoded RGB image before preprocessing (a perturbation, an augmentation); it may
# add inputs of its own to the record (a training target).
Transform = Callable[[Image.Image, Record], Image.Image]
# Pictures of the decoded RGB image for people to look at (thumbnails), each an encoded file's bytes.
Views = Callable[[Image.Image], dict[str, bytes]]


@dataclass(frozen=True)
class RecordBuilder:
    """``build(index, entry)``: the record of one entry, made as the scan makes it.

    ``cfg`` makes ``inputs[IMAGE]`` (None: no model input); ``extra`` makes one more input per
    (name, preprocessing) from the same decoded image; ``views`` makes pictures of it for people.
    ``done(path, member, sha256, repeats)`` says whether an input is certainly already reported (it is
    then skipped, undecoded; an input it is unsure of is prepared, and the scan decides);
    ``lookup(sha256)`` may give a cached logit, and then nothing is decoded; ``device_jpegs`` leaves
    complete JPEGs undecoded in ``jpeg`` (only the header and notes are read). ``watermarks`` reads
    invisible watermarks from the decoded pixels into ``watermark`` and the notes: an image that can
    hold one (no JPEG: forensix.watermarks.not_read) is then decoded here, cached or not.
    ``decode_timeout`` is each entry's budget in seconds once its bytes are read: header, decoding, notes,
    transform and preprocessing (0: none).
    """

    cfg: PreprocessConfig | None
    max_pixels: int = DEFAULT_MAX_PIXELS
    metadata: bool = False
    extra: tuple[tuple[str, PreprocessConfig], ...] = ()
    keep_bytes: bool = False
    transform: Transform | None = None
    views: Views | None = None
    lookup: Callable[[str], float | None] | None = None
    done: Callable[[str, str, str, int], bool] | None = None
    device_jpegs: bool = False
    watermarks: bool = False
    c2pa_trust: str | None = None  # the notes' C2PA trust anchors or settings (forensix.metadata.c2pa_trust_settings)
    decode_timeout: float = DEFAULT_DECODE_TIMEOUT

    @property
    def hard_timeout(self) -> float | None:
        """When a process still building one record is ended (where its death is recovered from)."""
        return hard_timeout(self.decode_timeout)

    def __call__(self, index: int, entry: Entry) -> Record:
        record = Record(index, entry.path, entry.member, error=one_line(entry.error))
        if entry.skipped:
            record.skip = SKIP_NON_IMAGE
            return record
        data = self._read(entry, record)
        if record.skip:
            return record
        if self.done is not None and self.done(entry.path, entry.member, record.sha256, entry.repeats):
            record.skip = SKIP_RESUMED
            return record
        if record.error:
            return record
        try:
            # file_warnings: what decoding warns of goes to the notes (decode_image keeps it), the rest
            # about this file (a notes reader's, a transform's) to no stderr
            with worker_time_limit(self.hard_timeout), TimeLimit(self.decode_timeout), file_warnings(None):
                if self.lookup is not None:
                    record.logit = self.lookup(record.sha256)
                # The header alone: the score is cached, or the device decodes this JPEG.
                if record.logit is not None or (self.device_jpegs and not self.extra and is_complete_jpeg(data)):
                    if record.logit is None:
                        record.jpeg = data
                    self._header(data, record)
                    self._marks(record, lambda: decode_image(data, self.max_pixels).source)  # decoded for them alone
                else:
                    self._decode(data, record)
        except DECODE_ERRORS as e:
            record.error, record.inputs = one_line(str(e)), {}
        return record

    def crashed(self, index: int, entry: Entry, why: str) -> Record:
        """The record of an entry whose decoding killed its process: an error, with the file's sha256."""
        record = Record(index, entry.path, entry.member, error=one_line(f"cannot decode image: {why}"))
        try:  # reading and hashing are safe here: it is decoding that crashes
            record.sha256 = hashlib.sha256(entry.read()).hexdigest()
        except NotAnImage:  # it was its read that did not come back (a hung network file system): a skip all the same
            return Record(index, entry.path, entry.member, skip=SKIP_NON_IMAGE)
        except READ_ERRORS:
            pass
        return record

    def _read(self, entry: Entry, record: Record) -> bytes:
        if record.error:
            return b""
        try:
            data = entry.read()
        except NotAnImage:  # a file its read sniffed (forensix.inputs: a folder walked unsniffed)
            record.skip = SKIP_NON_IMAGE
            return b""
        except READ_ERRORS as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else e
            record.error = f"cannot read: {reason}"
            return b""
        record.sha256 = hashlib.sha256(data).hexdigest()
        return data

    def _header(self, data: bytes, record: Record) -> None:
        """Size, format and notes from the header alone: the pixels are decoded elsewhere, or not needed."""
        warned: list[str] = []
        header = open_image(data, self.max_pixels, warned)
        record.width, record.height, record.format = header.size[0], header.size[1], header.format
        self._notes(data, header, record, tuple(dict.fromkeys(warned)))

    def _decode(self, data: bytes, record: Record) -> None:
        decoded = decode_image(data, self.max_pixels)
        record.width, record.height, record.format = decoded.width, decoded.height, decoded.format
        self._notes(data, decoded.source, record, decoded.warnings)
        self._marks(record, lambda: decoded.source)
        image = self.transform(decoded.image, record) if self.transform is not None else decoded.image
        if self.cfg is not None:
            record.inputs[IMAGE] = preprocess(image, self.cfg)
        if self.views is not None:
            record.views = self.views(image)
        for name, cfg in self.extra:
            record.inputs[name] = preprocess(image, cfg)
        if self.keep_bytes:
            record.raw = data

    def _marks(self, record: Record, stored: Callable[[], Image.Image]) -> None:
        """With ``watermarks``: the marks in the pixels as stored (``stored()``: before EXIF orientation,
        as the pipelines mark them), or why the image is not read for one (a JPEG, a size no mark is at)."""
        if not self.watermarks:
            return
        if why := not_read(record.format, record.width, record.height):
            record.watermark = not_checked(why)
            return
        record.watermark = read_watermark(to_rgb(stored()))
        if note := watermark_note(record.watermark):
            record.notes = f"{note}; {record.notes}" if record.notes else note

    def _notes(self, data: bytes, source: Image.Image, record: Record, warned: tuple[str, ...]) -> None:
        if self.metadata:
            meta = read_metadata(data, source, warned, self.c2pa_trust)
            record.notes, record.metadata = meta.notes, meta.fields
