"""`forensix eval`: detection metrics per subset, under perturbations, with cached predictions.

Metrics follow the field's tables (UnivFD, DeeCLIP): per subset the accuracy on real images, on
fake images and on both at the model's threshold, average precision, ROC-AUC, and the accuracy at
the best threshold for that subset (an oracle figure); the mean row is their plain mean over
subsets (mAcc, mAP). They are computed with scikit-learn from scores made exactly as ``forensix
scan`` makes them (float32 ``sigmoid(logit / temperature)``, fake when ``score >= threshold``).

Perturbations act on the decoded image before the model's preprocessing, as a user's image
would arrive: JPEG re-encoding, bicubic rescaling, Gaussian blur. Raw logits are cached by (image
sha256, model, perturbation) in a SQLite file, so a repeated eval, or a calibration after an eval,
scores nothing twice.
"""

from __future__ import annotations

import io
import math
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from .cache import CLEAN, PredictionCache, model_key
from .datasets import Dataset, Sample
from .detector import Detector, Runner, scale_logits
from .imaging import DEFAULT_MAX_PIXELS
from .inputs import DEFAULT_MAX_BYTES
from .mask_metrics import LocalizationScores, load_mask, score_mask
from .models.config import PreprocessConfig
from .pipeline import package_versions
from .stages.batches import Block
from .stages.entries import sample_entries
from .stages.loader import LoaderOptions, prepared_blocks
from .stages.records import IMAGE, Record, RecordBuilder

if TYPE_CHECKING:
    from .attributor import Attributor
    from .localizer import Localizer

PERTURBATIONS = ("jpeg", "resize", "blur")


# --- perturbations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Perturbation:
    """One degradation of the decoded RGB image; ``none`` leaves it as it is."""

    kind: str = "none"  # none | jpeg (value = quality) | resize (value = factor) | blur (value = sigma, px)
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("none", *PERTURBATIONS):
            raise ValueError(f"unknown perturbation {self.kind!r}; known: {', '.join(PERTURBATIONS)}")
        if self.kind == "jpeg" and not (1 <= self.value <= 100 and float(self.value).is_integer()):
            raise ValueError(f"jpeg quality must be an integer in 1..100, got {self.value:g}")
        if self.kind in ("resize", "blur") and not self.value > 0:
            raise ValueError(f"{self.kind} takes a positive number, got {self.value:g}")

    @property
    def name(self) -> str:
        return CLEAN if self.kind == "none" else f"{self.kind}={self.value:g}"

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.kind == "jpeg":
            return jpeg_reencode(image, int(self.value))
        if self.kind == "resize":
            w, h = image.size
            size = (max(1, round(w * self.value)), max(1, round(h * self.value)))
            return image.resize(size, Image.Resampling.BICUBIC)
        if self.kind == "blur":
            # A kernel of ±4 sigma, as scipy.ndimage.gaussian_filter (CNNDetection's blur) truncates.
            radius = max(1, math.ceil(4 * self.value))
            return TF.gaussian_blur(image, [2 * radius + 1] * 2, [self.value] * 2)
        return image

    def transform(self, image: Image.Image, _record: Record) -> Image.Image:
        """As a record builder's transform (:class:`forensix.stages.records.RecordBuilder`)."""
        return self(image)


def jpeg_reencode(image: Image.Image, quality: int) -> Image.Image:
    """The image JPEG-encoded in memory at ``quality`` (Pillow's libjpeg, default 4:2:0), decoded again."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    decoded = Image.open(io.BytesIO(buffer.getvalue()))
    decoded.load()
    return decoded


def parse_perturbations(specs: Sequence[str]) -> list[Perturbation]:
    """``["jpeg=95,75", "blur=1"]`` → the clean pass first, then one perturbation per value, in order."""
    found = [Perturbation()]
    for spec in specs:
        kind, sep, values = spec.partition("=")
        kind = kind.strip().lower()
        if not sep or not values.strip():
            raise ValueError(f"--perturb {spec!r}: expected KIND=V1[,V2...], e.g. jpeg=95,75 or resize=0.5")
        for text in values.split(","):
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"--perturb {spec!r}: {text!r} is not a number") from None
            p = Perturbation(kind, value)
            if p not in found:
                found.append(p)
    return found


# --- prediction -------------------------------------------------------------------------------


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
    build = RecordBuilder(cfg, max_pixels=options.max_pixels, transform=transform, lookup=lookup)
    loader = LoaderOptions(options.batch_size, options.workers, pin_memory=device.type == "cuda")
    yield from prepared_blocks(partial(sample_entries, samples, DEFAULT_MAX_BYTES), build, loader)


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


# --- metrics ----------------------------------------------------------------------------------


@dataclass
class DetectionMetrics:
    """One row of the table; fractions in [0, 1]; None where undefined (a class missing from the subset)."""

    subset: str
    real: int  # images scored
    fake: int
    unreadable: int
    real_acc: float | None  # real images with score < threshold
    fake_acc: float | None  # fake images with score >= threshold
    acc: float | None  # all images judged right at the threshold
    ap: float | None  # average precision, fake = positive
    auc: float | None  # ROC-AUC
    best_acc: float | None  # accuracy at the best threshold for this subset
    tpr_at_1pct_fpr: float | None  # fakes found at the subset's best threshold flagging at most 1% of reals
    ece: float | None  # expected calibration error of the scores as P(fake), 15 equal-width bins
    flipped: float | None  # perturbed passes: images whose verdict differs from the clean pass's
    best_threshold: float | None  # the best_acc threshold (None: calling every image real was best)


METRIC_FIELDS = ("real_acc", "fake_acc", "acc", "ap", "auc", "best_acc", "tpr_at_1pct_fpr", "ece", "flipped")
ECE_BINS = 15
LOW_FPR = 0.01


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = ECE_BINS) -> float:
    """Σ over equal-width score bins of (bin's share of images) × |fraction fake − mean score| in it."""
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    which = np.minimum((s * bins).astype(int), bins - 1)  # [k/B, (k+1)/B), the last bin closed
    count = np.bincount(which, minlength=bins)
    used = count > 0
    fake = np.bincount(which, weights=y, minlength=bins)[used] / count[used]
    confidence = np.bincount(which, weights=s, minlength=bins)[used] / count[used]
    return float(np.sum(count[used] / len(s) * np.abs(fake - confidence)))


def detection_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    subset: str = "",
    unreadable: int = 0,
    clean_scores: np.ndarray | None = None,
) -> DetectionMetrics:
    """The metrics of one subset from labels (1 = fake) and scores (P(fake)); verdict fake when score >= threshold.

    ``clean_scores`` (the same images unperturbed, NaN where unread) gives ``flipped``.
    """
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=np.float64)
    real, fake = s[y == 0], s[y == 1]
    flagged = s >= threshold
    m = DetectionMetrics(
        subset,
        len(real),
        len(fake),
        unreadable,
        real_acc=float(np.mean(real < threshold)) if len(real) else None,
        fake_acc=float(np.mean(fake >= threshold)) if len(fake) else None,
        acc=float(np.mean(flagged == (y == 1))) if len(s) else None,
        ap=None,
        auc=None,
        best_acc=None,
        tpr_at_1pct_fpr=None,
        ece=expected_calibration_error(y, s) if len(s) else None,
        flipped=None,
        best_threshold=None,
    )
    if clean_scores is not None:
        both = ~np.isnan(clean_scores)
        if both.any():
            m.flipped = float(np.mean(flagged[both] != (clean_scores[both] >= threshold)))
    if len(real) and len(fake):
        m.ap = float(average_precision_score(y, s))
        m.auc = float(roc_auc_score(y, s))
        fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
        accs = (tpr * len(fake) + (1 - fpr) * len(real)) / len(s)
        best = int(np.argmax(accs))  # the first maximum: the highest such threshold
        m.best_acc = float(accs[best])
        m.best_threshold = float(thresholds[best]) if math.isfinite(thresholds[best]) else None
        m.tpr_at_1pct_fpr = float(tpr[fpr <= LOW_FPR].max())  # the first point (0, 0) always qualifies
    return m


def mean_row(rows: Sequence[DetectionMetrics]) -> DetectionMetrics:
    """Counts summed; each metric the plain mean over the subsets where it is defined (mAcc, mAP)."""

    def mean(name: str) -> float | None:
        values = [getattr(r, name) for r in rows if getattr(r, name) is not None]
        return float(np.mean(values)) if values else None

    return DetectionMetrics(
        "mean",
        sum(r.real for r in rows),
        sum(r.fake for r in rows),
        sum(r.unreadable for r in rows),
        **{name: mean(name) for name in METRIC_FIELDS},
        best_threshold=None,
    )


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
        rows.append(detection_metrics(labels[keep], scores[keep], threshold, name, unread, reference))
    return PerturbationResult(perturbation, rows, mean_row(rows), predictions)


def evaluate(
    dataset: Dataset,
    detector: Detector,
    perturbations: Sequence[Perturbation] = (Perturbation(),),
    options: EvalOptions = EvalOptions(),
    cache: PredictionCache | None = None,
    progress: Callable[[int], None] | None = None,
    localizer: Localizer | None = None,
    attributor: Attributor | None = None,
) -> EvalResult:
    """One table per perturbation (in the order given) of the detector on the dataset.

    With a ``localizer``, the samples that have a mask are also scored for localization; with an
    ``attributor``, every sample for source attribution.
    """
    masked = [s for s in dataset.samples if s.mask is not None] if localizer is not None else []
    tables = []
    clean: Predictions | None = None
    for p in perturbations:
        predictions = predict(dataset.samples, detector, p, options, cache, progress)
        if p.kind == "none":
            clean = predictions
        reference = clean if p.kind != "none" else None
        table = table_for(dataset, predictions, p, detector.threshold, detector.temperature, reference)
        if localizer is not None and masked:
            scores = localize(masked, localizer, dataset.masks_inverted, p, options, progress)
            names = [s.subset for s in masked]
            table.localization = [
                localization_metrics([sc for sc, n in zip(scores, names) if n == name], name)
                for name in sorted(set(names))
            ]
            table.localization_mean = localization_mean(table.localization)
        if attributor is not None:
            probs = attribute(dataset.samples, attributor, p, options, progress)
            table.attribution = attribution_table(dataset.samples, probs, attributor.classes)
        tables.append(table)
    provenance = {
        "weights": {"source": detector.loaded.source, "sha256": detector.loaded.sha256},
        "model_key": model_key(detector),
        "device": str(detector.device),
        "precision": detector.precision,
        "localizer": None if localizer is None else {"model": localizer.name, "sha256": localizer.loaded.sha256},
        "attributor": None
        if attributor is None
        else {"model": attributor.name, "sha256": attributor.loaded.sha256, "classes": list(attributor.classes)},
        "batch_size": options.batch_size,
        "versions": package_versions(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
    }
    return EvalResult(detector.name, detector.threshold, detector.temperature, dataset, tables, provenance)


# --- outputs ----------------------------------------------------------------------------------

COLUMNS = ("subset", "real", "fake", "unreadable", *METRIC_FIELDS, "best_threshold")


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def table_rows(result: PerturbationResult) -> list[list[str]]:
    """Rows for people (terminal, markdown): counts, then metrics in percent."""
    rows = []
    for r in [*result.subsets, result.mean]:
        best = "-" if r.best_threshold is None else f"{r.best_threshold:.4g}"
        counts = [str(r.real), str(r.fake), str(r.unreadable)]
        rows.append([r.subset, *counts, *(percent(getattr(r, m)) for m in METRIC_FIELDS), best])
    return rows


LOCALIZATION_COLUMNS = ("subset", "images", "unreadable", *LOCALIZATION_FIELDS)


def localization_rows(result: PerturbationResult) -> list[list[str]]:
    rows = []
    for r in [*(result.localization or []), *([result.localization_mean] if result.localization_mean else [])]:
        values = (percent(getattr(r, m)) for m in LOCALIZATION_FIELDS)
        rows.append([r.subset, str(r.images), str(r.unreadable), *values])
    return rows


ATTRIBUTION_COLUMNS = ("subset", "images", "unreadable", "unknown", "acc")


def attribution_rows(table: AttributionTable) -> list[list[str]]:
    return [
        [r.subset, str(r.images), str(r.unreadable), str(r.unknown), percent(r.acc)]
        for r in [*table.subsets, table.mean]
    ]


def confusion_rows(table: AttributionTable) -> tuple[tuple[str, ...], list[list[str]]]:
    """Columns (true class, then each predicted class) and one row of counts per true class."""
    predicted = next(iter(table.confusion.values()), {})
    return ("true class", *predicted), [[t, *map(str, row.values())] for t, row in table.confusion.items()]


def write_outputs(result: EvalResult, out_dir: Path, plots: bool = True) -> list[Path]:
    """metrics.json, metrics.csv, metrics.md, predictions.csv and (with ``plots``) PNGs in ``out_dir``."""
    import csv
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "metrics.json", out_dir / "metrics.csv", out_dir / "metrics.md", out_dir / "predictions.csv"]
    data = result.to_dict()
    written[0].write_text(json.dumps(_finite(data), indent=2) + "\n", encoding="utf-8")
    with open(written[1], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["perturbation", *COLUMNS])
        for t in result.tables:
            for r in [*t.subsets, t.mean]:
                w.writerow([t.perturbation.name, *("" if (v := getattr(r, c)) is None else v for c in COLUMNS)])
    lines = [f"# {result.model} on {result.dataset.root}", "", f"Threshold {result.threshold:g}; metrics in %.", ""]
    for t in result.tables:
        lines += [f"## {t.perturbation.name}", "", "| " + " | ".join(COLUMNS) + " |"]
        lines.append("|" + "---|" * len(COLUMNS))
        lines += ["| " + " | ".join(row) + " |" for row in table_rows(t)]
        lines.append("")
        if t.localization is not None:
            lines += ["| " + " | ".join(LOCALIZATION_COLUMNS) + " |", "|" + "---|" * len(LOCALIZATION_COLUMNS)]
            lines += ["| " + " | ".join(row) + " |" for row in localization_rows(t)]
            lines.append("")
        if t.attribution is not None:
            lines += ["| " + " | ".join(ATTRIBUTION_COLUMNS) + " |", "|" + "---|" * len(ATTRIBUTION_COLUMNS)]
            lines += ["| " + " | ".join(row) + " |" for row in attribution_rows(t.attribution)]
            columns, rows = confusion_rows(t.attribution)
            lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
    written[2].write_text("\n".join(lines), encoding="utf-8")
    with open(written[3], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "subset", "label", "perturbation", "sha256", "logit", "score", "error"])
        for t in result.tables:
            p = t.predictions
            scores = scores_from_logits(np.nan_to_num(p.logits), result.temperature)
            for i, s in enumerate(result.dataset.samples):
                logit, score = (repr(float(p.logits[i])), repr(float(scores[i]))) if p.ok[i] else ("", "")
                w.writerow([s.path, s.subset, s.label, t.perturbation.name, p.sha256[i], logit, score, p.errors[i]])
    if plots:
        written += write_plots(result, out_dir)
    return written


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def safe_name(subset: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", subset).strip("_") or "subset"


def write_plots(result: EvalResult, out_dir: Path) -> list[Path]:
    """Per subset: ROC curves (one per perturbation) and score histograms (one panel per perturbation)."""
    from matplotlib.figure import Figure  # the object API needs no global backend: Agg draws the PNG

    labels = np.array([s.label for s in result.dataset.samples], dtype=int)
    subsets = np.array([s.subset for s in result.dataset.samples], dtype=object)
    scored = [(t, scores_from_logits(np.nan_to_num(t.predictions.logits), result.temperature)) for t in result.tables]
    written = []
    for name in result.dataset.subsets:
        roc = Figure(figsize=(5, 5))
        ax = roc.add_subplot()
        hist = Figure(figsize=(5, 2.2 * len(scored)))
        axes = hist.subplots(len(scored), 1, squeeze=False)[:, 0]
        for (t, scores), hax in zip(scored, axes):
            keep = (subsets == name) & t.predictions.ok
            y, s = labels[keep], scores[keep]
            row = next(r for r in t.subsets if r.subset == name)
            if row.auc is not None:
                fpr, tpr, _ = roc_curve(y, s)
                ax.plot(fpr, tpr, label=f"{t.perturbation.name} (AUC {row.auc:.3f})")
            bins = np.linspace(0, 1, 51)
            hax.hist(s[y == 0], bins=bins, alpha=0.6, label=f"real ({row.real})", color="tab:blue")
            hax.hist(s[y == 1], bins=bins, alpha=0.6, label=f"fake ({row.fake})", color="tab:red")
            hax.axvline(result.threshold, color="black", linestyle="--", linewidth=1)
            hax.set_title(f"{name} · {t.perturbation.name}", fontsize=9)
            hax.legend(fontsize=7)
        hax.set_xlabel("score = P(fake)")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC · {name}")
        ax.set(xlim=(0, 1), ylim=(0, 1))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
        hist.tight_layout()
        for fig, kind in ((roc, "roc"), (hist, "hist")):
            path = out_dir / f"{kind}_{safe_name(name)}.png"
            fig.savefig(path, dpi=100)
            written.append(path)
    return written
