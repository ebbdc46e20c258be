"""The Ray engine: a scan's own stages on Ray Data, for clusters of many GPUs and machines (docs/scale.md).

The stages are the local scan's (docs/architecture.md); only where they run changes:

- **entries**: one streaming read task on the driver's node walks the inputs once, in stream order
  (``local_read``: the paths are the driver's), cut into the local scan's blocks of detached entries
  (:func:`~forensix.stages.loader.entry_blocks`);
- **records**: CPU tasks run the scan's :class:`~forensix.stages.records.RecordBuilder`
  on each block and stacks its inputs (:func:`~forensix.stages.batches.collate`);
- **scoring**: a pool of actors, each holding its own copy of the scan's models on its own GPU (or
  CPU), runs :meth:`forensix.pipeline.ScanModels.run` on each block's images and sends back each
  image's outputs (logit, attribution, localizer map);
- **rows**: the driver gets the blocks back in input order (``preserve_order``) and makes the rows
  exactly as the local scan does (:class:`forensix.pipeline.Scanner`: resume tally, verdicts, mask
  files, stats), so every guarantee of :func:`forensix.scan_report.write_report` holds.

Every Ray block is one forensix block (``target_max_block_size`` of one byte: each row leaves as a
block of its own), so the blocks spread over the actors one by one, as they do over DataLoader
workers.

Faults: Ray restarts a dead actor and retries its task (``max_restarts``/``max_task_retries``, Ray
Data's defaults). A block whose build is retried, after a crash or a node's loss, is built entry by
entry, each in a process of its own (:func:`~forensix.stages.loader.build_alone`), as the local loader
does after a worker's death: the entry that kills its process becomes its error row. A shared
:class:`_Attempts` actor tells a retry from a first try. Builds have the local workers' hard time limit
(:func:`forensix.workers.disposable_worker`).

The models travel once: the driver packs them (a torch module on the CPU, an ONNX file's bytes:
``Backend.packed``) and puts them in the object store once; each actor gets them from its node's
store and opens them on its device. Rows name the driver's model, weights sha256 and threshold.

Ray is imported only here, and this module only when a scan asks for ``--engine ray``.
"""

from __future__ import annotations

import copy
import importlib
import logging
import math
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from torch.utils.data import IterableDataset

from .stages.batches import Block, collate
from .stages.loader import Numbered, build_alone, entry_blocks
from .stages.records import ATTR, IMAGE, MASK, Entry, RecordBuilder
from .workers import disposable_worker, leave_interrupts_to_the_driver

if TYPE_CHECKING:
    from .runner import Runner

SCORE_CPUS = 1.0  # each scoring actor's CPU: it feeds its device
ONE_BLOCK_A_ROW = 1  # bytes: Ray Data's target block size, so each row (a forensix block) is a Ray block


@dataclass(frozen=True)
class RayOptions:
    """Where and how a scan runs on Ray (``forensix scan --engine ray``)."""

    address: str | None = None  # the cluster (ray.init's address); None: RAY_ADDRESS, else a local Ray
    actors: int | None = None  # scoring actors; None: one per GPU share of the cluster (1 without GPUs)
    gpus_per_actor: float | None = None  # None: 1 on a cluster with GPUs, else 0 (CPU actors)
    build_tasks: int | None = None  # CPU tasks building records at once; None: the cluster's CPUs the scoring leaves
    device: str = "auto"  # the scoring actors' device (auto: their GPU where they have one)
    precision: str = "fp32"
    compile: bool = False


class RayMissing(ValueError):
    """Ray is not installed (a ValueError, so the CLI says it in one line)."""


def require_ray() -> ModuleType:
    try:
        return importlib.import_module("ray")
    except ImportError as e:
        raise RayMissing(f"--engine ray needs Ray ({e}): pip install 'forensix[ray]'") from None


@dataclass(frozen=True)
class Plan:
    """The actors a scan gets on the cluster it found."""

    actors: int
    gpus_per_actor: float
    build_tasks: int

    @classmethod
    def on(cls, resources: dict[str, float], options: RayOptions) -> Plan:
        gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 1.0)
        per_actor = options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if gpus else 0.0)
        if per_actor < 0:
            raise ValueError(f"--gpus-per-actor must be 0 or more, got {per_actor:g}")
        if per_actor > 0 and gpus < per_actor:
            raise ValueError(f"--gpus-per-actor {per_actor:g}: the Ray cluster has {gpus:g} GPUs")
        if per_actor == 0 and options.device.startswith("cuda"):
            raise ValueError(f"--device {options.device} on Ray needs --gpus-per-actor (the cluster has {gpus:g} GPUs)")
        actors = options.actors or (max(1, math.floor(gpus / per_actor + 1e-9)) if per_actor else 1)
        left = math.floor(cpus - actors * SCORE_CPUS + 1e-9)
        if left < 1:
            raise ValueError(
                f"the Ray cluster has {cpus:g} CPUs: {actors} scoring actors take {actors * SCORE_CPUS:g} and "
                "building records needs one more; pass fewer --actors or add CPUs"
            )
        return cls(actors, per_actor, options.build_tasks or left)


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
    saved = (context.execution_options.preserve_order, context.target_max_block_size, context.enable_progress_bars)
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    context.execution_options.preserve_order = True
    context.target_max_block_size = ONE_BLOCK_A_ROW
    context.enable_progress_bars = False
    data_logger.setLevel(logging.ERROR)  # not its notices: a scan's own display and messages are forensix's
    try:
        yield
    finally:
        context.execution_options.preserve_order, context.target_max_block_size, context.enable_progress_bars = saved
        data_logger.setLevel(level)


@dataclass
class EntryBlock:
    """One block of detached entries, each with its index in the stream: a row of the read."""

    numbered: Numbered


@dataclass
class ScoredBlock:
    """A block back from a scoring actor: its records (inputs gone) and each prepared record's outputs by index."""

    block: Block
    outputs: dict[int, Any] = field(default_factory=dict)  # index -> forensix.pipeline.ImageOutputs


class _EntryStream(IterableDataset):
    """The read: ``entries()`` walked once in the read task, in blocks of ``size`` entries (fewer past
    ``block_bytes``)."""

    def __init__(self, entries: Callable[[], Iterator[Entry]], size: int, block_bytes: int) -> None:
        self.entries, self.size, self.block_bytes = entries, size, block_bytes

    def __iter__(self) -> Iterator[bytes]:
        for numbered in entry_blocks(self.entries(), self.size, self.block_bytes):
            yield _pickled(EntryBlock(numbered))


class _Attempts:
    """Which blocks the build tasks have started (a Ray actor): a block started again is one whose build was lost."""

    def __init__(self) -> None:
        self.started: set[int] = set()
        self.again = 0

    def first(self, block: int) -> bool:
        if block in self.started:
            self.again += 1
            return False
        self.started.add(block)
        return True

    def retried(self) -> int:
        return self.again


@dataclass
class _Shipped:
    """Object-store references, wrapped so that Ray hands them to actors as references (fetched there once)."""

    refs: dict[str, Any]

    def get(self, name: str) -> Any:
        return require_ray().get(self.refs[name])


def _build_blocks(batch: dict[str, Any], shipped: _Shipped) -> dict[str, list[bytes]]:
    """A CPU task: each block of entries becomes a block of records (alone, entry by entry, when retried).

    A task, not an actor: Ray runs tasks in their process's main thread, where the builder's time
    limits work (an actor's calls run in another thread, where signals do not reach).
    """
    ray = require_ray()
    disposable_worker()
    build: RecordBuilder = shipped.get("builder")
    attempts = shipped.refs["attempts"]
    blocks = []
    for entries in _unpickled(batch["item"]):
        numbered = entries.numbered
        if ray.get(attempts.first.remote(numbered[0][0])):
            records = [build(i, e) for i, e in numbered]
        else:  # this block's build was lost once: the entry that kills a process kills only its own
            records = [build_alone(build, i, e) for i, e in numbered]
        blocks.append(_pickled(collate(records)))
    return {"block": blocks}


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
                outputs = {r.index: o for r, o in zip(prepared, results)}
                for r, o in zip(prepared, results):
                    if o.mask is None:
                        r.raw = None  # the bytes travel on only for the mask files
            scored.append(_pickled(ScoredBlock(block, outputs)))
        return {"scored": scored}


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
    entries: Callable[[], Iterator[Entry]],
    build: RecordBuilder,
    models: Any,
    options: RayOptions,
    block_size: int,
    block_bytes: int,
    on_worker_death: Callable[[int], None],
) -> Iterator[ScoredBlock]:
    """Every entry of ``entries()`` built by ``build`` and its images run through ``models`` (a
    :class:`forensix.pipeline.ScanModels`) on Ray, as blocks in input order.

    ``entries`` is called once, in the read task on this node, and must pickle (with what it walks).
    ``on_worker_death(n)`` is told, at the end, how many blocks had to be built again.
    """
    with connected(options.address) as ray, _data_context(ray):
        plan = Plan.on(ray.cluster_resources(), options)
        attempts = ray.remote(num_cpus=0)(_Attempts).remote()
        # Held here for the whole scan: the actors (and restarted ones) fetch them from their node's store.
        shipped = _Shipped({"builder": ray.put(build), "models": ray.put(packed(models)), "attempts": attempts})
        ds = ray.data.from_torch(_EntryStream(entries, block_size, block_bytes), local_read=True)
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
            fn_constructor_args=(shipped, options.device, options.precision, options.compile),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            num_cpus=SCORE_CPUS,
            num_gpus=plan.gpus_per_actor,
        )
        for row in ds.iter_rows():
            yield pickle.loads(row["scored"])
        on_worker_death(ray.get(attempts.retried.remote()))
