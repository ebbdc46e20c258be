"""Raw logits (and localizer / attributor outputs) for a dataset's samples, through the scan's stages, cached."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..cache import PredictionCache, model_key
from ..datasets import Sample
from ..detector import Detector, scale_logits
from ..imaging import DEFAULT_MAX_PIXELS
from ..inputs import DEFAULT_MAX_BYTES
from ..limits import DEFAULT_DECODE_TIMEOUT
from ..mask_metrics import LocalizationScores, load_mask, score_mask
from ..models.config import PreprocessConfig
from ..runner import Runner
from ..stages.batches import Block
from ..stages.entries import sample_entries
from ..stages.loader import LoaderOptions, prepared_blocks
from ..stages.records import IMAGE, Record, RecordBuilder
from .perturbations import Perturbation

if TYPE_CHECKING:
    from ..attributor import Attributor
    from ..localizer import Localizer


@dataclass
class Predictions:
    """Per sample, in the dataset's order: raw logit (NaN when unreadable), image sha256, error."""

    logits: np.ndarray
    sha256: list[str]
    errors: list[str]
    scored: int = 0  # images the model ran on (the rest came from the cache or failed)

    @property
    def ok(self) -> np.ndarray:
        return ~np.isnan(self.logits)


def scores_from_logits(raw: np.ndarray, temperature: float) -> np.ndarray:
    """P(fake) exactly as the scan computes it (float32 arithmetic), as float64."""
    t = torch.from_numpy(np.asarray(raw, dtype=np.float32))
    return torch.sigmoid(scale_logits(t, temperature)).double().numpy()


@dataclass(frozen=True)
class EvalOptions:
    batch_size: int = 32
    workers: int = 0  # 0 = decode in the main process
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_timeout: float = DEFAULT_DECODE_TIMEOUT  # seconds per image (0 = none); past it, the image is unreadable


def predict(
    samples: Sequence[Sample],
    detector: Detector,
    perturbation: Perturbation = Perturbation(),
    options: EvalOptions = EvalOptions(),
    cache: PredictionCache | None = None,
    progress: Callable[[int], None] | None = None,
) -> Predictions:
    """Raw logits for ``samples`` under ``perturbation``: decoded in DataLoader workers, cached logits reused."""
    key = model_key(detector)
    lookup = partial(cache.get, model=key, perturbation=perturbation.name) if cache is not None else None
    n = len(samples)
    out = Predictions(np.full(n, np.nan), [""] * n, [""] * n)
    for batch in image_batches(samples, detector.config.preprocess, perturbation, options, detector.device, lookup):
        fresh = [p for p in batch.records if p.has_input]
        if IMAGE in batch.inputs:
            raw = detector.raw_logits(batch.inputs[IMAGE]).cpu().tolist()
            out.scored += len(raw)
            for p, logit in zip(fresh, raw):
                p.logit = logit if math.isfinite(logit) else None
                p.error = "" if p.logit is not None else "the model returned a non-finite logit (try --precision fp32)"
            if cache is not None:
                cache.put_many([(p.sha256, key, perturbation.name, p.logit) for p in fresh if p.logit is not None])
        for p in batch.records:
            out.sha256[p.index], out.errors[p.index] = p.sha256, p.error
            if p.logit is not None:
                out.logits[p.index] = p.logit
        if progress is not None:
            progress(len(batch.records))
    return out


def image_batches(
    samples: Sequence[Sample],
    cfg: PreprocessConfig,
    perturbation: Perturbation,
    options: EvalOptions,
    device: torch.device,
    lookup: Callable[[str], float | None] | None = None,
) -> Iterator[Block]:
    """Blocks of ``batch_size`` prepared samples in order (record index = sample index); decoding and
    the perturbation run in the workers, and a worker's death costs no sample (:mod:`forensix.stages.loader`)."""
    transform = perturbation.transform if perturbation.kind != "none" else None
    build = RecordBuilder(
        cfg, max_pixels=options.max_pixels, transform=transform, lookup=lookup, decode_timeout=options.decode_timeout
    )
    loader = LoaderOptions(options.batch_size, options.workers, pin_memory=device.type == "cuda")
    yield from prepared_blocks(sample_entries(samples, DEFAULT_MAX_BYTES), build, loader)


def attribute(
    samples: Sequence[Sample],
    attributor: Attributor,
    perturbation: Perturbation = Perturbation(),
    options: EvalOptions = EvalOptions(),
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """P(class) per sample (n, classes) from a source attributor; rows of NaN for images that could not be read."""
    probs = np.full((len(samples), len(attributor.classes)), np.nan, np.float32)
    for read, tensor in read_batches(samples, attributor, perturbation, options, progress):
        probs[[p.index for p in read]] = attributor.probabilities(tensor)
    return probs


def read_batches(
    samples: Sequence[Sample],
    runner: Runner,
    perturbation: Perturbation,
    options: EvalOptions,
    progress: Callable[[int], None] | None,
) -> Iterator[tuple[list[Record], torch.Tensor]]:
    """Per batch, the samples that were read and their inputs for ``runner``; ``progress`` counts every sample."""
    for batch in image_batches(samples, runner.config.preprocess, perturbation, options, runner.device):
        if IMAGE in batch.inputs:
            yield [p for p in batch.records if not p.error], batch.inputs[IMAGE]
        if progress is not None:
            progress(len(batch.records))


def localize(
    samples: Sequence[Sample],
    localizer: Localizer,
    inverted: bool,
    perturbation: Perturbation = Perturbation(),
    options: EvalOptions = EvalOptions(),
    progress: Callable[[int], None] | None = None,
) -> list[LocalizationScores | None]:
    """Per sample with a mask, DeCLIP's per-image scores (:func:`~forensix.mask_metrics.score_mask`), None if unread."""
    found: list[LocalizationScores | None] = [None] * len(samples)
    for read, tensor in read_batches(samples, localizer, perturbation, options, progress):
        for p, prob in zip(read, localizer.probabilities(tensor)):
            found[p.index] = score_mask(prob, load_mask(samples[p.index].mask, inverted))
    return found
