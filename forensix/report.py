"""Streaming report writers (CSV per RFC 4180, one JSON array, JSON Lines) and resuming a report.

Rows are written as they come, so a report of millions of rows never sits in memory. JSON Lines is
flushed per row for pipelines; the JSON array is closed by :meth:`ReportWriter.close`, which the
scan calls on Ctrl-C too. A report cut off mid-row (a killed scan) is resumed by cutting the
partial row and appending: :func:`read_report` finds where the last complete row ends.

Whatever a name or a cell holds, a report is UTF-8 text that reads back to the same rows:

- a file or member name that is not UTF-8 (``os.fsdecode`` gives lone surrogates) is written as
  readable text with its bytes escaped (:func:`name_text`) and, in JSON rows, its exact bytes
  (``path_bytes``/``member_bytes``, base64);
- a CSV cell that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab, CR first)
  gets a ``'`` in front (:func:`csv_cell`), as OWASP advises; JSON keeps the text exact.

Reading a report back (resume) undoes both, so its rows match the names the walk gives.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from typing import IO, Any

from .schema import COLUMNS, filled, typed

FORMATS = ("csv", "json", "jsonl")
NAME_FIELDS = ("path", "member")  # names from the input: written by name_text, with *_bytes in JSON
NAME_BYTES = tuple(f"{key}_bytes" for key in NAME_FIELDS)
FORMULA_STARTS = frozenset("=+-@\t\r")  # a spreadsheet runs a cell that begins with one of these (OWASP)

_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPE_LIKE = re.compile(r"\\(?:\\|x[0-9A-Fa-f]{2})")  # what name_from_text reads as an escape
_TO_ESCAPE = re.compile("[\\\\\udc80-\udcff]")  # a backslash, or a byte that is not UTF-8


def name_text(name: str) -> str:
    """A file or member name as report text: readable and unambiguous (:func:`name_from_text` undoes it).

    A name that is valid UTF-8 and holds no backslash that reads as an escape (``\\\\`` or ``\\x``
    and two hex digits) is its own text. Any other is written from its bytes (``os.fsencode``):
    every backslash doubled and each byte that is not part of valid UTF-8 as ``\\xHH``, e.g.
    ``bad\\xff\\xfe.png`` for the bytes ``bad 0xFF 0xFE .png``.
    """
    if name.isascii() and "\\" not in name:
        return name  # nearly every name, at no cost
    if not _SURROGATE.search(name) and not _ESCAPE_LIKE.search(name):
        return name
    return _TO_ESCAPE.sub(_escape, _name_bytes(name).decode("utf-8", "surrogateescape"))


def name_from_text(text: str) -> str:
    """The name whose :func:`name_text` is ``text``: ``\\\\`` is a backslash, ``\\xHH`` a byte."""
    if "\\" not in text or not _ESCAPE_LIKE.search(text):
        return text
    data, pos = bytearray(), 0
    for m in _ESCAPE_LIKE.finditer(text):
        data += text[pos : m.start()].encode("utf-8", "surrogatepass")
        data += b"\\" if m.group() == "\\\\" else bytes([int(m.group()[2:], 16)])
        pos = m.end()
    data += text[pos:].encode("utf-8", "surrogatepass")
    return os.fsdecode(bytes(data))


def _name_bytes(name: str) -> bytes:
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:  # a lone surrogate no file system decoding makes (not from a walk or a list)
        return name.encode("utf-8", "surrogatepass")


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    return "\\\\" if c == "\\" else _escape_surrogate(m)


def _escape_surrogate(m: re.Match[str]) -> str:
    """A byte that was not UTF-8 (U+DC80..U+DCFF, as surrogateescape keeps it) as \\xHH; any other as \\uXXXX."""
    code = ord(m.group())
    return f"\\x{code - 0xDC00:02x}" if code >= 0xDC80 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """Text fit for a UTF-8 report (an error message, a note): a lone surrogate as ``\\xHH`` or ``\\uXXXX``."""
    return text if text.isascii() else _SURROGATE.sub(_escape_surrogate, text)


def csv_cell(text: str) -> str:
    """A CSV cell no spreadsheet runs: one ``'`` before text that begins with a formula character,
    after any number of ``'`` (zero included); :func:`csv_value` takes it off again."""
    return "'" + text if text.lstrip("'")[:1] in FORMULA_STARTS else text


def csv_value(cell: str) -> str:
    """The text of a cell :func:`csv_cell` wrote."""
    return cell[1:] if cell[:1] == "'" and cell.lstrip("'")[:1] in FORMULA_STARTS else cell


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row as JSON writes it: names by name_text, with their bytes when that is not the name itself."""
    out = row
    for key in NAME_FIELDS:
        name = row.get(key)
        if isinstance(name, str) and (text := name_text(name)) != name:
            if out is row:
                out = dict(row)
            out[key] = text
            out[f"{key}_bytes"] = base64.b64encode(_name_bytes(name)).decode("ascii")
    return out


def _printable_all(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): _printable_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable_all(v) for v in value]
    return value


def format_for(path: str | None, explicit: str | None) -> str:
    """The report format: explicit, else from the file extension, else JSON Lines."""
    if explicit:
        if explicit not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {explicit!r}")
        return explicit
    if path:
        ext = path.rsplit(".", 1)[-1].lower() if "." in path else ""
        if ext in FORMATS:
            return ext
        if ext == "ndjson":
            return "jsonl"
        raise ValueError(f"cannot tell the report format from {path!r}; add --format csv|json|jsonl")
    return "jsonl"


class ReportWriter:
    """Writes rows as they come; ``close`` finishes the document (the JSON array's bracket).

    ``continued`` = rows already in a resumed report: no new CSV header, no new JSON bracket.
    """

    def __init__(self, stream: IO[str], fmt: str, continued: int | None = None) -> None:
        self.stream, self.fmt = stream, fmt
        self.rows = continued or 0
        if fmt == "csv":
            self._csv = csv.DictWriter(stream, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\r\n")
            if continued is None:
                self._csv.writeheader()
        elif fmt == "json" and continued is None:
            stream.write("[")

    def write(self, row: dict[str, Any]) -> None:
        if self.fmt == "csv":
            self._csv.writerow({k: _csv_text(k, row.get(k)) for k in COLUMNS})
        else:
            # One row per line: no raw newlines inside (json.dumps escapes them), so resume can find rows.
            out = _json_row(row)
            text = json.dumps(out, ensure_ascii=False)
            if not text.isascii() and _SURROGATE.search(text):  # e.g. an error message quoting such a name
                text = json.dumps(_printable_all(out), ensure_ascii=False)
            if self.fmt == "json":
                self.stream.write(("," if self.rows else "") + "\n" + text)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()
        self.rows += 1

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n" if self.rows else "]\n")
        self.stream.flush()


def _csv_text(column: str, value: Any) -> Any:
    if value is None:
        return ""
    if not isinstance(value, str):
        return value  # numbers: never a formula, left as they are
    return csv_cell(name_text(value) if column in NAME_FIELDS else printable(value))


class ReportError(ValueError):
    """A report that can't be resumed; the message says why."""


@dataclass
class ExistingReport:
    """What a report already holds: enough to skip its inputs and append after its last full row."""

    keys: list[tuple[str, str, str]] = field(default_factory=list)  # (path, member, sha256) per row
    models: set[str] = field(default_factory=set)
    thresholds: set[float] = field(default_factory=set)
    bands: set[float | None] = field(default_factory=set)  # band_low of the rows with a threshold (None: no band)
    end: int = 0  # byte offset just after the last complete row
    dropped: int = 0  # bytes of a partial last row (a killed scan) to cut
    columns: tuple[str, ...] = COLUMNS  # a CSV's header: an older forensix's has fewer columns

    @property
    def rows(self) -> int:
        return len(self.keys)

    def add(self, row: dict[str, Any]) -> None:
        """One row as read back: a JSON row's fields, or a CSV row's cells after :func:`csv_value`."""
        path, member = (_read_name(row, key) for key in NAME_FIELDS)
        self.keys.append((path, member, str(row.get("sha256") or "")))
        if row.get("model"):
            self.models.add(str(row["model"]))
        if row.get("threshold") not in (None, ""):
            self.thresholds.add(float(row["threshold"]))
            self.bands.add(None if row.get("band_low") in (None, "") else float(row["band_low"]))


def _read_name(row: dict[str, Any], key: str) -> str:
    """The name the walk gave: from its exact bytes when the row has them, else from its text."""
    exact = row.get(f"{key}_bytes")
    if isinstance(exact, str) and exact:
        try:
            return os.fsdecode(base64.b64decode(exact, validate=True))
        except (binascii.Error, ValueError):
            pass  # not ours: the text says the same
    return name_from_text(str(row.get(key) or ""))


def _csv_records(data: bytes) -> list[tuple[bytes, int]]:
    """Complete CSV records and their end offsets: a CRLF ends a record only outside quotes."""
    records, start, quotes, pos = [], 0, 0, 0
    while True:
        nl = data.find(b"\r\n", pos)
        if nl < 0:
            return records
        quotes += data.count(b'"', pos, nl)
        pos = nl + 2
        if quotes % 2 == 0:  # balanced: the CRLF is a record end, not inside a quoted field
            records.append((data[start:nl], pos))
            start, quotes = pos, 0


def _read_csv(data: bytes, name: str, report: ExistingReport) -> ExistingReport:
    records = _csv_records(data)
    if not records:
        return report  # empty or a partial header: start over
    header = tuple(next(csv.reader([records[0][0].decode("utf-8")])))
    if not _is_forensix_header(header):
        raise ReportError(f"{name}: its header is not a forensix report's")
    report.columns = header
    for record, end in records[1:]:
        values = next(csv.reader(io.StringIO(record.decode("utf-8"), newline="")))
        report.add(dict(zip(header, map(csv_value, values))))
        report.end = end
    report.end = max(report.end, records[0][1])
    return report


def _is_forensix_header(header: tuple[str, ...]) -> bool:
    """Today's columns, or an older forensix's: some of them, in today's order, the row keys among them."""
    order = {c: i for i, c in enumerate(COLUMNS)}
    places = [order.get(c, -1) for c in header]
    return {"path", "member", "sha256"} <= set(header) and min(places) >= 0 and places == sorted(set(places))


def _read_lines(data: bytes, name: str, fmt: str, report: ExistingReport) -> ExistingReport:
    """JSON Lines, or forensix's JSON array (one row per line between '[' and ']')."""
    pos = 0
    if fmt == "json":
        if not data.startswith(b"["):
            if data.strip():
                raise ReportError(f"{name}: not a JSON array written by forensix")
            return report
        pos = report.end = 1
    while pos < len(data):
        nl = data.find(b"\n", pos)
        line_end = nl if nl >= 0 else len(data)
        line = data[pos:line_end].strip()
        if fmt == "json":
            line = line.removesuffix(b",")
            if line == b"]":
                break
        if line:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                # Only the last row may be cut off (by a killed scan); anything else is not ours.
                if nl >= 0 and data[nl + 1 :].strip() not in (b"", b"]"):
                    raise ReportError(f"{name}: byte {pos} is not a report row") from None
                break
            if nl < 0 and fmt == "jsonl":
                break  # a JSONL row is complete only with its newline
            if not isinstance(row, dict):
                raise ReportError(f"{name}: byte {pos} is not a report row")
            report.add(row)
            report.end = pos + len(data[pos:line_end].rstrip().removesuffix(b",")) if fmt == "json" else line_end + 1
        if nl < 0:
            break
        pos = nl + 1
    return report


def read_report(path: str | os.PathLike[str], fmt: str) -> ExistingReport:
    """The rows of an existing report (a missing or empty file has none)."""
    try:
        return _read(path, fmt, ExistingReport())
    except FileNotFoundError:
        return ExistingReport()
    except ReportError as e:
        raise ReportError(f"{e}; not resuming into it") from None


class _RowsRead(ExistingReport):
    """A report read whole: each complete row kept as well."""

    def __init__(self) -> None:
        super().__init__()
        self.full: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        super().add(row)
        self.full.append(row)


def read_rows(path: str | os.PathLike[str], fmt: str | None = None) -> list[dict[str, Any]]:
    """Every complete row of a report as the scan made it (a row cut off by a killed scan is left out).

    Names are the walk's again (:func:`name_from_text`, or their exact bytes), a CSV's cells their
    values (numbers as numbers, empty as None: :func:`forensix.schema.typed`); JSON rows keep their
    nested fields. ``fmt`` defaults to the file's extension. Raises OSError, or ReportError for a file
    that is not a forensix report.
    """
    fmt = format_for(os.fspath(path), fmt)
    report = _read(path, fmt, _RowsRead())
    rows = []
    for number, (row, (file_path, member, _)) in enumerate(zip(report.full, report.keys), 1):
        try:
            row = typed(row) if fmt == "csv" else filled({k: v for k, v in row.items() if k not in NAME_BYTES})
        except ValueError as e:
            raise ReportError(f"{os.fspath(path)}: row {number}: {e}") from None
        rows.append({**row, "path": file_path, "member": member})
    return rows


def _read(path: str | os.PathLike[str], fmt: str, report: ExistingReport) -> ExistingReport:
    with open(path, "rb") as f:
        data = f.read()
    name = os.fspath(path)
    try:
        report = _read_csv(data, name, report) if fmt == "csv" else _read_lines(data, name, fmt, report)
    except UnicodeDecodeError:
        raise ReportError(f"{name}: not UTF-8 text") from None
    tail = data[report.end :]
    report.dropped = 0 if fmt == "json" and tail.strip() == b"]" else len(tail)  # a closing bracket is no row
    return report


def open_for_resume(path: str | os.PathLike[str], fmt: str, existing: ExistingReport) -> tuple[IO[str], int | None]:
    """Cut a partial last row, open to append; returns the stream and ``continued`` for ReportWriter.

    A CSV written by an older forensix (fewer columns) is first rewritten under today's header, its
    rows' new columns empty, so that the report stays one table.
    """
    if existing.end == 0:  # nothing usable: write a fresh report
        return open(path, "w", newline="", encoding="utf-8"), None
    if fmt == "csv" and existing.columns != COLUMNS:
        _upgrade_csv(path, existing)
    else:
        with open(path, "r+b") as f:
            f.truncate(existing.end)
    return open(path, "a", newline="", encoding="utf-8"), existing.rows


def _upgrade_csv(path: str | os.PathLike[str], existing: ExistingReport) -> None:
    """Rewrite the complete rows under COLUMNS, through a temporary file renamed over the report."""
    with open(path, "rb") as f:
        text = f.read(existing.end).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    temporary = f"{os.fspath(path)}.upgrade"
    with open(temporary, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS, restval="", lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(reader)
    os.replace(temporary, path)
