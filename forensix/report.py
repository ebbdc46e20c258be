"""Streaming report writers: CSV (RFC 4180), JSON (one array), JSON Lines (flushed per row)."""

from __future__ import annotations

import csv
import json
from typing import IO, Any

COLUMNS = (
    "path",
    "member",
    "sha256",
    "verdict",
    "score",
    "threshold",
    "model",
    "width",
    "height",
    "format",
    "notes",
    "mask",
    "error",
)
FORMATS = ("csv", "json", "jsonl")


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
    """Writes rows as they come; ``close`` finishes the document (the JSON array's bracket)."""

    def __init__(self, stream: IO[str], fmt: str) -> None:
        self.stream, self.fmt, self.rows = stream, fmt, 0
        if fmt == "csv":
            self._csv = csv.DictWriter(stream, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\r\n")
            self._csv.writeheader()
        elif fmt == "json":
            stream.write("[")

    def write(self, row: dict[str, Any]) -> None:
        if self.fmt == "csv":
            self._csv.writerow({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS})
        else:
            text = json.dumps(row, ensure_ascii=False)
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
