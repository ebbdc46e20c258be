"""What a scan on Ray asks for (``forensix scan --engine ray``) and what it gets on the cluster it finds.

No Ray here (the options travel with every scan's settings); :mod:`forensix.ray_engine` runs the scan.
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass
from types import ModuleType

SCORE_CPUS = 1.0  # each scoring actor's CPU: it feeds its device
DEFAULT_SHARD_SIZE = 4096  # a sharded report's inputs a shard (forensix.shards), rounded up to whole blocks
# Archives in the inputs listed (a compressed one decompressed) by tasks of their own, this many at once:
# one for each CPUS_A_LIST_TASK CPUs of the cluster, from MIN_ to MAX_LIST_TASKS.
MIN_LIST_TASKS, MAX_LIST_TASKS, CPUS_A_LIST_TASK = 2, 16, 8


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
    block_size: int = 256  # inputs a Ray block (built by one task, scored by one actor in model batches)

    def block_for(self, batch_size: int) -> int:
        """Inputs a Ray block for model batches of ``batch_size``: at least one batch. Each block costs
        the driver's Ray Data executor the same, whatever its size (docs/scale.md)."""
        if self.block_size < 1:
            raise ValueError(f"--ray-block must be at least 1, got {self.block_size}")
        return max(batch_size, self.block_size)


class RayMissing(ValueError):
    """Ray is not installed (a ValueError, so the CLI says it in one line)."""


def require_ray() -> ModuleType:
    try:
        return importlib.import_module("ray")
    except ImportError as e:
        raise RayMissing(f"--engine ray needs Ray ({e}): pip install 'forensix[ray]'") from None


@dataclass(frozen=True)
class Plan:
    """The actors a scan gets on the cluster it found, the device they open the models on, and its CPU
    tasks: building records, and (a sharded report) making and writing the shards."""

    actors: int
    gpus_per_actor: float
    build_tasks: int
    device: str = "cpu"
    write_tasks: int = 0  # a sharded report's writers (forensix.shards)
    write_cpus: float = 1.0  # each writer's; 0 on a cluster with no CPU to spare (the writers share the builders')
    list_tasks: int = MIN_LIST_TASKS  # archives listed at once, ahead of the walk (forensix.ray_engine)

    @classmethod
    def on(cls, resources: dict[str, float], options: RayOptions, shards: bool = False, masks: bool = False) -> Plan:
        """The plan for ``options`` on a cluster of ``resources``; ``shards``: writers of a sharded report
        too, as many as mask files (``masks``, decoded again and drawn) or rows alone need."""
        gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 1.0)
        on_gpus = options.device != "cpu" and gpus > 0
        per_actor = options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if on_gpus else 0.0)
        if per_actor < 0:
            raise ValueError(f"--gpus-per-actor must be 0 or more, got {per_actor:g}")
        if per_actor == 0 and options.device.startswith("cuda"):
            raise ValueError(f"--device {options.device} on Ray needs --gpus-per-actor (the cluster has {gpus:g} GPUs)")
        if per_actor == 0 and options.precision == "fp16":
            raise ValueError("--precision fp16 needs GPUs: give the actors some (--gpus-per-actor), or use bf16")
        actors = options.actors or (max(1, math.floor(gpus / per_actor + 1e-9)) if per_actor else 1)
        if actors * per_actor > gpus + 1e-9:
            raise ValueError(
                f"{actors} scoring actors with {per_actor:g} GPUs each need {actors * per_actor:g} GPUs: "
                f"the Ray cluster has {gpus:g}"
            )
        left = math.floor(cpus - actors * SCORE_CPUS + 1e-9)
        if left < 1:
            raise ValueError(
                f"the Ray cluster has {cpus:g} CPUs: {actors} scoring actors take {actors * SCORE_CPUS:g} and "
                "building records needs one more; pass fewer --actors or add CPUs"
            )
        # Actors without a GPU open the models on the CPU: Ray hides no GPU from them (CUDA_VISIBLE_DEVICES).
        device = options.device if per_actor > 0 else "cpu"
        build, writers, write_cpus = options.build_tasks or left, 0, 1.0
        if shards:  # writers need CPUs of their own: builders left alone would take them all until the end
            writers = max(1, left // (2 if masks else 8))
            if options.build_tasks is None:
                build = max(1, left - writers)
            if build + writers > left:
                write_cpus = 0.0
        listing = min(MAX_LIST_TASKS, max(MIN_LIST_TASKS, math.floor(cpus) // CPUS_A_LIST_TASK))
        return cls(actors, per_actor, build, device, writers, write_cpus, listing)


def is_sharded(out: str | os.PathLike[str]) -> bool:
    """Whether ``--out`` names a sharded report's folder (:mod:`forensix.shards`): an existing folder,
    or a path ending in a separator."""
    text = os.fspath(out)
    return os.path.isdir(text) or text.endswith(("/", os.sep))
