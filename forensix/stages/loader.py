"""Run the record builder in DataLoader workers: blocks in input order, surviving a dead worker.

This is one runner of the stages, not part of them: :func:`prepared_blocks` takes any entry stream
and any :class:`~forensix.stages.records.RecordBuilder`. The stream is walked once, here, in
stream order (a folder listed once, a compressed archive decompressed once): each entry is
detached as it comes (:meth:`forensix.inputs.InputItem.detach`: a compressed archive's member
carries its bytes, any other entry says where its bytes are) and cut into blocks of
``block_size`` consecutive entries, which are the loader's batches: a worker reads, decodes and
prepares a block's entries and hands the records back. This process holds the entries of the
blocks in flight (``workers × prefetch``) and of those waiting for their turn (finished out of
order: :func:`~forensix.stages.batches.ordered_blocks` restores input order), but not their bytes:
a compressed archive's members wait in a spool file per block (:class:`forensix.inputs.MemberSpool`),
removed when the block is done.

A worker that dies (a decoder's crash, the out-of-memory killer) costs no record: the first block
not yet handed over is built entry by entry, each in a process of its own (the entry that kills
its process becomes :meth:`RecordBuilder.crashed`), and workers start again with the other blocks
that were in flight, then the rest of the stream. Every crash moves the run on by at least one
block. A worker stuck on one image ends itself at the builder's hard time limit
(:mod:`forensix.timeouts`) and is recovered from the same way; alone, the entry still running at
that limit is stopped by this process and its record says it ran out of time.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from ..inputs import MemberSpool
from ..timeouts import hard_timeout, stopped
from ..workers import ProcessDied, ProcessTimedOut, WorkerLoader, init_worker, run_alone, worker_died
from .batches import Block, collate, ordered_blocks
from .records import Entry, Record, RecordBuilder

Numbered = list[tuple[int, Entry]]  # a block's entries, each with its index in the stream


@dataclass(frozen=True)
class LoaderOptions:
    block_size: int = 16  # entries per block: what a worker hands over at once
    workers: int = 0  # 0 = build in this process
    prefetch: int = 4  # blocks in flight per worker
    pin_memory: bool = False  # for a CUDA model
    block_bytes: int = 16 << 20  # a block of entries holding their bytes ends early past this many


class _Built(Dataset):
    """What a worker runs: the record of each (index, entry) of a block."""

    def __init__(self, build: RecordBuilder) -> None:
        self.build = build

    def __getitem__(self, numbered: tuple[int, Entry]) -> Record:
        return self.build(*numbered)


@dataclass
class _Handed:
    """A block as a worker hands it over: its records pickled into a tensor, so that all its data goes
    through shared memory and its message through the result pipe stays a few hundred bytes.

    A message larger than the pipe's buffer is written in pieces by the worker's feeder thread, and
    a worker that dies between two pieces (the next entry crashing its decoder) leaves the loader
    waiting for the rest forever, holding the queue's lock. A message under ``PIPE_BUF`` is written
    in one atomic write, whatever the records' notes and bytes weigh.
    """

    records: torch.Tensor  # uint8: the pickled list of records
    inputs: dict[str, torch.Tensor]

    @classmethod
    def of(cls, records: list[Record]) -> _Handed:
        block = collate(records)
        data = bytearray(pickle.dumps(block.records, protocol=pickle.HIGHEST_PROTOCOL))
        return cls(torch.frombuffer(data, dtype=torch.uint8), block.inputs)

    def block(self) -> Block:
        return Block(pickle.loads(self.records.numpy().tobytes()), self.inputs)

    def pin_memory(self) -> _Handed:
        """The inputs in pinned memory (a DataLoader calls it with ``pin_memory``)."""
        return _Handed(self.records, {name: t.pin_memory() for name, t in self.inputs.items()})


class _WalkFailed(Exception):
    """The walk itself raised (a bug: input errors are values); carried out of the loader, never taken for a death."""


class _Window:
    """The entry stream cut into blocks, walked once, and the blocks handed out but not yet done.

    Iterating it is a loader's batch sampler: first the blocks a dead loader left undone, in order,
    then new ones from the stream. ``done`` forgets a block once it is handed on. The bytes a block's
    entries hold (a compressed archive's members) wait in a spool file until it is done.
    """

    def __init__(self, entries: Iterable[Entry], options: LoaderOptions) -> None:
        self.stream = entry_blocks(entries, options.block_size, options.block_bytes)
        self.spool = MemberSpool()
        self.out: dict[int, Numbered] = {}  # by first index, in input order
        self.spooled: dict[int, str | None] = {}  # each block's spool file
        self.again: list[Numbered] = []
        self.next = 0  # the first entry not yet done

    def __iter__(self) -> Iterator[Numbered]:
        while self.again:
            yield self.again.pop(0)
        while (block := self._next_block()) is not None:
            self.out[block[0][0]] = block
            yield block

    def _next_block(self) -> Numbered | None:
        try:
            block = next(self.stream, None)
        except Exception as e:
            raise _WalkFailed() from e
        if block is None:
            return None
        entries, self.spooled[block[0][0]] = self.spool.store([e for _, e in block])
        return [(i, e) for (i, _), e in zip(block, entries)]

    def done(self, block: Block) -> None:
        first = block.records[0].index
        self.out.pop(first, None)
        self.spool.release(self.spooled.pop(first, None))
        self.next = block.records[-1].index + 1

    def restart(self) -> Numbered | None:
        """After a loader died: the first block not done (to build alone); the others go out again first."""
        if not self.out:
            return self._next_block()
        first = self.out.pop(next(iter(self.out)))
        self.again = list(self.out.values())
        return first

    def close(self) -> None:
        self.spool.close()


def entry_blocks(entries: Iterable[Entry], size: int, block_bytes: int) -> Iterator[Numbered]:
    """Consecutive detached entries, ``size`` a block, or fewer once they hold ``block_bytes`` of data."""
    block: Numbered = []
    held = 0
    for index, entry in enumerate(entries):
        entry = entry.detach()  # now, before the stream moves on
        block.append((index, entry))
        held += entry.held_bytes
        if len(block) == size or held >= block_bytes:
            yield block
            block, held = [], 0
    if block:
        yield block


def prepared_blocks(
    entries: Iterable[Entry],
    build: RecordBuilder,
    options: LoaderOptions,
    on_worker_death: Callable[[], None] | None = None,
) -> Iterator[Block]:
    """``build`` over every entry of ``entries``, as blocks in input order, every entry once.

    ``entries`` is iterated once, in this process, from inside the loader's ``next()``; each entry
    must ``detach()`` into one that pickles. ``on_worker_death`` is told of each worker that died.
    """
    window = _Window(entries, options)
    try:
        while True:
            try:
                handed = (h.block() for h in _loader(window, build, options))
                for block in ordered_blocks(handed, window.next):
                    window.done(block)
                    yield block
                if window.out:  # a block handed out never came back: never drop rows silently
                    raise RuntimeError(f"the scan lost its place: entries from {min(window.out)} never came back")
                return
            except _WalkFailed as e:
                raise e.__cause__ from None  # type: ignore[misc]
            except Exception as e:
                if not worker_died(e):
                    raise
            if on_worker_death is not None:
                on_worker_death()
            alone = window.restart()
            if alone is None:
                return
            block = collate([build_alone(build, i, e) for i, e in alone])
            window.done(block)
            yield block
    finally:
        window.close()


def _loader(window: _Window, build: RecordBuilder, options: LoaderOptions) -> WorkerLoader:
    extra: dict[str, Any] = {}
    if options.workers > 0:
        # in_order=False: a slow image in one worker does not stall the others; ordered_blocks
        # restores the order.
        extra = dict(prefetch_factor=options.prefetch, worker_init_fn=init_worker, in_order=False)
    return WorkerLoader(
        _Built(build),
        batch_sampler=window,
        num_workers=options.workers,
        collate_fn=_Handed.of,
        pin_memory=options.pin_memory,
        **extra,
    )


def build_alone(build: RecordBuilder, index: int, entry: Entry) -> Record:
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
