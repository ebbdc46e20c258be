"""Detection metrics of one subset (the field's tables: accuracies, AP, ROC-AUC, best threshold, ECE) and their mean."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from ..verdicts import in_band


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
    # With an uncertain band (None without): the images in it, and the accuracy on the others.
    uncertain: float | None = None
    decided_acc: float | None = None


METRIC_FIELDS = (
    "real_acc", "fake_acc", "acc", "ap", "auc", "best_acc", "tpr_at_1pct_fpr", "ece", "flipped",
    "uncertain", "decided_acc",
)  # fmt: skip
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
    band_low: float | None = None,
) -> DetectionMetrics:
    """The metrics of one subset from labels (1 = fake) and scores (P(fake)); verdict fake when score >= threshold.

    ``clean_scores`` (the same images unperturbed, NaN where unread) gives ``flipped``. With an
    uncertain band [``band_low``, threshold), ``uncertain`` is the share of images in it and
    ``decided_acc`` the accuracy on the rest (coverage against accuracy); the other metrics are the
    threshold's alone, as without a band.
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
    if band_low is not None and len(s):
        band = in_band(s, threshold, band_low)
        m.uncertain = float(np.mean(band))
        m.decided_acc = float(np.mean(flagged[~band] == (y[~band] == 1))) if (~band).any() else None
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
