"""A live status line for long scans: images, images/s, errors, and an ETA once the inputs are counted.

The total is not known up front (a list on stdin, folders of millions of files), so a background
thread counts the input entries without reading them while the scan runs; the ETA appears when it
is done (never for a compressed tar, which only decompressing it all again would count). Only the
rich display lives here; the numbers come from :class:`forensix.pipeline.ScanStats`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .stages.rows import ScanStats


class ScanProgress:
    """Context manager: ``update()`` after each row; ``count`` runs in a daemon thread for the total."""

    def __init__(self, console: Console, stats: ScanStats, count: Callable[[], int | None] | None = None) -> None:
        self.stats = stats
        self.total: int | None = None
        self._progress = Progress(
            TextColumn("[bold]inputs"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} img/s · {task.fields[errors]} errors"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            refresh_per_second=4,
        )
        self._task = self._progress.add_task("scan", total=None, rate="-", errors=0)
        self._count = count

    def _count_in_background(self) -> None:
        assert self._count is not None
        try:
            self.total = self._count()
        except Exception:  # an ETA is a nicety; the scan itself reports every input problem
            self.total = None

    def __enter__(self) -> ScanProgress:
        self._progress.start()
        if self._count is not None:
            threading.Thread(target=self._count_in_background, name="forensix-count", daemon=True).start()
        return self

    def update(self) -> None:
        s = self.stats
        task = self._progress.tasks[0]
        elapsed = task.elapsed or 0.0
        rate = f"{s.images / elapsed:.1f}" if elapsed > 0 else "-"
        self._progress.update(self._task, completed=s.entries, total=self.total, rate=rate, errors=s.errors)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:  # finished: every entry was seen, whether or not the count thread got there
            self.total = self.stats.entries
        self.update()
        self._progress.stop()
