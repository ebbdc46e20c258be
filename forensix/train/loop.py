"""The training loop shared by every task: AdamW, mixed precision, accumulation, checkpoints, resume, DDP.

Checkpoints go to ``out_dir``: ``last.safetensors`` after every epoch, ``best.safetensors`` when the
validation metric improves (both forensix checkpoints: the model's config and the run's provenance
in the metadata, loadable by ``forensix scan --weights``), ``training_state.safetensors`` (the
optimizer and the progress) and ``log.jsonl`` (one line per epoch). ``resume`` continues from the
last completed epoch; with the same seed the run is the same as one that never stopped, because all
randomness is derived from (seed, epoch, index). Under ``torchrun`` with more than one process, the
model is wrapped in DistributedDataParallel and each process takes every world-th batch; only rank
0 validates and writes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .. import __version__
from ..eval import EvalOptions
from ..models.checkpoints import CheckpointError, read_checkpoint, save_checkpoint
from ..torch_backend import PRECISIONS, resolve_device
from .augment import Augment
from .state import load_training_state, save_training_state
from .tasks import Task

LAST, BEST, STATE, LOG = "last.safetensors", "best.safetensors", "training_state.safetensors", "log.jsonl"


@dataclass
class TrainOptions:
    epochs: int = 5
    batch_size: int = 8  # triplets for detect, images otherwise
    lr: float = 5e-5
    weight_decay: float = 0.01
    accumulate: int = 1  # micro-batches per optimizer step
    precision: str = "fp32"  # bf16 / fp16: autocast on CUDA
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs)
    augment: Augment = field(default_factory=Augment)
    eval_batch_size: int = 32

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.accumulate < 1:
            raise ValueError("epochs, batch size and accumulation must be at least 1")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass
class Progress:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best: list[float] | None = None  # the best checkpoint's validation metrics (task.best_keys)
    history: list[dict[str, Any]] = field(default_factory=list)


def _distributed() -> tuple[int, int]:
    """(rank, world) under torchrun, (0, 1) otherwise; starts the process group when needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def fit(
    task: Task,
    options: TrainOptions,
    out_dir: Path,
    provenance: dict[str, Any],
    resume: bool = False,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> Progress:
    """Train ``task.model`` and write checkpoints to ``out_dir``; returns where training ended.

    ``report`` is called with a dict after every optimizer step (loss, images/s) and every epoch
    (validation metrics), for a progress display.
    """
    out_dir = Path(out_dir)
    rank, world = _distributed()
    device = resolve_device(options.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    dtype = PRECISIONS[options.precision]
    if dtype != torch.float32 and device.type != "cuda":
        raise ValueError(f"--precision {options.precision} needs a CUDA device; train in fp32 on the CPU")
    task.model.to(device)
    params = task.trainable()
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    progress = Progress()
    if resume:
        progress = _resume(task, optimizer, out_dir, device)
    forward = task.forward_module()
    if world > 1:
        forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
    loader, dataset, sampler = task.loader(
        options.augment, options.batch_size, options.seed, options.workers, device, rank, world
    )
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    recipe = {"task": task.name, "options": _options_dict(options), "world_size": world}
    for epoch in range(progress.epoch, options.epochs):
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        task.set_train_mode()
        started, images, failed, micro = time.perf_counter(), 0, 0, 0
        optimizer.zero_grad(set_to_none=True)
        for batch in loader:
            failed += len(batch.failed)
            if not batch.indices:
                continue
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                result = task.step(forward, batch, device)
            scaler.scale(result.loss / options.accumulate).backward()
            micro += 1
            images += result.images
            if micro % options.accumulate:
                continue
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            if report is not None and rank == 0:
                rate = images / max(time.perf_counter() - started, 1e-9)
                report(
                    {
                        "epoch": epoch + 1,
                        "step": progress.step,
                        "loss": result.loss.detach().item(),
                        **result.parts,
                        "img_per_s": rate,
                    }
                )
            if options.max_steps is not None and progress.step >= options.max_steps:
                break
        if micro % options.accumulate:  # the epoch's last, partial accumulation
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            progress.step += 1
        progress.epoch = epoch + 1
        if rank == 0:
            metrics = task.validate(device, EvalOptions(batch_size=options.eval_batch_size)) if task.val_samples else {}
            entry = {
                "epoch": progress.epoch,
                "step": progress.step,
                "unreadable": failed,
                "seconds": round(time.perf_counter() - started, 3),
                **metrics,
            }
            progress.history.append(entry)
            score = [metrics[k] for k in task.best_keys] if metrics else None
            improved = score is not None and (progress.best is None or score > progress.best)
            if improved:
                progress.best = score
            _save(
                task, optimizer, out_dir, progress, {**provenance, "recipe": recipe}, improved or not task.val_samples
            )
            if report is not None:
                report({"validation": entry})
        if world > 1:
            dist.barrier()
        if options.max_steps is not None and progress.step >= options.max_steps:
            break
    return progress


def _options_dict(options: TrainOptions) -> dict[str, Any]:
    d = {k: v for k, v in vars(options).items() if k != "augment"}
    d["augment"] = options.augment.to_dict()
    return d


def _save(
    task: Task, optimizer: torch.optim.Optimizer, out_dir: Path, progress: Progress, provenance: dict, best: bool
) -> None:
    state = task.model.state_dict()
    meta = {
        **provenance,
        "epoch": progress.epoch,
        "step": progress.step,
        "validation": progress.history[-1] if progress.history else {},
        "forensix_version": __version__,
        "torch_version": torch.__version__,
    }
    save_checkpoint(out_dir / LAST, task.cfg, state, meta)
    if best:
        save_checkpoint(out_dir / BEST, task.cfg, state, meta)
    save_training_state(out_dir / STATE, optimizer, vars(progress))
    with open(out_dir / LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(progress.history[-1] if progress.history else {"epoch": progress.epoch}) + "\n")


def _resume(task: Task, optimizer: torch.optim.Optimizer, out_dir: Path, device: torch.device) -> Progress:
    last, state = out_dir / LAST, out_dir / STATE
    if not last.is_file() or not state.is_file():
        raise CheckpointError(f"{out_dir}: nothing to resume (no {LAST} and {STATE} there)")
    cfg, tensors, _ = read_checkpoint(last)
    if cfg != task.cfg:
        raise CheckpointError(f"{last}: written for model config {cfg.name!r}, not the one being trained")
    try:
        task.model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{last}: does not fit the model being trained ({e})") from None
    task.model.to(device)
    saved = load_training_state(state, optimizer)
    return Progress(**saved)
