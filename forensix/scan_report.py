"""A whole scan into a report file: what ``forensix scan`` guarantees, for library callers too.

:func:`write_report` drives :class:`forensix.pipeline.Scanner` into a :class:`forensix.report.ReportWriter`
and promises:

- one row per input image, in input order, in CSV, JSON or JSON Lines;
- a valid report after Ctrl-C or SIGTERM: no row is cut in half, the row the scanner had finished
  when the signal came is still written, the JSON array is closed;
- resume with no duplicate and no gap: inputs already in the report are skipped (by path, member
  and sha256), a row cut off by a killed scan is dropped, and a report made with another model,
  threshold, limits or notes setting is refused, since its rows would not be comparable;
- the ``.meta.json`` sidecar saying what produced the report (what resume checks against);
- a masks folder that exists and is writable before the first image is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from .inputs import InputSpec
from .interrupts import held_interrupts, interrupt_gate
from .pipeline import ResumeIndex, Scanner, ScanOptions, ScanStats
from .ray_options import DEFAULT_SHARD_SIZE, Plan, is_sharded
from .report import COLUMNS, ExistingReport, ReportError, ReportWriter, format_for, open_for_resume, read_report
from .shards import META, Layout, ShardIndex, ShardLine, shard_size_blocks
from .stages.loader import LoaderOptions

if TYPE_CHECKING:
    from .attributor import Attributor
    from .cache import PredictionCache
    from .detector import Detector
    from .localizer import Localizer

META_SUFFIX = ".meta.json"
SHARDS = "shards"  # the format of a sharded report (a folder)


Count = Callable[[], int | None]  # the number of entries, for a progress bar's total; None: unknown


class ProgressDisplay(Protocol):
    """A live display: entered for the scan, ``update()`` after every row (``forensix.progress.ScanProgress``)."""

    def __enter__(self) -> object: ...

    def __exit__(self, *exc: object) -> object: ...

    def update(self) -> None: ...


@dataclass
class ScanSummary:
    """What one :func:`write_report` call did."""

    stats: ScanStats  # rows written now (``images``), fake / real / errors, non-images skipped, inputs resumed
    interrupted: bool  # Ctrl-C or SIGTERM ended the scan; the report still holds every row counted and is valid
    elapsed_s: float
    format: str  # csv | json | jsonl
    meta_path: Path | None  # the sidecar written, if any
    previous_rows: int = 0  # rows the resumed report already held
    added_columns: tuple[str, ...] = ()  # a resumed CSV of an older forensix: the columns it gained
    notices: list[str] = field(default_factory=list)  # how the scan ran, for the user (Scanner.notices)

    @property
    def rows(self) -> int:
        """Rows this call wrote."""
        return self.stats.images


def write_report(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | InputSpec,
    detector: Detector,
    out: str | os.PathLike[str] | IO[str],
    resume: bool = False,
    *,
    format: str | None = None,
    meta: str | os.PathLike[str] | bool = True,
    localizer: Localizer | None = None,
    attributor: Attributor | None = None,
    cache: PredictionCache | None = None,
    progress: Callable[[ScanStats, Count], ProgressDisplay] | None = None,
    log: Callable[[str], None] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    **options: Any,
) -> ScanSummary:
    """Scan ``paths`` (files, folders, archives; one or a sequence) and write one row per image to ``out``.

    ``out`` is a report file or an open text stream (e.g. ``sys.stdout``; not closed here). The
    format is ``format``, else ``out``'s extension, else JSON Lines. A folder (an existing one, or
    a path ending in a separator; or ``format="shards"``) is a sharded report (:mod:`forensix.shards`):
    shards of about ``shard_size`` inputs written by the Ray engine's tasks (``ray`` must be set).
    ``resume=True`` appends to the report there, skipping the inputs it already holds. ``meta``: where the
    provenance sidecar goes; True = ``<out>.meta.json`` for a file, none for a stream; False = none.
    ``options`` are :class:`forensix.pipeline.ScanOptions`' fields. ``progress(stats, count)``
    makes a display for the scan (``count()`` walks the inputs for a total); ``log`` receives
    messages for people (that the report is resumed). Raises :class:`ReportError` (a ValueError)
    for a report that can't be written or resumed, and :class:`MissingInput` (a ValueError) for a
    path in ``paths`` that does not exist, before any image is read. Ctrl-C or SIGTERM
    during the scan does not raise: the report is finished and the summary says ``interrupted``.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]  # one path, not a sequence of characters
    spec = paths if isinstance(paths, InputSpec) else InputSpec.from_args([os.fspath(p) for p in paths])
    spec.check_named_paths()
    scan_options = ScanOptions(**options)
    path = Path(out) if isinstance(out, (str, os.PathLike)) else None
    if format == SHARDS or (format is None and path is not None and is_sharded(out)):  # type: ignore[arg-type]
        if path is None:
            raise ReportError("a sharded report is a folder: give its path")
        return _write_sharded(
            spec, detector, path, resume, meta, scan_options, shard_size, localizer, attributor, cache, progress, log
        )
    fmt = format_for(str(path) if path is not None else None, format)
    meta_path = _meta_path(path, meta)
    if scan_options.masks_dir is not None:
        check_masks_dir(scan_options.masks_dir)
    existing = ExistingReport()
    if resume:
        if path is None:
            raise ReportError("--resume needs --out: the report to resume")
        existing = read_report(path, fmt)
        if existing.rows:
            check_resumable(existing, detector, scan_options, path, _recorded(meta_path))
    done = ResumeIndex.from_rows(existing.keys) if existing.rows else None
    scanner = Scanner(spec, detector, scan_options, done, localizer=localizer, attributor=attributor, cache=cache)
    with _engine_ready(scan_options):
        # The sidecar first: a --meta path that cannot be written must fail before the report is touched
        # (opening the report for writing would already have emptied it).
        if meta_path is not None:
            meta_path.write_text(json.dumps(scanner.provenance(), indent=2) + "\n", encoding="utf-8")
        added: tuple[str, ...] = ()
        if resume and path is not None:
            stream, continued = open_for_resume(path, fmt, existing)
            if existing.rows:
                added = tuple(c for c in COLUMNS if c not in existing.columns)
                upgraded = f" (written by an older forensix: added the columns {', '.join(added)})" if added else ""
                if log is not None:
                    log(f"resuming {path}: {existing.rows} rows already there{upgraded}")
        elif path is not None:
            stream, continued = open(path, "w", newline="", encoding="utf-8"), None
        else:
            stream, continued = out, None  # the caller's stream, left open
        try:
            started = time.perf_counter()
            interrupted = _write_rows(scanner, ReportWriter(stream, fmt, continued), progress)
        finally:
            if path is not None:
                stream.close()
    return ScanSummary(
        scanner.stats,
        interrupted,
        time.perf_counter() - started,
        fmt,
        meta_path,
        existing.rows,
        added,
        scanner.notices,
    )


@contextmanager
def _engine_ready(options: ScanOptions) -> Iterator[None]:
    """For ``--engine ray``: connected to the cluster (a local Ray started, if none is named) and the plan
    checked against it, before the report or its sidecar is touched: a cluster that cannot be reached, or
    that cannot hold the plan, leaves an earlier report as it was and makes no new one."""
    if options.ray is None:
        yield
        return
    from .ray_engine import connected

    with connected(options.ray.address) as ray:
        Plan.on(ray.cluster_resources(), options.ray)  # what it raises, the scan would raise an instant later
        yield


def _write_sharded(
    spec: InputSpec,
    detector: Detector,
    folder: Path,
    resume: bool,
    meta: str | os.PathLike[str] | bool,
    options: ScanOptions,
    shard_size: int,
    localizer: Localizer | None,
    attributor: Attributor | None,
    cache: PredictionCache | None,
    progress: Callable[[ScanStats, Count], ProgressDisplay] | None,
    log: Callable[[str], None] | None,
) -> ScanSummary:
    """:func:`write_report` into a sharded report: the same guarantees, the index committing each
    shard in order (a resume keeps the shards whose inputs are unchanged)."""
    if options.ray is None:
        raise ReportError(f"--out {folder}: a sharded report (a folder) is written by --engine ray")
    block = options.ray.block_for(options.batch_size)
    layout = Layout(block, LoaderOptions().block_bytes, shard_size_blocks(shard_size, block))
    meta_path = folder / META if meta is True else _meta_path(None, meta)
    if options.masks_dir is not None:
        check_masks_dir(options.masks_dir)
    index = ShardIndex.resumed(folder, layout) if resume else ShardIndex.new(folder, layout)
    if index.committed:
        check_resumable(index.existing(), detector, options, folder, _recorded(meta_path))
    previous = index.rows
    scanner = Scanner(spec, detector, options, localizer=localizer, attributor=attributor, cache=cache)
    with _engine_ready(options):
        index.start()
        if meta_path is not None:
            meta_path.write_text(json.dumps(scanner.provenance(), indent=2) + "\n", encoding="utf-8")
        if previous and log is not None:
            log(f"resuming {folder}: {previous} rows in {len(index.committed)} shards already there")
        started = time.perf_counter()
        try:
            interrupted = _commit_shards(scanner, index, progress)
        finally:
            index.close()
    return ScanSummary(
        scanner.stats, interrupted, time.perf_counter() - started, SHARDS, meta_path, previous,
        notices=scanner.notices,
    )  # fmt: skip


def check_masks_dir(masks_dir: Path) -> None:
    """Create the masks folder and make sure it takes files, so that no mask is lost an hour in."""
    try:
        masks_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--masks {masks_dir}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(masks_dir, os.W_OK | os.X_OK):
        raise ValueError(f"--masks {masks_dir}: the folder is not writable")


def check_resumable(
    existing: ExistingReport, detector: Detector, options: ScanOptions, path: Path, recorded: dict[str, Any] | None
) -> None:
    """Refuse to resume a report whose rows were made differently: mixing them makes verdicts incomparable.

    The model, threshold and uncertain band are checked against the rows, the limits and the notes
    setting against the sidecar ``recorded`` (None: there is none, as for a report of an older forensix).
    """
    others = existing.models - {detector.name}
    if others:
        raise ReportError(
            f"{path} was written with model {', '.join(sorted(others))}, not {detector.name}; use a new --out"
        )
    thresholds = existing.thresholds - {detector.threshold}
    if thresholds:
        raise ReportError(
            f"{path} was written with threshold {min(thresholds)}, not {detector.threshold}; "
            f"pass --threshold {min(thresholds)} to resume it, or use a new --out"
        )
    bands = existing.bands - {detector.band_low}
    if bands:
        was = min(bands, key=lambda b: -1.0 if b is None else b)
        before = "no uncertain band" if was is None else f"the uncertain band [{was}, {detector.threshold})"
        now = "none" if detector.band_low is None else f"[{detector.band_low}, {detector.threshold})"
        # --threshold alone drops any band (the weights' too); --uncertain sets one
        how = f"pass --uncertain {was},{detector.threshold}"
        if was is None:
            how = f"pass --threshold {detector.threshold}"
        raise ReportError(f"{path} was written with {before}, not {now}; {how} to resume it, or use a new --out")
    if recorded is None:
        return
    # What the sidecar recorded (an older forensix's records fewer settings: those are not checked).
    was = {
        **recorded.get("limits", {}),
        **{k: recorded[k] for k in ("metadata", "watermarks", "c2pa_trust") if k in recorded},
    }
    for name, now in _row_settings(options).items():
        before = was.get(name)
        if name in was and (before is not None or name == "c2pa_trust") and before != now:
            raise ReportError(
                f"{path} was written with {_option(name, before)}, not {_option(name, now)}; "
                f"pass {_option(name, before)} to resume it, or use a new --out"
            )


def _row_settings(options: ScanOptions) -> dict[str, Any]:
    """The settings that change rows besides the model: what becomes an error row, whether notes are read."""
    limits = options.limits
    return {
        "max_pixels": options.max_pixels,
        "max_bytes": limits.max_bytes,
        "max_archive_bytes": limits.max_archive_bytes,
        "max_ratio": limits.max_ratio,
        "metadata": options.metadata,
        "watermarks": options.watermarks,
        "c2pa_trust": None if options.c2pa_trust is None else hashlib.sha256(options.c2pa_trust.encode()).hexdigest(),
    }


def _option(name: str, value: Any) -> str:
    """A setting as the command-line option that gives it."""
    if name in ("metadata", "watermarks"):
        return f"--{name}" if value else f"--no-{name}"
    if name == "c2pa_trust":
        return "no --c2pa-trust" if value is None else f"the --c2pa-trust file of sha256 {value[:12]}"
    return f"--{name.replace('_', '-')} {value}"


def _meta_path(path: Path | None, meta: str | os.PathLike[str] | bool) -> Path | None:
    if meta is True:
        return path.with_name(path.name + META_SUFFIX) if path is not None else None
    return Path(meta) if meta is not False else None


def _recorded(meta_path: Path | None) -> dict[str, Any] | None:
    """The sidecar of the report being resumed, if there is one."""
    if meta_path is None or not meta_path.exists():
        return None
    try:
        recorded = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ReportError(f"{meta_path}: not a forensix sidecar ({e}); move it away to resume unchecked") from None
    if not isinstance(recorded, dict):
        raise ReportError(f"{meta_path}: not a forensix sidecar; move it away to resume unchecked")
    return recorded


def _write_rows(
    scanner: Scanner, writer: ReportWriter, progress: Callable[[ScanStats, Count], ProgressDisplay] | None
) -> bool:
    """Write every row; on Ctrl-C or SIGTERM finish the report instead. Returns whether it was interrupted."""
    unwritten = None  # a row the scanner finished (and counted) that is not in the report yet
    display = progress(scanner.stats, scanner.count_entries) if progress is not None else None
    try:
        with _sigterm_interrupts(), display or nullcontext(), interrupt_gate():  # held_interrupts() then only counts
            for row in scanner:
                unwritten = row
                with held_interrupts():  # a row is written whole
                    writer.write(row)
                    unwritten = None
                if display is not None:
                    display.update()
    except KeyboardInterrupt:
        if unwritten is not None:
            writer.write(unwritten)
        return True
    finally:
        writer.close()
    return False


def _commit_shards(
    scanner: Scanner, index: ShardIndex, progress: Callable[[ScanStats, Count], ProgressDisplay] | None
) -> bool:
    """Commit every shard the scan writes, in order, and mark the report complete; on Ctrl-C or
    SIGTERM stop with the index valid (shards written but not committed are not part of the report).
    Returns whether it was interrupted."""
    unwritten = None  # a shard the scan has written and counted that the index does not list yet
    kept = False  # whether the resumed report's shards kept are known: at the first new shard, or at the end
    display = progress(scanner.stats, scanner.count_entries) if progress is not None else None

    def commit(line: ShardLine) -> None:
        nonlocal kept
        if not kept:
            kept = _keep(index, line.shard, scanner)
        index.commit(line)

    try:
        with _sigterm_interrupts(), display or nullcontext(), interrupt_gate():
            for line in scanner.shards(index):
                unwritten = line
                with held_interrupts():  # an index line is written whole
                    commit(line)
                    unwritten = None
                if display is not None:
                    display.update()
            with held_interrupts():
                assert index.stream_shards is not None
                if not kept:
                    kept = _keep(index, index.stream_shards, scanner)
                index.finish()
    except KeyboardInterrupt:
        if unwritten is not None:
            commit(unwritten)
        return True
    return False


def _keep(index: ShardIndex, shards: int, scanner: Scanner) -> bool:
    """Keep the resumed report's first ``shards`` shards (the walk found their inputs unchanged), counted
    as resumed; the rest are dropped, their inputs scanned again (those still there)."""
    dropped = index.keep(shards)
    scanner.stats.resumed += index.rows
    scanner.stats.entries += sum(line.entries for line in index.committed)
    if dropped:
        scanner.notices.append(
            f"the inputs of shards {dropped[0].shard} to {dropped[-1].shard} changed since they were scanned "
            f"(other names, or in another order): their {sum(d.rows for d in dropped)} rows were dropped, "
            "and the inputs from there on scanned again"
        )
    return True


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the scan as Ctrl-C does (a finished report), not the process mid-row; main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
