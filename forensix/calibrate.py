"""`forensix calibrate`: a threshold (and optionally an uncertain band and a temperature) chosen on
labelled data, stored with the weights.

The threshold is chosen for a target false-positive rate on the real images, or for the best
balanced accuracy. With a target false-negative rate, a lower edge too: scores between it and the
threshold are ``uncertain`` (:mod:`forensix.verdicts`), so that at most that share of the fakes is
called real. The temperature T (score = sigmoid(logit / T)) minimises the log-loss. All go
where ``forensix scan`` finds them by default: a new forensix .safetensors with the updated config,
or, for official weights that forensix does not rewrite, a ``<weights>.calibration.json`` sidecar
(read by :func:`forensix.loading.apply_calibration`). The expected FPR and TPR at the threshold
come with Wilson 95% intervals.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from . import __version__
from .cache import weights_identity
from .datasets import Dataset
from .detector import Detector
from .eval import scores_from_logits
from .loading import calibration_sidecar
from .models.checkpoints import CheckpointError, is_safetensors, read_checkpoint, save_checkpoint
from .verdicts import in_band

Z95 = 1.959963984540054  # two-sided 95% normal quantile
_LOG_T_RANGE = (math.log(1e-2), math.log(1e2))


@dataclass(frozen=True)
class Rate:
    """k of n, as a fraction with its Wilson score interval."""

    k: int
    n: int
    value: float | None
    low: float | None
    high: float | None


def wilson(k: int, n: int, z: float = Z95) -> Rate:
    """Wilson score interval for a binomial proportion k/n (well-behaved at k = 0 and k = n)."""
    if n == 0:
        return Rate(k, n, None, None, None)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Rate(k, n, p, max(0.0, centre - half), min(1.0, centre + half))


def _just_above(score: float) -> float:
    """The smallest float32 score above ``score``, kept in [0, 1]: the lowest threshold that excludes it."""
    return min(1.0, float(np.nextafter(np.float32(score), np.float32(np.inf))))


def threshold_for_fpr(real_scores: np.ndarray, target: float) -> float:
    """The lowest threshold at which at most ``target`` of the real images score >= it.

    Lowest, so that as many fakes as possible are caught at that false-positive rate.
    """
    if not 0 <= target <= 1:
        raise ValueError(f"the target FPR must be in [0, 1], got {target}")
    r = np.sort(np.asarray(real_scores, dtype=np.float64))[::-1]
    if not len(r):
        raise ValueError("choosing a threshold for a target FPR needs real images")
    allowed = math.floor(target * len(r) + 1e-9)  # false positives allowed
    if allowed >= len(r):
        return float(r[-1])
    return _just_above(r[allowed])  # excludes the (allowed+1)-th highest real score and all below


def band_low_for_fnr(fake_scores: np.ndarray, target: float, threshold: float) -> float:
    """The highest lower edge of the uncertain band at which at most ``target`` of the fakes score
    below it (and so are called real); never above ``threshold`` (the band is then empty).

    Highest, so that the band holds as few images as that false-negative rate allows.
    """
    if not 0 <= target <= 1:
        raise ValueError(f"the target FNR must be in [0, 1], got {target}")
    f = np.sort(np.asarray(fake_scores, dtype=np.float64))
    if not len(f):
        raise ValueError("choosing an uncertain band for a target FNR needs fake images")
    allowed = math.floor(target * len(f) + 1e-9)  # fakes that may be called real
    if allowed >= len(f):
        return threshold
    return min(float(f[allowed]), threshold)  # the (allowed+1)-th lowest fake score is in the band or above


def threshold_balanced(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold of best balanced accuracy (TPR + TNR) / 2; the highest one among ties."""
    y = np.asarray(labels, dtype=int)
    if not (y == 0).any() or not (y == 1).any():
        raise ValueError("balanced accuracy needs both real and fake images")
    fpr, tpr, thresholds = roc_curve(y, scores, drop_intermediate=False)
    best = int(np.argmax(tpr - fpr))
    return float(thresholds[best]) if math.isfinite(thresholds[best]) else _just_above(float(np.max(scores)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """T minimising the mean log-loss of sigmoid(logit / T) against the labels (1 = fake).

    The loss is convex in 1/T, so its derivative is monotone and bisection on log T finds the
    minimum; T is kept in [0.01, 100] (separable data has no finite optimum).
    """
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if not (y == 0).any() or not (y == 1).any():
        raise ValueError("fitting a temperature needs both real and fake images")

    def slope(log_t: float) -> float:
        # d loss / d(1/T) = mean(x * (sigmoid(x / T) - y)); increasing in 1/T, so decreasing in log T.
        a = math.exp(-log_t)
        return float(np.mean(x * (0.5 + 0.5 * np.tanh(a * x / 2) - y)))  # tanh form: no overflow

    lo, hi = _LOG_T_RANGE
    if slope(lo) <= 0:
        return math.exp(lo)
    if slope(hi) >= 0:
        return math.exp(hi)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(mid) > 0 else (lo, mid)
    return math.exp((lo + hi) / 2)


@dataclass(frozen=True)
class Calibration:
    method: str  # "target-fpr" | "balanced"
    target_fpr: float | None
    threshold: float
    temperature: float
    fpr: Rate  # real images with score >= threshold, on the calibration data
    tpr: Rate  # fake images with score >= threshold
    unreadable: int
    # With a target FNR: the band [band_low, threshold) and what it does on the calibration data.
    target_fnr: float | None = None
    band_low: float | None = None
    fnr: Rate | None = None  # fake images with score < band_low (called real)
    tnr: Rate | None = None  # real images with score < band_low (called real)
    uncertain: Rate | None = None  # images in the band
    decided_accuracy: Rate | None = None  # images outside the band judged right

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(
    labels: np.ndarray,
    logits: np.ndarray,
    target_fpr: float | None = None,
    fit_temp: bool = False,
    unreadable: int = 0,
    target_fnr: float | None = None,
) -> Calibration:
    """Threshold (for ``target_fpr``, or best balanced accuracy when None), the uncertain band's lower
    edge (for ``target_fnr``; none when None) and temperature, from raw logits."""
    y = np.asarray(labels, dtype=int)
    x = np.asarray(logits, dtype=np.float64)
    temperature = fit_temperature(x, y) if fit_temp else 1.0
    scores = scores_from_logits(x, temperature)  # what the scan will compare with the threshold
    if target_fpr is not None:
        threshold = threshold_for_fpr(scores[y == 0], target_fpr)
    else:
        threshold = threshold_balanced(y, scores)
    flagged = scores >= threshold
    result = Calibration(
        method="target-fpr" if target_fpr is not None else "balanced",
        target_fpr=target_fpr,
        threshold=threshold,
        temperature=temperature,
        fpr=wilson(int(flagged[y == 0].sum()), int((y == 0).sum())),
        tpr=wilson(int(flagged[y == 1].sum()), int((y == 1).sum())),
        unreadable=unreadable,
    )
    if target_fnr is None:
        return result
    low = band_low_for_fnr(scores[y == 1], target_fnr, threshold)
    below, band = scores < low, in_band(scores, threshold, low)
    decided = ~band
    return replace(
        result,
        target_fnr=target_fnr,
        band_low=low,
        fnr=wilson(int(below[y == 1].sum()), int((y == 1).sum())),
        tnr=wilson(int(below[y == 0].sum()), int((y == 0).sum())),
        uncertain=wilson(int(band.sum()), len(scores)),
        decided_accuracy=wilson(int((flagged[decided] == (y[decided] == 1)).sum()), int(decided.sum())),
    )


def calibration_record(calibration: Calibration, detector: Detector, dataset: Dataset) -> dict[str, Any]:
    """The provenance stored with the weights: what was chosen, on what data, from which weights."""
    return {
        **calibration.to_dict(),
        "weights_sha256": weights_identity(detector.info),
        "model": detector.name,
        "precision": detector.precision,
        "data": dataset.summary(),
        "forensix_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def store_calibration(detector: Detector, record: dict[str, Any], out: Path | None) -> Path:
    """Write the calibrated threshold, band and temperature where loading the weights picks them up.

    A forensix .safetensors is copied to ``out`` (a new file) with the updated config; official
    weights get the sidecar next to them (``out`` may only name that file).
    """
    source = Path(detector.info.source)
    threshold, temperature, band_low = record["threshold"], record["temperature"], record["band_low"]
    if source.is_file() and is_safetensors(source):
        if out is None:
            raise ValueError("calibrating a forensix .safetensors writes a new one: give --out FILE.safetensors")
        if out.suffix != ".safetensors":
            raise ValueError(f"{out}: the calibrated weights must be a .safetensors file")
        if out.exists() and out.resolve() == source.resolve():
            raise ValueError(f"{out}: write the calibrated weights to a new file, not over the ones being read")
        cfg, state, provenance = read_checkpoint(source)
        cfg = replace(cfg, threshold=threshold, temperature=temperature, band_low=band_low)
        save_checkpoint(out, cfg, state, {**provenance, "calibration": record, "calibrated_from": source.name})
        return out
    sidecar = calibration_sidecar(source)
    if out is not None and out.resolve() != sidecar.resolve():
        raise ValueError(
            f"official weights and ONNX models are calibrated by a sidecar next to them ({sidecar}); leave out --out"
        )
    if not source.is_file():
        raise CheckpointError(f"{source}: the weights file to calibrate is not there")
    data = {"threshold": threshold, "band_low": band_low, "temperature": temperature}
    data["weights_sha256"] = detector.info.sha256
    sidecar.write_text(json.dumps({**data, "calibration": record}, indent=2) + "\n", encoding="utf-8")
    return sidecar
