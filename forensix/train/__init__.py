"""``forensix train``: build a task's model and data from the command's choices, then run the loop.

Where the model starts (``init``):
- ``openai`` — OpenAI's CLIP weights for the frozen backbone (``forensix weights fetch
  clip-vit-l-14``; ViT+RN50 also ``clip-rn50``; the attributor: both towers of that CLIP),
  everything trained starts fresh (LoRA B = 0, as peft initialises it);
- ``random`` — random weights everywhere (toy runs and tests);
- a file — a forensix checkpoint of the same architecture (``last.safetensors`` of another run,
  or ``forensix weights import --keep-lora``) or an official DeeCLIP / DeCLIP checkpoint: training
  continues from it.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import weights as W
from ..datasets import Dataset, Sample, load_dataset
from ..models.checkpoints import CheckpointError, build_and_load, read_model_file, read_state_dict, with_article
from ..models.clip_weights import load_clip_backbone
from ..models.config import ModelConfig, get_config
from ..models.factory import create_model
from ..models.lora import add_lora, has_lora
from ..models.registry import ConvertOptions
from .attribute import AttributeTask, attribution_classes, attribution_model, class_counts, with_classes
from .loop import TrainOptions, fit
from .tasks import TASKS, DetectTask, LocalizeTask, Task

DEFAULT_CONFIGS = {
    "detect": "deeclip-vit-l-14",
    "localize": "declip-vit-l-14-layer20-conv20",
    "attribute": "attribution-vit-l-14",
}
KIND_FOR_TASK = {"detect": "detector", "localize": "localizer", "attribute": "attributor"}
# Each task's recipe defaults. attribute: Adam (AdamW without weight decay) for the paper's 12 epochs;
# the paper gives no learning rate, 5e-5 is the usual one for fine-tuning CLIP with Adam.
RECIPES: dict[str, dict[str, float]] = {
    "detect": {"lr": 5e-5, "epochs": 5, "weight_decay": 0.01},
    "localize": {"lr": 1e-3, "epochs": 5, "weight_decay": 0.01},
    "attribute": {"lr": 5e-5, "epochs": 12, "weight_decay": 0.0},
}

__all__ = ["RECIPES", "TASKS", "TrainOptions", "TrainRun", "build_model", "fit", "prepare", "split_samples"]


@dataclass
class TrainRun:
    task: Task
    provenance: dict[str, Any]


def build_model(
    task: str, cfg: ModelConfig, init: str, seed: int = 0, finetune: str = "lora"
) -> tuple[ModelConfig, torch.nn.Module]:
    """The model to train, on the CPU, with LoRA layers for detection (attribution: ``finetune`` lora
    or full); see the module docstring for ``init``."""
    if cfg.kind != KIND_FOR_TASK[task]:
        wanted = with_article(KIND_FOR_TASK[task])
        raise ValueError(f"--task {task} trains {wanted}; config {cfg.name!r} is {cfg.arch}, {with_article(cfg.kind)}")
    torch.manual_seed(seed)
    if task == "attribute":
        return attribution_model(cfg, init, finetune)
    if init in ("openai", "random"):
        model = create_model(cfg)
        if init == "openai":
            clip = read_state_dict(W.resolve("clip-vit-l-14")["backbone"])
            cnn = read_state_dict(W.resolve("clip-rn50")["backbone"]) if cfg.cnn is not None else None
            load_clip_backbone(model, clip, cnn, source="OpenAI CLIP")
    else:
        cfg, model = _from_file(Path(init), KIND_FOR_TASK[task])
    if task == "detect" and not all(hasattr(model, m) for m in ("forward_features", "forward_head")):
        # The triplet loss reads the token embeddings the head pools (DeeCLIP's recipe).
        raise ValueError(f"--task detect needs a model with forward_features and forward_head; {cfg.arch} has none")
    if task == "detect" and not has_lora(model):
        if cfg.lora is None:
            raise ValueError(f"config {cfg.name!r} has no LoRA settings to train")
        add_lora(model.backbone, cfg.lora)
    return cfg, model


def _from_file(path: Path, kind: str) -> tuple[ModelConfig, torch.nn.Module]:
    if not path.is_file():
        raise CheckpointError(f"--init {path}: no such file (or use openai | random)")
    found = read_model_file(path, kind=kind, options=ConvertOptions(merge_lora=False))
    model = build_and_load(found.config, found.state, source=str(path))
    for name, p in model.named_parameters():
        # Loaded tensors keep the module's flags, but be explicit: only LoRA and the heads learn.
        p.requires_grad_(not name.startswith(("backbone.", "cnn.")) or ".lora_" in name)
    return found.config, model


def split_samples(
    samples: list[Sample], fraction: float, seed: int, by: Callable[[Sample], Hashable] = lambda s: s.label
) -> tuple[list[Sample], list[Sample]]:
    """A deterministic validation split of ``fraction`` of each class (``by``: a sample's class)."""
    rng = random.Random(f"split:{seed}")
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[by(s)].append(i)
    held: set[int] = set()
    for key in sorted(groups):
        group = groups[key]
        rng.shuffle(group)
        held.update(group[: round(len(group) * fraction)])
    train = [s for i, s in enumerate(samples) if i not in held]
    return train, [s for i, s in enumerate(samples) if i in held]


def _counts(samples: list[Sample]) -> dict[str, int]:
    c = Counter("fake" if s.label else "real" for s in samples)
    return {"real": c["real"], "fake": c["fake"]}


def prepare(
    task: str,
    data: str | Path,
    val: str | Path | None = None,
    config: str | None = None,
    init: str = "openai",
    val_fraction: float = 0.1,
    seed: int = 0,
    layout: str = "auto",
    masks_inverted: bool = True,
    finetune: str = "lora",
) -> TrainRun:
    """Read the data, build the model, and pick the task: everything ``fit`` needs."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if task != "attribute" and finetune != "lora":
        raise ValueError("--finetune is for --task attribute (detection always trains LoRA)")
    train_set = load_dataset(data, layout, split="train", inverted_masks=masks_inverted)
    train_samples = list(train_set.samples)
    if val is not None:
        val_set: Dataset | None = load_dataset(val, layout, split="val", inverted_masks=masks_inverted)
        val_samples = list(val_set.samples)
    elif train_set.layout == "genimage":
        val_set = load_dataset(data, "genimage", split="val")
        val_samples = list(val_set.samples)
    else:
        val_set = None
        by_class = (lambda s: s.source_class) if task == "attribute" else (lambda s: s.label)
        train_samples, val_samples = split_samples(train_samples, val_fraction, seed, by_class)
    if task == "localize":  # fake images with masks only
        train_samples = [s for s in train_samples if s.label == 1 and s.mask]
        val_samples = [s for s in val_samples if s.label == 1 and s.mask]
        if not train_samples:
            raise ValueError(f"{data}: no fake images with masks to train a localizer on (a Dolos layout is needed)")
    cfg = get_config(config or DEFAULT_CONFIGS[task])
    if task == "attribute" and cfg.arch == "attribution":
        cfg = with_classes(cfg, attribution_classes(train_samples, val_samples))
    cfg, model = build_model(task, cfg, init, seed, finetune)
    if task == "detect":
        built: Task = DetectTask(cfg, model, train_samples, val_samples)
    elif task == "localize":
        built = LocalizeTask(cfg, model, train_samples, val_samples, masks_inverted=masks_inverted)
    else:
        built = AttributeTask(cfg, model, train_samples, val_samples)
    provenance = {
        "trained_on": {
            "data": str(data),
            "layout": train_set.layout,
            "val": str(val)
            if val is not None
            else (f"{data} (val split)" if val_set else f"{val_fraction:g} of {data}"),
            "train_counts": _counts(train_samples),
            "val_counts": _counts(val_samples),
        },
        "init": init,
        "seed": seed,
    }
    if task == "attribute":
        counts = {"train_classes": class_counts(train_samples), "val_classes": class_counts(val_samples)}
        provenance["trained_on"].update(counts)
        provenance["finetune"] = finetune
    return TrainRun(built, provenance)
