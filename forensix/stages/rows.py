"""Scored records → report rows: scores, verdicts, sources, mask files and the scan's counts.

A :class:`RowMaker` holds only what a row takes from the models (the detector's name, threshold,
band and temperature, the attributor's classes) and where mask files go, so it runs wherever the
rows are made: the scan's process (:class:`forensix.pipeline.Scanner`), or a Ray task writing a
report shard (:mod:`forensix.ray_engine`). Both make the same rows from the same records and model
outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..attributor import top_classes
from ..detector import scale_logits
from ..imaging import DEFAULT_MAX_PIXELS, decode_image
from ..inputs import InputItem
from ..overlay import MaskFiles, write_mask_files
from ..schema import new_row
from ..verdicts import verdict
from .batches import Block
from .records import IMAGE, SKIP_RESUMED, Record

if TYPE_CHECKING:
    from ..attributor import Attributor
    from ..detector import Detector

Submit = Callable[..., "Future[MaskFiles]"]  # a thread pool's submit: where mask files are written


@dataclass
class ScanStats:
    entries: int = 0
    images: int = 0  # rows written
    fake: int = 0
    real: int = 0
    uncertain: int = 0  # in the detector's uncertain band
    errors: int = 0
    skipped_non_images: int = 0
    resumed: int = 0
    masks: int = 0  # images whose mask files were written
    cached: int = 0  # images whose logit came from the prediction cache
    worker_deaths: int = 0  # decode workers that died (the scan went on without losing a row)

    def add(self, other: ScanStats) -> None:
        """Count ``other``'s too (a shard's counts, made elsewhere)."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class ImageOutputs:
    """What a scan's models said of one image: the detector's raw logit, the attributor's class
    probabilities, the localizer's probability map (only for an image that gets mask files)."""

    logit: float
    probabilities: np.ndarray | None = None
    mask: np.ndarray | None = None


@dataclass
class Pending:
    """A record on its way to its row: the row so far, views of its inputs in the block's tensors,
    and the mask files being written for it."""

    record: Record
    row: dict[str, Any]
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    mask_job: Future[MaskFiles] | None = None


def scores_of(raw: torch.Tensor, temperature: float) -> list[float]:
    """P(fake) of raw float32 logits: the operations every scored row's score comes from."""
    return torch.sigmoid(scale_logits(raw, temperature)).tolist()


def start_row(record: Record) -> dict[str, Any]:
    """The row of a prepared record before it is scored: what reading and decoding found."""
    row = new_row(InputItem(record.path, record.member, record.error))
    row.update(sha256=record.sha256, width=record.width, height=record.height, format=record.format)
    row["notes"] = record.notes
    if record.metadata is not None:
        row["metadata"] = record.metadata
    if record.watermark is not None:
        row["watermark"] = record.watermark
    return row


@dataclass(frozen=True)
class RowMaker:
    """What turns records and the models' outputs into rows; light, so that it travels to Ray's tasks."""

    model: str  # the detector's name (the rows' ``model``)
    threshold: float
    band_low: float | None
    temperature: float
    classes: tuple[str, ...] | None = None  # the attributor's, when one runs
    masks_dir: Path | None = None  # where mask files go (a localizer runs)
    max_pixels: int = DEFAULT_MAX_PIXELS  # the mask files' image is decoded again, under the scan's limit

    @classmethod
    def of(cls, detector: Detector, attributor: Attributor | None, masks_dir: Path | None, max_pixels: int) -> RowMaker:
        classes = tuple(attributor.classes) if attributor is not None else None
        return cls(detector.name, detector.threshold, detector.band_low, detector.temperature, classes,
                   masks_dir, max_pixels)  # fmt: skip

    def pending(self, block: Block, stats: ScanStats) -> Iterator[tuple[Pending, bool]]:
        """The block's records that become rows, each with whether it waits for the detector; skips counted."""
        views = {name: iter(t) for name, t in block.inputs.items()}
        for record in block.records:
            stats.entries += 1
            if record.skip:
                if record.skip == SKIP_RESUMED:
                    stats.resumed += 1
                else:
                    stats.skipped_non_images += 1
                continue
            p = Pending(record, start_row(record))
            if record.logit is not None:  # from the prediction cache, by the very operations that score a batch
                stats.cached += 1
                p.row["score"] = scores_of(torch.tensor([record.logit], dtype=torch.float32), self.temperature)[0]
            elif record.has_input:  # views into the block's (pinned) tensors
                p.inputs = {name: next(view) for name, view in views.items()}
            yield p, IMAGE in p.inputs

    def apply(self, scored: list[Pending], outputs: list[ImageOutputs], submit: Submit | None) -> None:
        """What the models said of each record of ``scored``: its score, its source, its mask files
        (written by ``submit``'s threads)."""
        raw = torch.tensor([o.logit for o in outputs], dtype=torch.float32)
        for p, score in zip(scored, scores_of(raw, self.temperature), strict=True):
            p.row["score"] = score
        if self.classes is not None and scored:
            probabilities = np.stack([o.probabilities for o in outputs])
            for p, (source, prob) in zip(scored, top_classes(self.classes, probabilities)):
                if math.isfinite(prob):
                    p.row["source"], p.row["source_score"] = source, prob
                elif not p.row["error"]:
                    p.row["error"] = "the attributor returned a non-finite score (try --precision fp32)"
        if submit is not None:
            assert self.masks_dir is not None
            for p, o in zip(scored, outputs):
                if o.mask is not None:
                    p.mask_job = submit(_write_masks, p.record.raw, o.mask, self.masks_dir, p.row, self.max_pixels)
                p.record.raw = None

    def finish(self, pending: Pending, stats: ScanStats) -> dict[str, Any]:
        """The row, once its mask files are written (wait for them: :func:`writing_masks`), counted."""
        row = pending.row
        if pending.mask_job is not None:
            try:
                files = pending.mask_job.result()
                row["mask"], row["mask_map"], row["mask_fraction"] = (
                    str(files.overlay_path),
                    str(files.map_path),
                    files.fraction,
                )
                stats.masks += 1
            except (OSError, ValueError) as e:  # the verdict stands; the row says what is missing
                row["error"] = f"mask files not written: {e}"
        row["model"] = self.model
        row["threshold"] = self.threshold
        row["band_low"] = self.band_low
        if row["score"] is not None and not math.isfinite(row["score"]):
            row["score"], row["error"] = None, "the model returned a non-finite score (try --precision fp32)"
        if row["score"] is not None:
            row["verdict"] = verdict(row["score"], self.threshold, self.band_low)
        stats.images += 1
        stats.fake += row["verdict"] == "fake"
        stats.real += row["verdict"] == "real"
        stats.uncertain += row["verdict"] == "uncertain"
        stats.errors += row["verdict"] == "error"
        return row


def writing_masks(pending: Pending) -> bool:
    return pending.mask_job is not None and not pending.mask_job.done()


def _write_masks(data: bytes, prob: np.ndarray, out_dir: Path, row: dict[str, Any], max_pixels: int) -> MaskFiles:
    """Decode the image again (the workers' copy stayed there) and write its mask files."""
    image = decode_image(data, max_pixels).image
    return write_mask_files(image, prob, out_dir, row["path"], row["member"])
