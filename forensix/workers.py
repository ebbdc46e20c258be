"""DataLoader workers that start safely from a process holding native thread pools.

Workers are forked: they start in milliseconds and share the loaded model's pages. A forked child
has only the forking thread, so an object whose destructor joins or signals threads of the parent
hangs the child if the child's garbage collector frees it: an onnxruntime session left in a
reference cycle blocks forever in ``pthread_cond_destroy`` (seen in the test suite, in whichever
worker's first allocation happened to trigger a collection). So the parent collects its garbage
(where the threads exist) and freezes every surviving object into the collector's permanent
generation while it forks: the children never collect anything of the parent's, and they also
leave its pages unwritten. The parent unfreezes as soon as its workers exist.

torch's SIGCHLD handler, which raises a dead worker's error in the main thread wherever it is, is
kept out: the loader then reports a dead worker from ``next()`` (within its 5 s status check),
the one place a caller can recover, and :func:`run_alone` runs one item in a process of its own
so that a crash ends only that process.

Both kinds of process also have a hard time limit for one image (see :mod:`forensix.timeouts`): a
worker is killed by its own CPU-time timer (:func:`worker_time_limit`), a process of
:func:`run_alone`'s is stopped by its parent.
"""

from __future__ import annotations

import faulthandler
import gc
import multiprocessing
import pickle
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch.utils.data import DataLoader, get_worker_info
from torch.utils.data._utils import signal_handling

from .interrupts import held_interrupts


def init_worker(_: int) -> None:
    # One thread per worker (the workers are the parallelism); Ctrl-C is the main process's to handle.
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


_disposable = False  # this process is a worker whose death its driver recovers from (see disposable_worker)


def disposable_worker() -> None:
    """Mark this process as a worker whose death costs nothing (a Ray task building records): its
    builds get the hard time limit of a DataLoader worker's (:func:`worker_time_limit`)."""
    global _disposable
    torch.set_num_threads(1)
    leave_interrupts_to_the_driver()
    _disposable = True


def leave_interrupts_to_the_driver() -> None:
    """In a Ray worker: Ctrl-C is the driver's, which finishes the report. Ignored by a handler, not
    ``SIG_IGN``: Ray, deferring SIGINT while it stores a task's output, calls the handler it found."""
    signal.signal(signal.SIGINT, _ignored)


def _ignored(signum: int, frame: object) -> None:
    pass


class WorkerLoader(DataLoader):
    """A DataLoader whose forked workers never collect the parent's objects (see the module's doc).

    Its workers are forked on Linux whatever the Python version (3.14 made ``forkserver`` the
    default, which would re-import torch in every worker of every loader); elsewhere they start
    the platform's default way (macOS: spawn; fork is unsafe there).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if sys.platform.startswith("linux") and kwargs.get("num_workers", 0) > 0:
            kwargs.setdefault("multiprocessing_context", "fork")
        super().__init__(*args, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        batches = super().__iter__()
        if self.num_workers == 0:
            return batches
        return _received_whole(batches)

    def _get_iterator(self) -> Any:
        if self.num_workers == 0:
            return super()._get_iterator()
        signal_handling._SIGCHLD_handler_set = True  # torch then never installs it (see the module's doc)
        with forking():
            return super()._get_iterator()  # forks the workers


@contextmanager
def forking() -> Iterator[None]:
    """Fork inside: the parent's objects are collected here, then frozen out of the children's collector."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def worker_died(error: BaseException) -> bool:
    """Whether a loader's error says one of its workers ended without a word (a crash, the OOM killer).

    torch says so in a RuntimeError; a worker that dies while handing a batch over resets or closes
    the connection its shared memory was being passed on (the only connections a loader reads).
    """
    if isinstance(error, (ConnectionError, EOFError)):
        return True
    return isinstance(error, RuntimeError) and str(error).startswith("DataLoader worker (pid")


@contextmanager
def worker_time_limit(seconds: float | None) -> Iterator[None]:
    """In a DataLoader worker, the process is killed (SIGPROF) if the body uses ``seconds`` of CPU time.

    The loader sees a dead worker and recovers (forensix.stages.loader); so does the Ray engine, in a
    process marked by :func:`disposable_worker` (forensix.ray_engine). Anywhere else, and with
    ``seconds`` None, nothing is limited: only a worker's death costs nothing. The kernel's profiling
    timer ends the process whatever it runs, a decoder holding the GIL included, and costs a system
    call (a watchdog thread per image, as faulthandler's, cost 2 ms). CPU time, not wall-clock time:
    a worker waiting for a core is not charged for it, and a decoder stuck in C spins.
    """
    if seconds is None or (get_worker_info() is None and not _disposable):
        yield
        return
    signal.signal(signal.SIGPROF, signal.SIG_DFL)  # the default action: terminate
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)


class ProcessDied(RuntimeError):
    """The process :func:`run_alone` started ended without handing a result back."""


class ProcessTimedOut(ProcessDied):
    """The process :func:`run_alone` started was still running at its time limit, and was stopped."""


T = TypeVar("T")


def run_alone(fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
    """``fn(*args)`` in a forked process of its own; its result comes back pickled (tensors by value).

    A crash there (a decoder's segfault, the out-of-memory killer) ends that process only and raises
    ProcessDied here, saying how it ended; an exception ``fn`` raises is raised here. A process with
    no result after ``timeout`` seconds is killed: ProcessTimedOut.
    """
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
    receive, send = context.Pipe(duplex=False)
    with forking():
        process = context.Process(target=_send_result, args=(send, fn, args), daemon=True)
        process.start()
    send.close()
    try:
        if timeout is not None and not receive.poll(timeout):
            process.kill()
            process.join()
            raise ProcessTimedOut(f"the process reading it was stopped after {timeout:g} s")
        payload = receive.recv_bytes()
    except EOFError:
        payload = None
    finally:
        receive.close()
    process.join()
    if payload is None:
        code = process.exitcode or 0
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"ended with exit status {code}"
        raise ProcessDied(f"the process reading it was {how}")
    ok, value = pickle.loads(payload)
    if not ok:
        raise value
    return value


def _send_result(send: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    global _disposable
    init_worker(0)
    _disposable = False  # forked from a disposable worker: the parent's timeout stops this one
    faulthandler.disable()  # a crash here is the caller's to report, in one line, not a stack dump
    try:
        payload = pickle.dumps((True, fn(*args)))
    except Exception as e:
        try:
            payload = pickle.dumps((False, e))
        except Exception:
            payload = pickle.dumps((False, RuntimeError(f"{type(e).__name__}: {e}")))
    send.send_bytes(payload)
    send.close()


def _received_whole(batches: Iterator[Any]) -> Iterator[Any]:
    """Batches from the workers, each received with Ctrl-C held off (see forensix.interrupts)."""
    while True:
        with held_interrupts():
            batch = next(batches, _END)
        if batch is _END:
            return
        yield batch


_END = object()
