"""The Ray engine: a scan's own stages on Ray Data, for clusters of many GPUs and machines (docs/scale.md).

The stages are the local scan's (docs/architecture.md); only where they run changes:

- **entries**: one streaming read task, pinned to the driver's node (the paths are the driver's,
  relative ones from its working folder), walks the inputs once, in stream order, cut into the local
  scan's blocks of detached entries (:func:`~forensix.stages.loader.entry_blocks`); each archive it
  meets is listed (a compressed one decompressed) by a task of its own, several ahead of the walk,
  anywhere in the cluster (:class:`_ListedInTasks`): a folder of shards is a distributed read;
- **records**: CPU tasks run the scan's :class:`~forensix.stages.records.RecordBuilder` on each
  block and stack its inputs (:func:`~forensix.stages.batches.collate`);
- **scoring**: a pool of actors, each holding its own copy of the scan's models on its own GPU (or
  CPU), runs :meth:`forensix.pipeline.ScanModels.run` on each block's images and sends back each
  image's outputs (logit, attribution, localizer map);
- **rows**: the driver gets the blocks back in input order (``preserve_order``) and makes the rows
  exactly as the local scan does (:class:`forensix.pipeline.Scanner`: resume tally, verdicts, mask
  files, stats), so every guarantee of :func:`forensix.scan_report.write_report` holds. For a
  sharded report (:mod:`forensix.shards`, :func:`written_shards`), CPU tasks make the rows instead
  (the scan's :class:`~forensix.stages.rows.RowMaker`), one task a shard of ``shard_blocks``
  consecutive blocks (Ray Data bundles them in order; the task checks that they are one shard's),
  and write its file; the driver gets only each shard's index line, in order, and commits it. On
  resume the read skips, unread, the shards whose inputs' names are unchanged (:class:`_EntryStream`).

Every Ray block is one forensix block of ``RayOptions.block_for(batch_size)`` inputs
(``target_max_block_size`` of one byte: each row leaves as a block of its own), so the blocks spread
over the actors one by one, as they do over DataLoader workers; an actor scores a block in model
batches. Blocks are larger than a batch because the driver's Ray Data executor costs about the same
for each block, whatever its size (docs/scale.md).

Faults: Ray restarts a dead actor and retries its task (``max_restarts``/``max_task_retries``, Ray
Data's defaults). A block whose build is retried, after a crash or a node's loss, is built entry by
entry, each in a process of its own (:func:`~forensix.stages.loader.build_alone`), as the local loader
does after a worker's death: the entry that kills its process becomes its error row. A
:class:`_Ledger` actor beside the driver counts each block's starts; a block lost ``GIVE_UP`` times
becomes error rows. Builds have the local workers' hard time limit
(:func:`forensix.workers.disposable_worker`). No Ray block may fail in silence
(``max_errored_blocks`` 0), and the driver checks that the blocks come back gapless.

The models travel once: the driver packs them (a torch module on the CPU, an ONNX file's bytes:
``Backend.packed``) and puts them in the object store once; each actor gets them from its node's
store and opens them on its device. Rows name the driver's model, weights sha256 and threshold.

Ray is imported only here, and this module only when a scan asks for ``--engine ray``; the options
(:mod:`forensix.ray_options`) need no Ray.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import pickle
import platform
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .inputs import ArchiveAt, ArchiveLister, InputItem, Limits, archive_entries
from .ray_options import SCORE_CPUS, Plan, RayOptions, require_ray
from .shards import ShardIndex, ShardLine, names_digest, write_shard
from .stages.batches import Block, collate
from .stages.loader import Numbered, build_alone, entry_blocks
from .stages.records import ATTR, IMAGE, MASK, Entry, RecordBuilder
from .stages.rows import Pending, RowMaker, ScanStats
from .workers import disposable_worker, leave_interrupts_to_the_driver

if TYPE_CHECKING:
    from .runner import Runner

Name = tuple[str, str]  # an entry's (path, member)
ONE_BLOCK_A_ROW = 1  # bytes: Ray Data's target block size, so each row (a forensix block) is a Ray block
GIVE_UP = 4  # starts of one block's build (1 whole, then entry by entry), or of an archive's listing, before error rows
LOOK_AHEAD = 4096  # items of the walk held ahead, at most, to start the listing of the archives that come next


@contextmanager
def connected(address: str | None) -> Iterator[ModuleType]:
    """Ray, connected to the cluster at ``address`` (or RAY_ADDRESS, or a new local one) unless it already is;
    a Ray started here is shut down after."""
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


@contextmanager
def _data_context(ray: ModuleType) -> Iterator[None]:
    """Ray Data set for a scan: blocks in input order, one forensix block each, no progress bars of its own."""
    context = ray.data.DataContext.get_current()
    saved = (
        context.execution_options.preserve_order,
        context.target_max_block_size,
        context.enable_progress_bars,
        context.max_errored_blocks,
    )
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    context.execution_options.preserve_order = True
    context.target_max_block_size = ONE_BLOCK_A_ROW
    context.enable_progress_bars = False
    context.max_errored_blocks = 0  # a block that fails fails the scan: never a row dropped in silence
    data_logger.setLevel(logging.ERROR)  # not its notices: a scan's own display and messages are forensix's
    try:
        yield
    finally:
        (
            context.execution_options.preserve_order,
            context.target_max_block_size,
            context.enable_progress_bars,
            context.max_errored_blocks,
        ) = saved
        data_logger.setLevel(level)


@dataclass
class ScoredBlock:
    """A block back from a scoring actor: its records (inputs gone) and each prepared record's outputs by index."""

    block: Block
    outputs: dict[int, Any] = field(default_factory=dict)  # index -> forensix.pipeline.ImageOutputs


class _EntryStream(Datasource):
    """The read: ``entries()`` walked once in one read task (its archives listed by ``archives``), in
    blocks of ``size`` entries (fewer past ``block_bytes``), each block a Ray block of its own as soon
    as it is cut, with its shard's number (:class:`_Sharding`; 0 when the report is one file).
    Relative paths are the driver's: the task works in the driver's folder (``cwd``)."""

    def __init__(
        self,
        entries: Callable[..., Iterator[Entry]],
        size: int,
        block_bytes: int,
        cwd: str,
        ledger: Any,
        sharding: _Sharding | None,
        archives: ArchiveLister,
    ) -> None:
        self.entries, self.size, self.block_bytes, self.cwd = entries, size, block_bytes, cwd
        self.ledger, self.sharding, self.archives = ledger, sharding, archives

    def get_read_tasks(self, parallelism: int, **kwargs: Any) -> list[ReadTask]:
        meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
        return [ReadTask(self._read, meta)]

    def _read(self) -> Iterator[Any]:
        import pyarrow

        os.chdir(self.cwd)
        blocks = entry_blocks(self.entries(archives=self.archives), self.size, self.block_bytes)
        tagged = ((0, numbered) for numbered in blocks)
        if self.sharding is not None:
            tagged = self._shards(blocks)
        for shard, numbered in tagged:  # a row: the block's (index, entry) pairs, and its shard
            yield pyarrow.table({"item": [_pickled(numbered)], "shard": [shard]})

    def _shards(self, blocks: Iterator[Numbered]) -> Iterator[tuple[int, Numbered]]:
        """The blocks with their shards' numbers, past the shards of the report whose inputs have the
        same names (walked, not emitted); from the first that differs on, every block. The ledger
        hears how many shards the stream has."""
        assert self.sharding is not None
        per, kept = self.sharding.shard_blocks, self.sharding.kept
        walked = [0]  # blocks

        def names(group: Iterator[Numbered]) -> Iterator[Name]:
            for numbered in group:
                walked[0] += 1
                yield from ((e.path, e.member) for _, e in numbered)

        start = 0  # shards kept
        while start < len(kept):
            before = walked[0]
            digest = names_digest(names(itertools.islice(blocks, per)))  # nothing held: a tar's members hold bytes
            if walked[0] == before:
                break  # the stream ends where a kept shard ends
            if digest != kept[start]:  # from this shard on, all is scanned: the walk again, to it
                close = getattr(blocks, "close", None)
                if close is not None:
                    close()  # the first walk's archives
                blocks = self._walked_past(start, names)
                walked[0] = start * per
                break
            start += 1
        for numbered in blocks:
            yield walked[0] // per, numbered
            walked[0] += 1
        require_ray().get(self.ledger.walked.remote(-(-walked[0] // per)))

    def _walked_past(
        self, shards: int, names: Callable[[Iterator[Numbered]], Iterator[tuple[str, str]]]
    ) -> Iterator[Numbered]:
        """A new walk of the entries, past its first ``shards`` shards, which must be those the first walk kept."""
        assert self.sharding is not None
        per, kept = self.sharding.shard_blocks, self.sharding.kept
        blocks = entry_blocks(self.entries(archives=self.archives), self.size, self.block_bytes)
        for shard in range(shards):
            if names_digest(names(itertools.islice(blocks, per))) != kept[shard]:
                raise RuntimeError(
                    f"the inputs changed during the scan: shard {shard}'s names differ when walked again"
                )
        return blocks

    def estimate_inmemory_data_size(self) -> None:
        return None


@dataclass(frozen=True)
class _ListedInTasks:
    """Where the walk meets an archive (:data:`~forensix.inputs.ArchiveLister`): it is listed, and a
    compressed one decompressed (its members' bytes travel with them), by a Ray task of its own,
    anywhere in the cluster, ``at_once`` at a time, started ahead of the walk; each one's entries come
    back in chunks of a block, in order, and go in its place. So the read task on the driver's node
    lists only folders, and joins the archives' entries (a compressed member's bytes pass through it).

    The tasks take no CPU of the plan's: one paused until its entries are taken (Ray's backpressure:
    two chunks ahead) would hold it from the record tasks, which the read waits for. A listing that
    dies (its process or node) is started again, ``GIVE_UP`` times in all (Ray's retries; the entries
    already back are not repeated), then the archive's entries end with an error entry, as a damaged
    archive's do. (Were the read task's own process lost, Ray would walk again and skip the blocks
    already taken by their number: a listing lost in one walk and not in the other would shift the
    entries after it. The read runs on the driver's node, whose loss ends the scan anyway.)
    """

    at_once: int
    cwd: str
    size: int
    block_bytes: int

    def __call__(self, walk: Iterator[InputItem | ArchiveAt], limits: Limits) -> Iterator[InputItem]:
        ray = require_ray()
        listing = ray.remote(_archive_chunks).options(
            num_cpus=0, scheduling_strategy="SPREAD", max_retries=GIVE_UP - 1, _generator_backpressure_num_objects=2
        )
        ahead: deque[InputItem | tuple[str, Any]] = deque()  # entries, and archives whose listing has started
        running: list[Any] = []  # the listings started and not yet taken whole

        def look_ahead() -> None:
            while len(running) < self.at_once and len(ahead) < LOOK_AHEAD:
                item = next(walk, None)
                if item is None:
                    return
                if isinstance(item, ArchiveAt):
                    running.append(listing.remote(item.path, limits, self.cwd, self.size, self.block_bytes))
                    ahead.append((item.path, running[-1]))
                else:
                    ahead.append(item)

        try:
            look_ahead()
            while ahead:
                item = ahead.popleft()
                if isinstance(item, InputItem):
                    yield item
                else:
                    yield from _listed(ray, *item)
                    running.remove(item[1])
                look_ahead()
        finally:  # stopped early: no listing still running is needed (force: they ignore SIGINT, the driver's)
            for chunks in running:
                with suppress(Exception):  # one that has just ended cannot be cancelled
                    ray.cancel(chunks, force=True)


def _archive_chunks(path: str, limits: Limits, cwd: str, size: int, block_bytes: int) -> Iterator[list[InputItem]]:
    """A Ray task: one archive's entries, detached (readable anywhere), in chunks of ``size`` entries
    (fewer past ``block_bytes``)."""
    leave_interrupts_to_the_driver()
    os.chdir(cwd)  # relative paths are the driver's
    if not os.path.lexists(path):  # the walk found it on the driver's node: this node does not share it
        raise FileNotFoundError(
            f"{path}: an archive the scan's walk found is not on node {platform.node()}; on Ray, put the "
            "inputs on storage every node mounts at the same path (docs/scale.md)"
        )
    for numbered in entry_blocks(archive_entries(path, limits), size, block_bytes):
        yield [entry for _, entry in numbered]


def _listed(ray: ModuleType, path: str, chunks: Any) -> Iterator[InputItem]:
    """The entries of one archive's listing task (``chunks``, its generator of chunks); if it died every
    time, an error entry after those that came back. What the listing raised is raised here."""
    try:
        for ref in chunks:
            yield from ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        raise e.as_instanceof_cause() from None  # not the archive's (damage is an entry): the scan stops
    except ray.exceptions.RayError as e:
        why = f"the task listing it was lost, each time it was started ({type(e).__name__}: its process or node died)"
        yield InputItem(path, member="", error=f"cannot read archive: {why}")


class _Ledger:
    """What the scan's tasks tell the driver (a Ray actor beside it): how often each block's build has
    started (a block started again is one whose build was lost), and how many shards the stream has."""

    def __init__(self) -> None:
        self.started: dict[int, int] = {}
        self.again = 0
        self.shards = 0

    def attempt(self, block: int) -> int:
        """This start's number for the block whose first entry is ``block``: 0 the first time."""
        n = self.started.get(block, 0)
        self.started[block] = n + 1
        self.again += n > 0
        return n

    def retried(self) -> int:
        return self.again

    def walked(self, shards: int) -> None:
        self.shards = shards

    def stream_shards(self) -> int:
        return self.shards


@dataclass(frozen=True)
class _Sharding:
    """A sharded report being written (:mod:`forensix.shards`): where, by which run, how the stream is
    cut, and the names' digests of the shards already there (a resume keeps those that match)."""

    folder: str  # absolute
    run: str
    shard_blocks: int
    kept: tuple[str, ...]
    mask_threads: int


@dataclass
class _Shipped:
    """Object-store references, wrapped so that Ray hands them to actors as references (fetched there
    once), and the driver's working directory."""

    refs: dict[str, Any]
    cwd: str
    sharding: _Sharding | None = None

    def get(self, name: str) -> Any:
        return require_ray().get(self.refs[name])


def _build_blocks(batch: dict[str, Any], shipped: _Shipped) -> dict[str, list[bytes]]:
    """A CPU task: each block of entries becomes a block of records (alone, entry by entry, when retried).

    A task, not an actor: Ray runs tasks in their process's main thread, where the builder's time
    limits work (an actor's calls run in another thread, where signals do not reach). A block lost
    ``GIVE_UP`` times, alone too, becomes error rows: the scan goes on.
    """
    ray = require_ray()
    disposable_worker()
    os.chdir(shipped.cwd)  # relative paths are the driver's
    build: RecordBuilder = shipped.get("builder")
    ledger = shipped.refs["ledger"]
    blocks = []
    numbered: Numbered
    for numbered in _unpickled(batch["item"]):
        attempt = ray.get(ledger.attempt.remote(numbered[0][0]))
        if attempt == 0:
            records = [build(i, e) for i, e in numbered]
        elif attempt < GIVE_UP:  # this block's build was lost: the entry that kills a process kills only its own
            records = [build_alone(build, i, e) for i, e in numbered]
        else:
            why = f"its block's build was lost {attempt} times (its process or node died)"
            records = [build.crashed(i, e, why) for i, e in numbered]
        blocks.append(_pickled(collate(records)))
    return {"block": blocks, "shard": list(batch["shard"])}


class _Score:
    """A scoring actor: the scan's models, opened on its device; each block's images scored in one go."""

    def __init__(self, shipped: _Shipped, device: str, precision: str, compile: bool) -> None:
        leave_interrupts_to_the_driver()
        self.models = opened(shipped.get("models"), device, precision, compile)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[bytes]]:
        scored = []
        for block in _unpickled(batch["block"]):
            images, attr, masks = (block.inputs.pop(name, None) for name in (IMAGE, ATTR, MASK))
            block.inputs = {}
            outputs: dict[int, Any] = {}
            if images is not None:
                prepared = [r for r in block.records if r.has_input]  # the records the inputs stack, in order
                results = self.models.run(images, attr, None if masks is None else list(masks))
                outputs = {r.index: o for r, o in zip(prepared, results, strict=True)}
                for r, o in zip(prepared, results, strict=True):
                    if o.mask is None:
                        r.raw = None  # the bytes travel on only for the mask files
            scored.append(_pickled(ScoredBlock(block, outputs)))
        return {"scored": scored, "shard": list(batch["shard"])}


def _write_shard(batch: dict[str, Any], shipped: _Shipped) -> dict[str, list[bytes]]:
    """A CPU task: one shard's scored blocks (all of them: a batch is a shard) made into rows, as
    :class:`forensix.pipeline.Scanner` makes them, and written as the shard's file; returns its index line."""
    numbers = set(batch["shard"])
    if len(numbers) != 1:  # Ray Data bundles consecutive blocks; never write a shard of parts of two
        raise RuntimeError(f"one shard's writer was handed blocks of shards {sorted(numbers)}")
    (shard,) = numbers
    sharding: _Sharding = shipped.sharding  # type: ignore[assignment]
    os.chdir(shipped.cwd)  # the mask folder, if relative, is the driver's
    rows: RowMaker = shipped.get("rows")
    stats = ScanStats()
    names: list[tuple[str, str]] = []
    pending: list[Pending] = []
    with ThreadPoolExecutor(sharding.mask_threads, "forensix-mask") as pool:
        for scored in _unpickled(batch["scored"]):
            block = scored.block
            names.extend((r.path, r.member) for r in block.records)
            made = [p for p, _ in rows.pending(block, stats)]
            ready = [p for p in made if p.record.index in scored.outputs]
            submit = pool.submit if rows.masks_dir is not None else None
            rows.apply(ready, [scored.outputs[p.record.index] for p in ready], submit)
            pending.extend(made)
        finished = [rows.finish(p, stats) for p in pending]
    name, size, sha256 = write_shard(Path(sharding.folder), int(shard), sharding.run, finished)
    line = ShardLine(int(shard), name, len(finished), len(names), names_digest(names), size, sha256,
                     rows.model, rows.threshold, rows.band_low, stats)  # fmt: skip
    return {"line": [_pickled(line)]}


def _pickled(value: Any) -> bytes:
    """A row's one value, pickled here: Ray Data keeps bytes as they are (it would try Arrow on an object first)."""
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _unpickled(column: Any) -> Iterator[Any]:
    return (pickle.loads(value) for value in column)


def packed(models: Any) -> Any:
    """A copy of a scan's models (:class:`forensix.pipeline.ScanModels`) whose runners hold packed backends."""
    twin = copy.copy(models)
    for name in ("detector", "localizer", "attributor"):
        runner: Runner | None = getattr(models, name)
        if runner is not None:
            twin_runner = copy.copy(runner)
            twin_runner.backend = runner.backend.packed()  # type: ignore[attr-defined]
            twin_runner.max_batch = None
            setattr(twin, name, twin_runner)
    return twin


def opened(models: Any, device: str, precision: str, compile: bool) -> Any:
    """Packed models (:func:`packed`) with their backends opened on ``device`` at ``precision``."""
    for name in ("detector", "localizer", "attributor"):
        runner = getattr(models, name)
        if runner is not None:
            runner.backend = runner.backend.open(device, precision, compile)
    return models


def scored_blocks(
    entries: Callable[..., Iterator[Entry]],
    build: RecordBuilder,
    models: Any,
    options: RayOptions,
    block_size: int,
    block_bytes: int,
    on_worker_death: Callable[[int], None],
) -> Iterator[ScoredBlock]:
    """Every entry of ``entries(archives=...)`` built by ``build`` and its images run through ``models`` (a
    :class:`forensix.pipeline.ScanModels`) on Ray, as blocks in input order.

    ``entries(archives=...)`` is called once, in the read task on this node, and must pickle (with what
    it walks); it hands the archives it meets to ``archives`` (:func:`~forensix.inputs.iter_entries`).
    ``on_worker_death(n)`` is told, at the end, how many blocks had to be built again.
    """
    with _scan(entries, build, models, options, block_size, block_bytes) as scan:
        for row in _rows(scan.ds):
            yield pickle.loads(row["scored"])
        on_worker_death(scan.ray.get(scan.ledger.retried.remote()))


def written_shards(
    entries: Callable[..., Iterator[Entry]],
    build: RecordBuilder,
    models: Any,
    rows: RowMaker,
    options: RayOptions,
    index: ShardIndex,
    mask_threads: int,
    on_worker_death: Callable[[int], None],
) -> Iterator[ShardLine]:
    """As :func:`scored_blocks`, the rows made by ``rows`` and written as the shards of the sharded
    report ``index`` by Ray tasks: each shard's index line, in input order, for the caller to commit.
    The shards ``index`` holds whose inputs have the same names are skipped unread; the first line
    may be of a shard ``index`` holds (its inputs changed), and after the last, ``index.stream_shards``
    is how many shards the whole stream has (None if the scan stopped before)."""
    layout, kept = index.layout, tuple(line.names for line in index.committed)
    sharding = _Sharding(str(index.folder.resolve()), index.run, layout.shard_blocks, kept, mask_threads)
    with _scan(entries, build, models, options, layout.block_size, layout.block_bytes, rows, sharding) as scan:
        # Rows and shard files in CPU tasks, a shard a batch: Ray Data bundles the blocks in order.
        ds = scan.ds.map_batches(
            _write_shard,
            fn_kwargs={"shipped": scan.shipped},
            batch_size=layout.shard_blocks,
            compute=scan.ray.data.TaskPoolStrategy(size=scan.plan.write_tasks),
            num_cpus=scan.plan.write_cpus,
        )
        for row in _rows(ds):
            yield pickle.loads(row["line"])
        index.stream_shards = scan.ray.get(scan.ledger.stream_shards.remote())
        on_worker_death(scan.ray.get(scan.ledger.retried.remote()))


@dataclass
class _Running:
    """A scan set up on Ray: the dataset of scored blocks, and what its stages share."""

    ray: ModuleType
    ds: Any  # ray.data.Dataset
    ledger: Any  # the _Ledger actor
    shipped: _Shipped
    plan: Plan


@contextmanager
def _scan(
    entries: Callable[..., Iterator[Entry]],
    build: RecordBuilder,
    models: Any,
    options: RayOptions,
    block_size: int,
    block_bytes: int,
    rows: RowMaker | None = None,
    sharding: _Sharding | None = None,
) -> Iterator[_Running]:
    """Ray connected, and the dataset of scored blocks (read, built, scored), with its ledger actor."""
    with connected(options.address) as ray, _data_context(ray):
        masks = rows is not None and rows.masks_dir is not None
        plan = Plan.on(ray.cluster_resources(), options, shards=sharding is not None, masks=masks)
        here = ray.get_runtime_context().get_node_id()
        pinned = NodeAffinitySchedulingStrategy(here, soft=False)  # beside the driver: it lives as long
        ledger = (
            ray.remote(_Ledger)
            .options(num_cpus=0, scheduling_strategy=pinned, max_restarts=-1, max_task_retries=-1)
            .remote()
        )
        # Held here for the whole scan: the actors (and restarted ones) fetch them from their node's store.
        refs = {"builder": ray.put(build), "models": ray.put(packed(models)), "ledger": ledger}
        if rows is not None:
            refs["rows"] = ray.put(rows)
        shipped = _Shipped(refs, os.getcwd(), sharding)
        archives = _ListedInTasks(plan.list_tasks, os.getcwd(), block_size, block_bytes)
        source = _EntryStream(entries, block_size, block_bytes, os.getcwd(), ledger, sharding, archives)
        # On the driver's node (its paths), taking no CPU from the others.
        ds = ray.data.read_datasource(source, override_num_blocks=1, num_cpus=0, scheduling_strategy=pinned)
        # max_retries: a build lost with its process is always retried (then entry by entry). Being the
        # scoring actors' remote arguments' odd one out, it also keeps Ray Data from fusing the two stages.
        ds = ds.map_batches(
            _build_blocks,
            fn_kwargs={"shipped": shipped},
            batch_size=1,
            compute=ray.data.TaskPoolStrategy(size=plan.build_tasks),
            num_cpus=1,
            max_retries=-1,
        )
        ds = ds.map_batches(
            _Score,
            fn_constructor_args=(shipped, plan.device, options.precision, options.compile),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            num_cpus=SCORE_CPUS,
            num_gpus=plan.gpus_per_actor,
        )
        yield _Running(ray, ds, ledger, shipped, plan)


def _rows(ds: Any) -> Iterator[dict[str, Any]]:
    """The dataset's rows in order; stopped early, its execution stops now, not when collected."""
    rows = ds.iter_rows()
    try:
        yield from rows
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
