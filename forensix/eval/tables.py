"""Per-subset tables of one pass: detection, localization and attribution metrics, and the whole result."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..datasets import Dataset, Sample
from ..mask_metrics import LocalizationScores
from .detection import DetectionMetrics, detection_metrics, mean_row
from .perturbations import Perturbation
from .predict import Predictions, scores_from_logits


@dataclass
class LocalizationMetrics:
    """Means over a subset's images with masks of DeCLIP's per-image scores, fractions in [0, 1]."""

    subset: str
    images: int  # images with a mask that were scored
    unreadable: int
    iou: float | None  # at 0.5
    f1: float | None  # at 0.5, boundary band ignored
    f1_best: float | None  # per image at its best threshold, boundary band ignored
    ap: float | None  # pixel AP (images whose mask has no fake pixel left out)


LOCALIZATION_FIELDS = ("iou", "f1", "f1_best", "ap")


def localization_metrics(scores: Sequence[LocalizationScores | None], subset: str) -> LocalizationMetrics:
    done = [s for s in scores if s is not None]

    def mean(values: list[float]) -> float | None:
        values = [v for v in values if not math.isnan(v)]
        return float(np.mean(values)) if values else None

    return LocalizationMetrics(
        subset,
        len(done),
        len(scores) - len(done),
        mean([s.iou for s in done]),
        mean([s.f1 for s in done]),
        mean([s.f1_best for s in done]),
        mean([s.ap for s in done]),
    )


def localization_mean(rows: Sequence[LocalizationMetrics]) -> LocalizationMetrics:
    def mean(name: str) -> float | None:
        values = [getattr(r, name) for r in rows if getattr(r, name) is not None]
        return float(np.mean(values)) if values else None

    images, unreadable = sum(r.images for r in rows), sum(r.unreadable for r in rows)
    return LocalizationMetrics("mean", images, unreadable, *(mean(m) for m in LOCALIZATION_FIELDS))


@dataclass
class AttributionMetrics:
    """Top-1 source attribution over a subset's images of a class the attributor knows, fraction in [0, 1]."""

    subset: str
    images: int  # images read whose class (real, or its generator) is one of the attributor's
    unreadable: int
    unknown: int  # images read of a generator the attributor was not trained on: not in acc
    acc: float | None  # the most probable class is the image's own


def attribution_metrics(
    samples: Sequence[Sample], probs: np.ndarray, classes: Sequence[str], subset: str
) -> AttributionMetrics:
    read = ~np.isnan(probs).any(axis=1)
    known = np.array([s.source_class in classes for s in samples], dtype=bool)
    mine = read & known
    truth = np.array([classes.index(s.source_class) if k else -1 for s, k in zip(samples, known)], dtype=int)
    acc = float(np.mean(probs[mine].argmax(axis=1) == truth[mine])) if mine.any() else None
    return AttributionMetrics(subset, int(mine.sum()), int((~read).sum()), int((read & ~known).sum()), acc)


def confusion(samples: Sequence[Sample], probs: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, int]]:
    """Images read by true class (generators the attributor does not know included), then predicted class."""
    found: dict[str, dict[str, int]] = {}
    for sample, row in zip(samples, probs):
        if not np.isnan(row).any():
            counts = found.setdefault(sample.source_class, dict.fromkeys(classes, 0))
            counts[classes[int(row.argmax())]] += 1
    return dict(sorted(found.items()))


@dataclass
class AttributionTable:
    subsets: list[AttributionMetrics]
    mean: AttributionMetrics
    confusion: dict[str, dict[str, int]]  # true class -> predicted class -> images


def attribution_table(samples: Sequence[Sample], probs: np.ndarray, classes: Sequence[str]) -> AttributionTable:
    names = sorted({s.subset for s in samples})
    rows = []
    for name in names:
        mine = [i for i, s in enumerate(samples) if s.subset == name]
        rows.append(attribution_metrics([samples[i] for i in mine], probs[mine], classes, name))
    accs = [r.acc for r in rows if r.acc is not None]
    mean = AttributionMetrics(
        "mean",
        sum(r.images for r in rows),
        sum(r.unreadable for r in rows),
        sum(r.unknown for r in rows),
        float(np.mean(accs)) if accs else None,
    )
    return AttributionTable(rows, mean, confusion(samples, probs, classes))


@dataclass
class PerturbationResult:
    perturbation: Perturbation
    subsets: list[DetectionMetrics]
    mean: DetectionMetrics
    predictions: Predictions = field(repr=False)
    localization: list[LocalizationMetrics] | None = None  # with a localizer and masks
    localization_mean: LocalizationMetrics | None = None
    attribution: AttributionTable | None = None  # with an attributor


@dataclass
class EvalResult:
    model: str
    threshold: float
    temperature: float
    dataset: Dataset
    tables: list[PerturbationResult]
    provenance: dict[str, Any]
    band_low: float | None = None  # the uncertain band [band_low, threshold); None: none

    def to_dict(self) -> dict[str, Any]:
        """metrics.json (docs/evaluation.md lists every key)."""
        errors = [
            {"path": self.dataset.samples[i].path, "perturbation": t.perturbation.name, "error": e}
            for t in self.tables
            for i, e in enumerate(t.predictions.errors)
            if e
        ]
        return {
            "model": self.model,
            "threshold": self.threshold,
            "band_low": self.band_low,
            "temperature": self.temperature,
            "dataset": self.dataset.summary(),
            "perturbations": [
                {
                    "name": t.perturbation.name,
                    "kind": t.perturbation.kind,
                    "value": t.perturbation.value if t.perturbation.kind != "none" else None,
                    "scored": t.predictions.scored,
                    "cached": int(t.predictions.ok.sum()) - t.predictions.scored,
                    "subsets": [asdict(r) for r in t.subsets],
                    "mean": asdict(t.mean),
                    "localization": None
                    if t.localization is None or t.localization_mean is None
                    else {"subsets": [asdict(r) for r in t.localization], "mean": asdict(t.localization_mean)},
                    "attribution": None if t.attribution is None else asdict(t.attribution),
                }
                for t in self.tables
            ],
            "errors": errors,
            "provenance": self.provenance,
        }


def table_for(
    dataset: Dataset,
    predictions: Predictions,
    perturbation: Perturbation,
    threshold: float,
    temperature: float,
    clean: Predictions | None = None,
    band_low: float | None = None,
) -> PerturbationResult:
    """The table of one pass; with ``clean`` (the unperturbed pass), how many verdicts it flipped."""
    labels = np.array([s.label for s in dataset.samples], dtype=int)
    subsets = np.array([s.subset for s in dataset.samples], dtype=object)
    scores = scores_from_logits(np.nan_to_num(predictions.logits), temperature)
    clean_scores = None
    if clean is not None:
        clean_scores = np.where(clean.ok, scores_from_logits(np.nan_to_num(clean.logits), temperature), np.nan)
    ok = predictions.ok
    rows = []
    for name in dataset.subsets:
        mine = subsets == name
        keep = mine & ok
        reference = clean_scores[keep] if clean_scores is not None else None
        unread = int((mine & ~ok).sum())
        rows.append(detection_metrics(labels[keep], scores[keep], threshold, name, unread, reference, band_low))
    return PerturbationResult(perturbation, rows, mean_row(rows), predictions)
