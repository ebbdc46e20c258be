"""What each ``forensix train --task`` trains: the model, its batches, its loss and its validation.

- ``detect``: DeeCLIP. LoRA (peft) on q/k/v, the DeeFuser and the head are trained; the CLIP
  backbone stays frozen. Triplet loss on the token embeddings + 2 x BCE. Validation: accuracy at
  0.5 and AP (the best checkpoint is the one with the highest AP).
- ``localize``: a DeCLIP decoder on the frozen backbone; fake images with their masks, BCE against
  the soft 256x256 mask. Validation: mean IoU at 0.5 over images (DeCLIP's early-stopping metric).
- ``attribute``: source attribution with CLIP (:mod:`forensix.train.attribute`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Sampler

from ..datasets import Sample
from ..detector import Detector
from ..eval import EvalOptions, detection_metrics, localize, predict
from ..localizer import Localizer
from ..models.config import ModelConfig
from ..runner import LoadedWeights
from ..stages.loader import SampledBatches
from ..stages.records import Record
from .augment import Augment
from .data import Batch, ShuffleSampler, TrainDataset, TripletSampler, collate
from .losses import deeclip_loss

TASKS = ("detect", "localize", "attribute")  # attribute: forensix.train.attribute


@dataclass
class StepResult:
    loss: torch.Tensor
    images: int
    parts: dict[str, float]


class _DetectForward(nn.Module):
    """One forward for the embeddings and the logits, so DistributedDataParallel sees every gradient."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = self.model.forward_features(x)
        return embeddings, self.model.forward_head(embeddings)


def collate_triplets(items: list[Record]) -> Batch:
    """A triplet batch without the triplets that lost an image (unreadable files), layout kept."""
    b = len(items) // 3
    keep = [j for j in range(b) if not any(items[j + k * b].error for k in range(3))]
    batch = collate([items[j + k * b] for k in range(3) for j in keep])
    batch.failed = [(it.index, it.error) for it in items if it.error]
    return batch


class Task:
    """The parts of a training run that depend on what is trained."""

    name: str
    best_keys: tuple[str, ...]  # validation metrics to maximise, compared in order (ties go to the next)

    def __init__(self, cfg: ModelConfig, model: nn.Module, train: Sequence[Sample], val: Sequence[Sample]) -> None:
        self.cfg, self.model, self.train_samples, self.val_samples = cfg, model, train, val

    def forward_module(self) -> nn.Module:
        return self.model

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def set_train_mode(self) -> None:
        self.model.train()
        self.model.backbone.eval()  # frozen: LayerNorms only, but keep the frozen parts as at inference

    def sampler(self, batch_size: int, seed: int, rank: int, world: int) -> Sampler[list[int]]:
        raise NotImplementedError

    def dataset(self, augment: Augment, seed: int) -> TrainDataset:
        raise NotImplementedError

    def collate_fn(self):
        return collate

    def step(self, forward: nn.Module, batch: Batch, device: torch.device) -> StepResult:
        raise NotImplementedError

    def validate(self, device: torch.device, options: EvalOptions) -> dict[str, float]:
        raise NotImplementedError

    def loader(
        self, augment: Augment, batch_size: int, seed: int, workers: int, device: torch.device, rank: int, world: int
    ) -> tuple[SampledBatches, TrainDataset, Sampler[list[int]]]:
        dataset = self.dataset(augment, seed)
        sampler = self.sampler(batch_size, seed, rank, world)
        loader = SampledBatches(
            dataset,
            sampler,
            self.collate_fn(),
            dataset.crashed,
            workers=workers,
            pin_memory=device.type == "cuda",
            decode_timeout=dataset.build.decode_timeout,
        )
        return loader, dataset, sampler


class DetectTask(Task):
    name, best_keys = "detect", ("ap", "acc")

    def __init__(self, *args: Any, margin: float = 1.0, bce_weight: float = 2.0) -> None:
        super().__init__(*args)
        self.margin, self.bce_weight = margin, bce_weight
        self._forward = _DetectForward(self.model)

    def forward_module(self) -> nn.Module:
        return self._forward

    def sampler(self, batch_size: int, seed: int, rank: int, world: int) -> Sampler[list[int]]:
        return TripletSampler([s.label for s in self.train_samples], batch_size, seed, rank, world)

    def dataset(self, augment: Augment, seed: int) -> TrainDataset:
        return TrainDataset(self.train_samples, self.cfg.preprocess, augment, seed)

    def collate_fn(self):
        return collate_triplets

    def step(self, forward: nn.Module, batch: Batch, device: torch.device) -> StepResult:
        embeddings, logits = forward(batch.images.to(device, non_blocking=True))
        loss, parts = deeclip_loss(
            embeddings.float(), logits, batch.labels.to(device), margin=self.margin, bce_weight=self.bce_weight
        )
        return StepResult(loss, len(batch.indices), parts)

    def validate(self, device: torch.device, options: EvalOptions) -> dict[str, float]:
        loaded = LoadedWeights(self.cfg, self.cfg.name, "", "training", {}, model=self.model)
        detector = Detector.from_torch(loaded, device=str(device))
        found = predict(self.val_samples, detector, options=options)
        ok = found.ok
        labels = np.array([s.label for s in self.val_samples])[ok]
        scores = 1.0 / (1.0 + np.exp(-found.logits[ok]))
        m = detection_metrics(labels, scores, 0.5)
        return {"acc": m.acc or 0.0, "ap": m.ap or 0.0, "real_acc": m.real_acc or 0.0, "fake_acc": m.fake_acc or 0.0}


class LocalizeTask(Task):
    name, best_keys = "localize", ("iou", "f1")

    def __init__(self, *args: Any, masks_inverted: bool = True) -> None:
        super().__init__(*args)
        self.masks_inverted = masks_inverted

    def set_train_mode(self) -> None:
        super().set_train_mode()
        if self.model.cnn is not None:
            self.model.cnn.eval()  # frozen RN50: its BatchNorm statistics must not move

    def sampler(self, batch_size: int, seed: int, rank: int, world: int) -> Sampler[list[int]]:
        return ShuffleSampler(len(self.train_samples), batch_size, seed, rank, world)

    def dataset(self, augment: Augment, seed: int) -> TrainDataset:
        size = self.cfg.decoder.mask_size
        return TrainDataset(self.train_samples, self.cfg.preprocess, augment, seed, size, self.masks_inverted)

    def step(self, forward: nn.Module, batch: Batch, device: torch.device) -> StepResult:
        logits = forward(batch.images.to(device, non_blocking=True))
        loss = F.binary_cross_entropy_with_logits(logits.float(), batch.targets.to(device))
        return StepResult(loss, len(batch.indices), {"bce": loss.item()})

    def validate(self, device: torch.device, options: EvalOptions) -> dict[str, float]:
        loaded = LoadedWeights(self.cfg, self.cfg.name, "", "training", {}, model=self.model)
        scores = localize(
            self.val_samples, Localizer.from_torch(loaded, device=str(device)), self.masks_inverted, options=options
        )
        found = [s for s in scores if s is not None]
        if not found:
            return {"iou": 0.0, "f1": 0.0}
        return {"iou": float(np.mean([s.iou for s in found])), "f1": float(np.mean([s.f1 for s in found]))}
