"""A sharded report: a folder of JSON Lines shards and an index, for scans whose rows come faster
than one process could write them (``forensix scan --engine ray --out DIR/``, docs/scale.md).

The folder holds:

- ``shard-<k>-<run>.jsonl``: the rows of shard ``k``, the inputs of ``shard_blocks`` consecutive
  blocks of the input stream, in input order; written whole by the Ray task that made them (a
  temporary name, then renamed), never by the driver. ``<run>`` tells one scan's files from another's.
- ``index.jsonl``: the report's table of contents, written only by the driver, one whole line at a
  time: first a header (the block and shard sizes the shards were cut with), then one line per
  shard committed, in shard order (its file, rows, bytes, the digest of its inputs' names, what
  made its rows, its counts); last, once the scan has ended, ``{"complete": true, ...}``.

The report is the shards the index lists, in that order: a shard file it does not list (a scan
interrupted before the driver committed it) is not part of it, and the next resume removes it.
Since shards are committed in order, the index always lists a prefix of the input stream, which is
all a resume needs: the walk skips the shards committed whose inputs have the same names in the same
order (:func:`names_digest`), and scans again from the first that differs. A line cut off by a
killed driver is ignored.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .report import ExistingReport, ReportError, ReportWriter, read_rows
from .stages.rows import ScanStats

INDEX = "index.jsonl"
META = "meta.json"  # the scan's provenance (scan_report writes it)
FORMAT = "forensix-shards"
VERSION = 1
_SHARD_FILE = re.compile(r"shard-\d{6,}-[0-9a-f]{8}\.jsonl(\.\d+\.tmp)?|index\.jsonl\.\d+\.tmp")


@dataclass(frozen=True)
class Layout:
    """How the input stream was cut: what a resume must cut the same way."""

    block_size: int  # entries a block
    block_bytes: int  # held bytes that end a block early (compressed archives' members)
    shard_blocks: int  # blocks a shard


@dataclass
class ShardLine:
    """One committed shard, as its index line says."""

    shard: int
    file: str
    rows: int
    entries: int  # inputs it covers, non-images included
    names: str  # names_digest of those inputs
    bytes: int
    sha256: str
    model: str
    threshold: float
    band_low: float | None
    stats: ScanStats = field(default_factory=ScanStats)

    def text(self) -> str:
        return json.dumps({**asdict(self), "stats": asdict(self.stats)}, ensure_ascii=True)

    @classmethod
    def parse(cls, record: dict[str, Any]) -> ShardLine:
        return cls(**{**record, "stats": ScanStats(**record["stats"])})


def names_digest(names: Iterable[tuple[str, str]]) -> str:
    """What identifies a shard's inputs before any is read: their (path, member) names, in order."""
    h = hashlib.blake2b(digest_size=16)
    for path, member in names:
        h.update(f"{path}\0{member}\0".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def shard_size_blocks(shard_size: int, block_size: int) -> int:
    """Blocks a shard for ``shard_size`` inputs (at least one block)."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {shard_size}")
    return max(1, -(-shard_size // block_size))


def write_shard(folder: Path, shard: int, run: str, rows: list[dict[str, Any]]) -> tuple[str, int, str]:
    """The rows as shard ``shard``'s file, whole or not at all; returns its name, size and sha256."""
    text = io.StringIO()
    writer = ReportWriter(text, "jsonl")
    for row in rows:
        writer.write(row)
    data = text.getvalue().encode("utf-8")
    name = f"shard-{shard:06d}-{run}.jsonl"
    tmp = folder / f"{name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, folder / name)
    return name, len(data), hashlib.sha256(data).hexdigest()


class ShardIndex:
    """A sharded report's index, opened to be written by one scan (the driver's)."""

    def __init__(self, folder: Path, layout: Layout, committed: list[ShardLine] | None = None) -> None:
        self.folder, self.layout, self.committed = folder, layout, committed or []
        self.run = secrets.token_hex(4)  # this scan's shard files
        self.stream_shards: int | None = None  # shards in the whole input stream, once walked
        self._file: io.TextIOWrapper | None = None

    @property
    def path(self) -> Path:
        return self.folder / INDEX

    @classmethod
    def new(cls, folder: Path, layout: Layout) -> ShardIndex:
        """A new report in ``folder``: a new folder, an empty one, or one holding a sharded report
        (which it replaces); nothing written yet."""
        if folder.is_dir() and not (folder / INDEX).exists() and any(folder.iterdir()):
            raise ReportError(
                f"--out {folder}: the folder holds files and no forensix {INDEX}; "
                "a sharded report goes into a new or empty folder"
            )
        return cls(folder, layout)

    @classmethod
    def resumed(cls, folder: Path, layout: Layout) -> ShardIndex:
        """The report in ``folder`` to go on with (none there: a new one), checked; nothing written yet."""
        if not (folder / INDEX).exists():
            return cls.new(folder, layout)
        was, committed, _ = read_index(folder)
        if was.block_bytes != layout.block_bytes:
            raise ReportError(
                f"{folder} was cut by a forensix whose blocks end at {was.block_bytes} bytes held, "
                f"not {layout.block_bytes}: use a new --out"
            )
        if was != layout:
            raise ReportError(
                f"{folder} was cut in blocks of {was.block_size} inputs, {was.shard_blocks} blocks a shard "
                f"(now {layout.block_size} and {layout.shard_blocks}): pass --ray-block {was.block_size} "
                f"--shard-size {was.block_size * was.shard_blocks} (and a --batch-size of at most {was.block_size}) "
                "to resume it, or use a new --out"
            )
        for line in committed:
            try:
                size = (folder / line.file).stat().st_size
            except OSError:
                missing = f"{folder}: shard {line.shard}'s file {line.file} is missing; use a new --out"
                raise ReportError(missing) from None
            if size != line.bytes:
                raise ReportError(f"{folder}: {line.file} holds {size} bytes, not {line.bytes}; use a new --out")
        return cls(folder, layout, committed)

    def start(self) -> None:
        """Write the index as it stands (a new report replaces any sharded report there was; a resumed
        one loses a cut last line and its end) and remove the shard files it does not list."""
        _make_folder(self.folder)
        self._rewrite()
        self.remove_unlisted()

    def existing(self) -> ExistingReport:
        """What the rows committed were made with (a resume checks them: ``check_resumable``)."""
        report = ExistingReport()
        for line in self.committed:
            report.models.add(line.model)
            report.thresholds.add(line.threshold)
            report.bands.add(line.band_low)
        return report

    @property
    def rows(self) -> int:
        return sum(line.rows for line in self.committed)

    def commit(self, line: ShardLine) -> None:
        """Add the next shard (its file written) to the report."""
        if line.shard != len(self.committed):
            raise RuntimeError(f"shard {line.shard} committed after shard {len(self.committed) - 1}")
        self._append(line.text())
        self.committed.append(line)

    def keep(self, shards: int) -> list[ShardLine]:
        """Only the first ``shards`` committed shards stay in the report (the inputs from there on
        changed since they were scanned); returns those dropped."""
        dropped = self.committed[shards:]
        if dropped:
            self.committed = self.committed[:shards]
            self._rewrite()
        return dropped

    def finish(self) -> None:
        """The scan has walked every input, and every shard is committed: the report is complete."""
        self._append(json.dumps({"complete": True, "shards": len(self.committed), "rows": self.rows}))
        self.remove_unlisted()

    def remove_unlisted(self) -> None:
        """Delete the shard files the index does not list (uncommitted or superseded, never part of the
        report) and temporary files of an interrupted scan; nothing else."""
        listed = {line.file for line in self.committed}
        for entry in os.scandir(self.folder):
            if _SHARD_FILE.fullmatch(entry.name) and entry.name not in listed:
                os.unlink(entry.path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _append(self, text: str) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(text + "\n")
        self._file.flush()

    def _rewrite(self) -> None:
        """The index as it stands, replacing the file at once (a new name, then renamed)."""
        self.close()
        header = {"format": FORMAT, "version": VERSION, **asdict(self.layout)}
        tmp = self.path.with_name(f"{INDEX}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(t + "\n" for t in [json.dumps(header), *(line.text() for line in self.committed)]))
        os.replace(tmp, self.path)


def read_index(folder: Path) -> tuple[Layout, list[ShardLine], bool]:
    """A sharded report's layout, its committed shards in order, and whether the scan ended."""
    path = folder / INDEX
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ReportError(f"{folder}: no {INDEX}; not a sharded forensix report") from None
    lines = data.split(b"\n")
    whole = lines[:-1]  # the last is cut off (a killed driver) or empty
    try:
        header = json.loads(whole[0]) if whole else None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError("no forensix-shards header")
        if header.get("version") != VERSION:
            raise ValueError(f"version {header.get('version')}, this forensix reads {VERSION}")
        layout = Layout(header["block_size"], header["block_bytes"], header["shard_blocks"])
        committed, complete = [], False
        for number, text in enumerate(whole[1:], 2):
            record = json.loads(text)
            if record.get("complete"):
                complete = True
                continue
            line = ShardLine.parse(record)
            if line.shard != len(committed):
                raise ValueError(f"line {number} is shard {line.shard}, not {len(committed)}")
            committed.append(line)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise ReportError(f"{path}: not a forensix shard index ({e})") from None
    return layout, committed, complete


def shard_rows(folder: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every row of a sharded report, in input order: the shards its index lists, one after another."""
    folder = Path(folder)
    _, committed, _ = read_index(folder)
    for line in committed:
        yield from read_rows(folder / line.file, "jsonl")


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"--out {folder}: cannot create the folder ({e.strerror or e})") from None
