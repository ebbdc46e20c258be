"""Hold Ctrl-C and SIGTERM off a few steps that must not be cut in half.

Python raises ``KeyboardInterrupt`` at whichever bytecode the main thread is running. Landing in
the middle of receiving a batch from a DataLoader worker, it broke the file-descriptor handshake
(the worker's sharing thread printed a traceback) or left a half-built torch object whose
destructor then failed; landing in the middle of writing a row, it would cut the row. Inside
``deferred_interrupts()`` such a signal is noted and delivered, to whatever handler was there
before, as soon as the step ends. A second one is delivered at once: the way out of a step that
hangs.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Run the body with SIGINT and SIGTERM held until it ends (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in DEFERRED}
    pending: list[tuple[int, FrameType | None]] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        if pending:  # asked twice: stop now
            pending.clear()
            _restore(previous)
            _deliver(previous[signum], signum, frame)
        else:
            pending.append((signum, frame))

    for signum in DEFERRED:
        signal.signal(signum, hold)
    try:
        yield
    finally:
        _restore(previous)
        if pending:
            signum, frame = pending[0]
            _deliver(previous[signum], signum, frame)


def _restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _deliver(handler: Any, signum: int, frame: FrameType | None) -> None:
    if callable(handler):
        handler(signum, frame)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)  # the default action, e.g. SIGTERM ends the process
    # SIG_IGN, or a handler installed from C (None): nothing for Python to do
