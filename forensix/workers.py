"""DataLoader workers that start safely from a process holding native thread pools.

Workers are forked: they start in milliseconds and share the loaded model's pages. A forked child
has only the forking thread, so an object whose destructor joins or signals threads of the parent
hangs the child if the child's garbage collector frees it: an onnxruntime session left in a
reference cycle blocks forever in ``pthread_cond_destroy`` (seen in the test suite, in whichever
worker's first allocation happened to trigger a collection). So the parent collects its garbage
(where the threads exist) and freezes every surviving object into the collector's permanent
generation while it forks: the children never collect anything of the parent's, and they also
leave its pages unwritten. The parent unfreezes as soon as its workers exist.
"""

from __future__ import annotations

import gc
import signal
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from .interrupts import deferred_interrupts


def init_worker(_: int) -> None:
    # One thread per worker (the workers are the parallelism); Ctrl-C is the main process's to handle.
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
        gc.collect()
        gc.freeze()
        try:
            return super()._get_iterator()  # forks the workers
        finally:
            gc.unfreeze()


def _received_whole(batches: Iterator[Any]) -> Iterator[Any]:
    """Batches from the workers, each received with Ctrl-C held off (see forensix.interrupts)."""
    while True:
        with deferred_interrupts():
            batch = next(batches, _END)
        if batch is _END:
            return
        yield batch


_END = object()
