"""The fuzz targets: each takes arbitrary bytes and checks the property its reader promises.

Each target raises :class:`Violation` (or lets an unexpected exception out) when the promise is
broken; a target that returns has found nothing. The readers' limits are lowered so that every
input is cheap (time and memory are bounded by the limits, which is itself what is under test).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import re
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

from forensix.inputs import InputItem, InputSpec, Limits, iter_entries
from forensix.models.config import get_config
from forensix.report import ReportWriter
from forensix.stages.records import IMAGE, SKIP_NON_IMAGE, Record, RecordBuilder
from forensix.stages.rows import start_row

MAX_PIXELS = 4_000_000  # a fuzzed header may claim any size: what a scan would refuse is refused cheaply
LIMITS = Limits(max_bytes=8 << 20, max_archive_bytes=64 << 20, max_ratio=200.0)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tar.bz2", ".tar.xz")
_ANSI = re.compile(r"\x1b\[")


class Violation(AssertionError):
    """A reader broke its promise for these bytes."""


@cache
def _builder() -> RecordBuilder:
    return RecordBuilder(get_config("deeclip-tiny").preprocess, max_pixels=MAX_PIXELS, metadata=True)


def _check_message(text: str, what: str) -> None:
    if "\n" in text or _ANSI.search(text):
        raise Violation(f"{what} is not one plain line: {text!r}")


def _check_record(record: Record, explicit: bool) -> None:
    """A record is a skip (not for an explicit input), an error that says why, or a finite model input."""
    if record.skip:
        if explicit or record.skip != SKIP_NON_IMAGE:
            raise Violation(f"an explicit input was skipped ({record.skip})")
        return
    if record.error:
        _check_message(record.error, "the error")
    else:
        tensor = record.inputs.get(IMAGE)
        crop = _builder().cfg.crop
        if tensor is None or tuple(tensor.shape) != (3, crop, crop) or not bool(tensor.isfinite().all()):
            raise Violation(f"no error and no {crop}px model input: {None if tensor is None else tuple(tensor.shape)}")
    _check_message(record.notes, "the notes")
    row = start_row(record)
    for fmt in ("csv", "jsonl"):  # the row must reach every report format
        ReportWriter(io.StringIO(), fmt).write(row)
    json.dumps(row, allow_nan=False)


def image(data: bytes) -> None:
    """One file's bytes → exactly one record, with the file's sha256: decode, preprocess, notes."""
    record = _builder()(0, InputItem("fuzz.img", reader=lambda: data))
    if record.sha256 != hashlib.sha256(data).hexdigest():
        raise Violation("the record's sha256 is not the file's")
    _check_record(record, explicit=True)


def archive(data: bytes) -> None:
    """An archive (its kind chosen by the first byte) → one record or one counted skip per member, the
    same whether read in the stream or detached and read elsewhere, as the scan's workers read it
    (two walks: a compressed stream's member is read once by each, as by a scan)."""
    suffix = ARCHIVE_SUFFIXES[data[0] % len(ARCHIVE_SUFFIXES)] if data else ".zip"
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"fuzz{suffix}")
        Path(path).write_bytes(data[1:])
        streamed = []
        for index, entry in enumerate(iter_entries([path], LIMITS)):
            if entry.path != path:
                raise Violation(f"an entry of the archive names another file: {entry.path!r}")
            streamed.append(_builder()(index, entry))
            _check_record(streamed[-1], explicit=False)
        detached = pickle.dumps([entry.detach() for entry in iter_entries([path], LIMITS)])
        moved = [_builder()(index, entry) for index, entry in enumerate(pickle.loads(detached))]
        if [(r.member, r.sha256, r.error, r.skip) for r in moved] != [
            (r.member, r.sha256, r.error, r.skip) for r in streamed
        ]:
            raise Violation("the members detached read otherwise than in the stream")


def path_list(data: bytes) -> None:
    """A path list → its paths exactly, each one or more entries.

    A list that starts with a NUL byte is read as NUL-separated (``--from-list0``, empty names
    dropped); any other as lines (``--from-list``: split at LF, one CR before it dropped, blank
    lines skipped). Only relative paths inside a sandbox folder are walked (an absolute path could
    name the whole disk); every one gives at least one entry, a missing one exactly one error.
    """
    nul = data.startswith(b"\0")
    if nul:
        expected = [name for name in data.split(b"\0") if name]
    else:
        expected = [line.removesuffix(b"\r") for line in data.split(b"\n")]
        expected = [line for line in expected if line.strip()]
    with tempfile.TemporaryDirectory() as folder:
        listing = os.path.join(folder, "list.txt")
        Path(listing).write_bytes(data)
        spec = InputSpec.from_args([], [] if nul else [listing], from_lists0=[listing] if nul else [])
        paths = list(spec.paths())
        if [os.fsencode(p) for p in paths] != expected:
            raise Violation(f"the list's paths were read as {paths[:3]!r}…, not {expected[:3]!r}…")
        sandbox = os.path.join(folder, "sandbox")
        os.mkdir(sandbox)
        Path(sandbox, "a.png").write_bytes(_png())
        inside = [os.path.join(sandbox, p) for p in paths if _stays_inside(p)]
        for path in inside:
            entries = list(iter_entries([path], LIMITS))
            if not entries or (not os.path.lexists(path) and len(entries) != 1):
                raise Violation(f"{path!r} gave {len(entries)} entries")
            for index, entry in enumerate(entries):
                _check_record(_builder()(index, entry), explicit=entry.path == path)


def _stays_inside(path: str) -> bool:
    parts = path.split("/")
    return not path.startswith("/") and ".." not in parts and "\0" not in path


@cache
def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def checkpoint(data: bytes) -> None:
    """A weights file → a loaded detector, or a one-line error naming what is wrong; nothing else."""
    from forensix.loading import load_weights
    from forensix.weights import WeightsMissing

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "weights.safetensors" if data[8:9] == b"{" else "weights.pth")
        path.write_bytes(data)
        try:
            loaded = load_weights(path, "detector")
        except (ValueError, OSError, KeyError, WeightsMissing) as e:  # the command line: one line, exit 2
            _check_message(str(e), "the error")
            return
        threshold, temperature = loaded.config.threshold, loaded.config.temperature
        if not (isinstance(threshold, float) and 0.0 <= threshold <= 1.0):
            raise Violation(f"a loaded detector has threshold {threshold!r}")
        if not (isinstance(temperature, float) and math.isfinite(temperature) and temperature > 0):
            raise Violation(f"a loaded detector has temperature {temperature!r}")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "image": image,
    "archive": archive,
    "path-list": path_list,
    "checkpoint": checkpoint,
}
