"""The report row: one schema from which the CSV header, the JSON fields and every new row follow.

Rows travel as plain dicts (workers fill them in, writers stream them); :class:`Row` is where their
fields, defaults and order are declared. docs/scan.md's report table lists exactly these fields
(a test holds it to that).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .inputs import InputItem

JSON_ONLY = {"json_only": True}  # nested or secondary fields: in JSON/JSONL rows, not CSV columns


@dataclass
class Row:
    """One input image's verdict. Fields in CSV column order; the JSON-only ones come last."""

    path: str  # the file, or the archive a member came from
    member: str = ""  # the archive member's name
    sha256: str = ""  # of the image's bytes
    verdict: str = "error"  # real | fake | uncertain | error
    score: float | None = None  # P(fake); None on error
    threshold: float | None = None
    band_low: float | None = None  # the uncertain band is [band_low, threshold); None: no band
    model: str = ""  # name@short hash of the weights
    width: int | None = None
    height: int | None = None
    format: str = ""
    notes: str = ""
    mask: str = ""  # the overlay PNG
    mask_fraction: float | None = None
    source: str = ""  # the attributor's most likely source
    source_score: float | None = None
    error: str = ""
    # Present only when filled in (the notes were read, the mask files written).
    metadata: dict[str, Any] | None = field(default=None, metadata=JSON_ONLY)
    mask_map: str | None = field(default=None, metadata=JSON_ONLY)
    watermark: dict[str, Any] | None = field(default=None, metadata=JSON_ONLY)  # forensix.watermarks
    # Filled in by the report writers, for a name whose text in the report is not the name itself
    # (not UTF-8, or backslashes doubled): its exact bytes, base64 (report.name_text).
    path_bytes: str | None = field(default=None, metadata=JSON_ONLY)
    member_bytes: str | None = field(default=None, metadata=JSON_ONLY)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Row) if not f.metadata.get("json_only"))
FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Row))
_BLANK = {f.name: None if f.default is MISSING else f.default for f in fields(Row) if f.name in COLUMNS}


def new_row(item: InputItem) -> dict[str, Any]:
    """The row of an input entry before it is read: every CSV column, an error if listing it failed."""
    return {**_BLANK, "path": item.path, "member": item.member, "error": item.error}


def filled(row: dict[str, Any]) -> dict[str, Any]:
    """A row read back with every CSV column, those it lacks at their defaults (an older forensix's row)."""
    return {**_BLANK, **row}


def _cell_type(annotation: str) -> type | None:
    return next((t for t in (int, float) if annotation.startswith(t.__name__)), None)


_CELL_TYPES = {f.name: t for f in fields(Row) if f.name in COLUMNS and (t := _cell_type(str(f.type)))}


def typed(cells: dict[str, str]) -> dict[str, Any]:
    """A CSV row's cells as a row's values: numbers as numbers, an empty number as None, text as text.

    A column missing from the CSV (an older forensix's) takes the field's default. Raises ValueError
    naming the column of a number that is not one.
    """
    row = dict(_BLANK)
    for name, cell in cells.items():
        kind = _CELL_TYPES.get(name)
        try:
            row[name] = cell if kind is None else (kind(cell) if cell != "" else None)
        except ValueError:
            raise ValueError(f"{name} is not a number: {cell[:40]!r}") from None
    return row
