"""Run the record builder in DataLoader workers: blocks in input order, surviving a dead worker.

This is one runner of the stages, not part of them: :func:`prepared_blocks` takes any entry stream
and any :class:`~forensix.stages.records.RecordBuilder`. Every worker walks the same deterministic
stream and builds only its own blocks of ``block_size`` consecutive entries (block j → worker
j mod W), so nothing but finished records crosses a process boundary and memory does not grow
with the number of entries; :func:`~forensix.stages.batches.ordered_blocks` restores input order.

A worker that dies (a decoder's crash, the out-of-memory killer) costs no record: the first block
not yet handed over is built entry by entry, each in a process of its own (the entry that kills
its process becomes :meth:`RecordBuilder.crashed`), and workers start again after it. Every crash
moves the run on by at least one block. A worker stuck on one image ends itself at the builder's
hard time limit (:mod:`forensix.timeouts`) and is recovered from the same way; alone, the entry
still running at that limit is stopped by this process and its record says it ran out of time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

from ..timeouts import hard_timeout, stopped
from ..workers import ProcessDied, ProcessTimedOut, WorkerLoader, init_worker, run_alone, worker_died
from .batches import Block, collate, ordered_blocks
from .records import Entry, Record, RecordBuilder


@dataclass(frozen=True)
class LoaderOptions:
    block_size: int = 16  # entries per block: what a worker hands over at once
    workers: int = 0  # 0 = build in this process
    prefetch: int = 4  # blocks in flight per worker
    pin_memory: bool = False  # for a CUDA model


class _WorkerShare(IterableDataset):
    """The records of this worker's blocks (all of them without workers), from entry ``start`` on."""

    def __init__(self, entries: Callable[[], Iterable[Entry]], build: RecordBuilder, block_size: int) -> None:
        self.entries, self.build, self.block_size = entries, build, block_size
        self.start = 0  # entries before this one are done (a run restarted after a crash)

    def numbered(self) -> Iterator[tuple[int, Entry]]:
        """(index, entry) of every entry from ``start`` on."""
        return itertools.islice(enumerate(self.entries()), self.start, None)

    def __iter__(self) -> Iterator[Record]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for index, entry in self.numbered():
            if (index // self.block_size) % workers == worker:
                yield self.build(index, entry)


def prepared_blocks(
    entries: Callable[[], Iterable[Entry]],
    build: RecordBuilder,
    options: LoaderOptions,
    on_worker_death: Callable[[], None] | None = None,
) -> Iterator[Block]:
    """``build`` over every entry ``entries()`` yields, as blocks in input order, every entry once.

    ``entries`` is called once per worker (and again after a crash): it must give the same stream
    each time. ``on_worker_death`` is told of each worker that died.
    """
    share = _WorkerShare(entries, build, options.block_size)
    while True:
        try:
            for block in ordered_blocks(_loader(share, options), share.start):
                share.start = block.records[-1].index + 1
                yield block
            return
        except Exception as e:
            if not worker_died(e):
                raise
        if on_worker_death is not None:
            on_worker_death()
        records = [_build_alone(build, i, e) for i, e in itertools.islice(share.numbered(), options.block_size)]
        if not records:
            return
        share.start = records[-1].index + 1
        yield collate(records)


def _loader(share: _WorkerShare, options: LoaderOptions) -> WorkerLoader:
    extra: dict[str, Any] = {}
    if options.workers > 0:
        # in_order=False: a slow image in one worker does not stall the others; ordered_blocks
        # restores the order, holding at most workers x prefetch blocks.
        extra = dict(prefetch_factor=options.prefetch, worker_init_fn=init_worker, in_order=False)
    return WorkerLoader(
        share,
        batch_size=options.block_size,
        num_workers=options.workers,
        collate_fn=collate,
        pin_memory=options.pin_memory,
        **extra,
    )


def _build_alone(build: RecordBuilder, index: int, entry: Entry) -> Record:
    """``build`` in a process of its own: if the entry crashes that process, or outlasts the hard time
    limit there, its crashed record."""
    try:
        return run_alone(build, index, entry, timeout=build.hard_timeout)
    except ProcessTimedOut:
        return build.crashed(index, entry, stopped(build.decode_timeout))
    except ProcessDied as e:
        return build.crashed(index, entry, str(e))


class SampledBatches:
    """Batches of a map-style dataset in a batch sampler's order (training), surviving a dead worker.

    Each pass draws the sampler's batches (``set_epoch`` on the sampler changes them) and builds them
    in ``workers`` DataLoader workers. A worker that dies costs no batch: the batch it was building
    is built item by item, each item in a process of its own (the one that kills its process becomes
    ``crashed(index, why)``), and workers start again from the next batch, as :func:`prepared_blocks`
    does for blocks. ``decode_timeout`` is the per-item budget whose hard limit stops an item alone
    (:mod:`forensix.timeouts`; 0: none).
    """

    def __init__(
        self,
        dataset: Dataset,
        sampler: Sampler[list[int]],
        collate_fn: Callable[[list[Any]], Any],
        crashed: Callable[[int, str], Any],
        workers: int = 0,
        pin_memory: bool = False,
        on_worker_death: Callable[[], None] | None = None,
        decode_timeout: float = 0.0,
    ) -> None:
        self.dataset, self.sampler, self.collate_fn, self.crashed = dataset, sampler, collate_fn, crashed
        self.workers, self.pin_memory, self.on_worker_death = workers, pin_memory, on_worker_death
        self.decode_timeout = decode_timeout

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Any]:
        batches: Sequence[list[int]] = list(self.sampler)
        start = 0
        while start < len(batches):
            try:
                for batch in self._loader(batches[start:]):
                    start += 1
                    yield batch
                return
            except Exception as e:
                if not worker_died(e):
                    raise
            if self.on_worker_death is not None:
                self.on_worker_death()
            yield self.collate_fn([self._item_alone(i) for i in batches[start]])
            start += 1

    def _loader(self, batches: Sequence[list[int]]) -> WorkerLoader:
        extra: dict[str, Any] = dict(worker_init_fn=init_worker, persistent_workers=False) if self.workers else {}
        return WorkerLoader(
            self.dataset,
            batch_sampler=batches,
            num_workers=self.workers,
            collate_fn=self.collate_fn,
            pin_memory=self.pin_memory,
            **extra,
        )

    def _item_alone(self, index: int) -> Any:
        try:
            return run_alone(self.dataset.__getitem__, index, timeout=hard_timeout(self.decode_timeout))
        except ProcessTimedOut:
            return self.crashed(index, stopped(self.decode_timeout))
        except ProcessDied as e:
            return self.crashed(index, str(e))
