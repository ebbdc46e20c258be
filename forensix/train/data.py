"""Training batches: samples decoded as the scan decodes them, augmented, preprocessed for the model.

Detection batches are triplets (DeeCLIP): each sample is the anchor once per epoch; the positive is
another image of the anchor's class and the negative one of the other class, drawn at random. A
batch of B triplets is 3B images laid out ``[anchors, positives, negatives]``, each with its own
label, so the BCE term pairs every logit with its own image's label. Localization batches are fake
images with their masks as soft 256x256 targets.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

from ..datasets import Sample
from ..imaging import DEFAULT_MAX_PIXELS
from ..inputs import file_entry
from ..mask_metrics import load_mask
from ..models.config import PreprocessConfig
from ..stages.batches import collate as collate_records
from ..stages.records import IMAGE, Record, RecordBuilder
from .augment import Augment

TARGET = "target"  # a localization record's soft mask target (S, S) in [0, 1]


@dataclass
class Batch:
    images: torch.Tensor  # (n, 3, H, W) of the readable items
    labels: torch.Tensor  # (n,) float
    targets: torch.Tensor | None  # (n, S, S) or None
    indices: list[int]  # dataset indices of the rows (readable ones)
    failed: list[tuple[int, str]]  # (dataset index, why) of the unreadable ones


@dataclass(frozen=True)
class Augmentation:
    """The record builder's transform for training: the sample's augmentation, its mask moved along.

    With ``mask_size`` > 0 the sample's mask is loaded, augmented with the image and added to the
    record as its soft ``TARGET``. Deterministic in (seed, epoch, index).
    """

    samples: Sequence[Sample]
    augment: Augment
    seed: int = 0
    epoch: int = 0
    mask_size: int = 0
    masks_inverted: bool = True

    def __call__(self, image: Image.Image, record: Record) -> Image.Image:
        sample = self.samples[record.index]
        mask = None
        if self.mask_size:
            if sample.mask is None:
                raise ValueError("no mask for this image")
            gt = load_mask(sample.mask, self.masks_inverted)
            mask = Image.fromarray(gt.astype(np.uint8) * 255)
            if mask.size != image.size:
                raise ValueError(f"mask is {mask.size[0]}x{mask.size[1]}, the image {image.size[0]}x{image.size[1]}")
        rng = random.Random(f"{self.seed}:{self.epoch}:{record.index}")
        image, mask = self.augment(image, mask, rng)
        if mask is not None:
            # The soft target: the binary mask squashed to S x S with bilinear averaging (the
            # localizer squashes the image the same way).
            soft = mask.resize((self.mask_size, self.mask_size), Image.Resampling.BILINEAR)
            record.inputs[TARGET] = torch.from_numpy(np.asarray(soft, dtype=np.float32) / 255.0)
        return image


class TrainDataset(TorchDataset):
    """Samples → records (the scan's record builder) with augmented, preprocessed inputs and labels;
    ``mask_size`` > 0 also gives each the soft mask target."""

    def __init__(
        self,
        samples: Sequence[Sample],
        cfg: PreprocessConfig,
        augment: Augment,
        seed: int = 0,
        mask_size: int = 0,
        masks_inverted: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.samples = samples
        self.augmentation = Augmentation(samples, augment, seed, 0, mask_size, masks_inverted)
        self.build = RecordBuilder(cfg, max_pixels=max_pixels, transform=self.augmentation)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Before each epoch, so augmentations differ between epochs (workers are re-created per epoch)."""
        self.augmentation = replace(self.augmentation, epoch=epoch)
        self.build = replace(self.build, transform=self.augmentation)

    def __getitem__(self, index: int) -> Record:
        sample = self.samples[index]
        record = self.build(index, file_entry(sample.path))
        record.label = sample.label
        return record

    def crashed(self, index: int, why: str) -> Record:
        """The record of a sample whose decoding killed its process: unreadable, as any other."""
        sample = self.samples[index]
        record = self.build.crashed(index, file_entry(sample.path), why)
        record.label = sample.label
        return record


def collate(records: list[Record]) -> Batch:
    """The stages' collate, as a training batch of the readable records."""
    block = collate_records(records)
    ok = [r for r in block.records if not r.error]
    return Batch(
        images=block.inputs.get(IMAGE, torch.zeros(0, 3, 1, 1)),
        labels=torch.tensor([float(r.label) for r in ok]),
        targets=block.inputs.get(TARGET),
        indices=[r.index for r in ok],
        failed=[(r.index, r.error) for r in block.records if r.error],
    )


class TripletSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` triplets as index lists ``[anchors, positives, negatives]``.

    Each sample is an anchor once per epoch (shuffled); positives and negatives are drawn uniformly
    from the anchor's class and the other class. ``rank``/``world`` split the batches between
    distributed processes. Deterministic in (seed, epoch).
    """

    def __init__(self, labels: Sequence[int], batch_size: int, seed: int = 0, rank: int = 0, world: int = 1) -> None:
        self.by_class = {c: [i for i, y in enumerate(labels) if y == c] for c in (0, 1)}
        if not self.by_class[0] or not self.by_class[1]:
            raise ValueError("triplets need real and fake images; the training set lacks one class")
        self.n, self.batch_size, self.seed, self.rank, self.world = len(labels), batch_size, seed, rank, world
        self.labels = list(labels)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = random.Random(f"triplets:{self.seed}:{self.epoch}")
        anchors = list(range(self.n))
        rng.shuffle(anchors)
        out = []
        for start in range(0, self.n, self.batch_size):
            group = anchors[start : start + self.batch_size]
            pos = [rng.choice(self.by_class[self.labels[a]]) for a in group]
            neg = [rng.choice(self.by_class[1 - self.labels[a]]) for a in group]
            out.append(group + pos + neg)
        return _share(out, self.rank, self.world)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


class ShuffleSampler(Sampler[list[int]]):
    """Plain shuffled batches (localization, attribution), deterministic in (seed, epoch), split by rank."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        order = list(range(self.n))
        random.Random(f"shuffle:{self.seed}:{self.epoch}").shuffle(order)
        out = [order[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        return _share(out, self.rank, self.world)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def _share(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process's batches: every world-th one, the list first padded with its own start so that
    every process takes the same number of steps (DistributedDataParallel's collectives need it)."""
    pad = -len(batches) % world
    return (batches + batches[:pad])[rank::world]
