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
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

from ..datasets import Sample, read_image_bytes
from ..imaging import DEFAULT_MAX_PIXELS, DecodeError, decode_image, preprocess
from ..metrics import load_mask
from ..models.config import PreprocessConfig
from .augment import Augment


@dataclass
class Item:
    index: int
    tensor: torch.Tensor | None  # None: the file could not be read or decoded
    label: int
    target: torch.Tensor | None = None  # (S, S) soft mask in [0, 1], localization only
    error: str = ""


@dataclass
class Batch:
    images: torch.Tensor  # (n, 3, H, W) of the readable items
    labels: torch.Tensor  # (n,) float
    targets: torch.Tensor | None  # (n, S, S) or None
    indices: list[int]  # dataset indices of the rows (readable ones)
    failed: list[tuple[int, str]]  # (dataset index, why) of the unreadable ones


class TrainDataset(TorchDataset):
    """Samples → augmented, preprocessed tensors; ``mask_size`` > 0 also yields the soft mask target."""

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
        self.samples, self.cfg, self.augment, self.seed = samples, cfg, augment, seed
        self.mask_size, self.masks_inverted, self.max_pixels = mask_size, masks_inverted, max_pixels
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Before each epoch, so augmentations differ between epochs (workers are re-created per epoch)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> Item:
        sample = self.samples[index]
        try:
            image = decode_image(read_image_bytes(sample.path), self.max_pixels).image
            mask = None
            if self.mask_size:
                if sample.mask is None:
                    raise ValueError("no mask for this image")
                gt = load_mask(sample.mask, self.masks_inverted)
                mask = Image.fromarray(gt.astype(np.uint8) * 255)
                if mask.size != image.size:
                    raise ValueError(
                        f"mask is {mask.size[0]}x{mask.size[1]}, the image {image.size[0]}x{image.size[1]}"
                    )
            rng = random.Random(f"{self.seed}:{self.epoch}:{index}")
            image, mask = self.augment(image, mask, rng)
            item = Item(index, preprocess(image, self.cfg), sample.label)
            if mask is not None:
                # The soft target: the binary mask squashed to S x S with bilinear averaging (the
                # localizer squashes the image the same way).
                soft = mask.resize((self.mask_size, self.mask_size), Image.Resampling.BILINEAR)
                item.target = torch.from_numpy(np.asarray(soft, dtype=np.float32) / 255.0)
            return item
        except (DecodeError, ValueError, OSError) as e:
            return Item(index, None, sample.label, error=str(e))


def collate(items: list[Item]) -> Batch:
    ok = [it for it in items if it.tensor is not None]
    targets = [it.target for it in ok if it.target is not None]
    return Batch(
        images=torch.stack([it.tensor for it in ok]) if ok else torch.zeros(0, 3, 1, 1),
        labels=torch.tensor([float(it.label) for it in ok]),
        targets=torch.stack(targets) if targets else None,
        indices=[it.index for it in ok],
        failed=[(it.index, it.error) for it in items if it.tensor is None],
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
