"""A time budget for one image: decoding, notes and preprocessing stop at ``--decode-timeout``.

Two limits, because a decoder runs in C:

- the soft one (:class:`TimeLimit`), everywhere it can be: a one-shot ``SIGALRM`` timer whose
  handler raises :class:`DecodeTimeout`. Python runs the handler when the C code returns to the
  interpreter, and Pillow feeds its decoders in chunks of 64 KiB from a Python loop
  (``ImageFile.load``), so a slow decode stops within one chunk's time and the image is an error
  row. Signals reach only a process's main thread: called from another thread, the builder runs
  without it;
- the hard one, only where a process may die, at ``HARD_TIMEOUT_FACTOR`` times the budget: a
  DataLoader worker that has spent that much CPU time on one image is killed by the kernel
  (:func:`forensix.workers.worker_time_limit`), and a process of its own still running after that
  long is stopped by its parent (:func:`forensix.workers.run_alone`). That is for a decoder stuck
  inside one call (thousands of progressive scans in one chunk). The loader
  then prepares the entries of that worker's block one by one, each in a process of its own, and
  the entry still running when its process is stopped becomes an error row that says so
  (:mod:`forensix.stages.loader`). The main process is never ended: with ``--workers 0`` only the
  soft limit applies.

The timer fires once: a raise swallowed on the way (a notes reader that catches every exception)
is raised again when the body ends, so the image is an error row all the same, only later.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType

from .imaging import DecodeError
from .limits import HARD_TIMEOUT_FACTOR


class DecodeTimeout(DecodeError):
    """An image whose decoding, notes or preprocessing ran past its time budget."""


def _limit(seconds: float) -> str:
    return f"the decode-timeout limit ({seconds:g} s; --decode-timeout raises it, 0 = no limit)"


def out_of_time(seconds: float) -> DecodeTimeout:
    """The error of an image that took longer than ``seconds``."""
    return DecodeTimeout(f"decoding took longer than {_limit(seconds)}")


def stopped(seconds: float) -> str:
    """Why an image's process was stopped by the hard limit of a budget of ``seconds``."""
    return f"its process was stopped still decoding it after {hard_timeout(seconds):g} s, past {_limit(seconds)}"


def hard_timeout(seconds: float) -> float | None:
    """When a process still busy with one image is ended (None: no limit)."""
    return HARD_TIMEOUT_FACTOR * seconds if seconds > 0 else None


class TimeLimit:
    """``with TimeLimit(seconds):`` raises :class:`DecodeTimeout` inside once ``seconds`` of wall-clock
    time have passed, or when it ends if that raise was swallowed; 0, or a thread other than the
    main one, sets no limit. Nor does a process whose ``SIGALRM`` is someone else's: a timer already
    running, or a handler set outside Python (which could not be put back: an embedding program's,
    libFuzzer's). The previous ``SIGALRM`` handler is put back when it ends."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.armed = False
        self.fired = False
        self.previous: signal.Handlers | object = signal.SIG_DFL

    def __enter__(self) -> TimeLimit:
        if self.seconds > 0 and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
            if signal.getitimer(signal.ITIMER_REAL)[0] > 0 or signal.getsignal(signal.SIGALRM) is None:
                return self  # SIGALRM is in use: taking it would cancel the other timer, or lose its handler
            self.previous = signal.signal(signal.SIGALRM, self._expired)
            self.armed = True
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def _expired(self, signum: int, frame: FrameType | None) -> None:
        if self.armed:  # not after __exit__ began: a late signal must not raise outside the body
            self.fired = True
            raise out_of_time(self.seconds)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.armed:
            self.armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)  # type: ignore[arg-type]
        # Raised again if swallowed, or turned into another error on the way (a decoder's wrapper).
        if self.fired and (error is None or (isinstance(error, Exception) and not isinstance(error, DecodeTimeout))):
            raise out_of_time(self.seconds) from None
