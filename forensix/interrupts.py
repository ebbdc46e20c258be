"""Hold Ctrl-C and SIGTERM off a few steps that must not be cut in half.

Python raises ``KeyboardInterrupt`` at whichever bytecode the main thread is running. Landing in
the middle of receiving a batch from a DataLoader worker, it broke the file-descriptor handshake
(the worker's sharing thread printed a traceback) or left a half-built torch object whose
destructor then failed; landing in the middle of writing a row, it would cut the row. Inside
``held_interrupts()`` such a signal is noted and delivered, to whatever handler was there before,
as soon as the step ends. A second one is delivered at once: the way out of a step that hangs.

Alone, ``held_interrupts()`` installs its handler on entry and restores the previous one on exit
(about 16 µs: fine per batch). A loop that holds signals per row runs inside
``interrupt_gate()``, which installs the handler once; ``held_interrupts()`` then only counts.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


class _Gate:
    """The process's one state: the handlers replaced, how deep we are in held steps, what arrived."""

    previous: dict[int, Any] | None = None  # None: our handler is not installed
    holding = 0
    pending: tuple[int, FrameType | None] | None = None

    def install(self) -> None:
        self.previous = {signum: signal.getsignal(signum) for signum in HANDLED}
        for signum in HANDLED:
            signal.signal(signum, self.handle)

    def restore(self) -> None:
        assert self.previous is not None
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.holding and self.pending is None:
            self.pending = (signum, frame)
            return
        self.pending = None  # not held, or asked twice: now
        self.deliver(signum, frame)

    def deliver(self, signum: int, frame: FrameType | None) -> None:
        """Hand the signal to the handler that was there before ours."""
        assert self.previous is not None
        handler = self.previous[signum]
        if callable(handler):
            handler(signum, frame)
        elif handler == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)  # the default action: SIGINT and SIGTERM end the process
        # SIG_IGN, or a handler installed from C (None): nothing for Python to do


_gate = _Gate()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def interrupt_gate() -> Iterator[None]:
    """Keep the handler installed for the body, so that ``held_interrupts()`` inside it costs only a count."""
    if not _main_thread() or _gate.previous is not None:
        yield
        return
    _gate.install()
    try:
        yield
    finally:
        _gate.restore()


class held_interrupts:  # lower case, as contextlib.suppress: used as ``with held_interrupts():``
    """Run the body with SIGINT and SIGTERM held until it ends (main thread only; elsewhere a no-op)."""

    __slots__ = ("active", "temporary")

    def __enter__(self) -> None:
        self.active = _main_thread()
        if not self.active:
            return
        self.temporary = _gate.previous is None
        if self.temporary:
            _gate.install()
        _gate.holding += 1

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if not self.active:
            return
        _gate.holding -= 1
        pending = None
        if _gate.holding == 0:
            pending, _gate.pending = _gate.pending, None
        try:
            if pending is not None:
                _gate.deliver(*pending)
        finally:
            if self.temporary:
                _gate.restore()
