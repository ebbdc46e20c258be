"""Per-image localization metrics, as DeCLIP (Smeu et al., WACV 2025) evaluates its masks.

The reference pipeline (bit-ml/DeCLIP, `validate.py` and `utils/utils.py`, F1 adapted from TruFor):

1. the sigmoid map is resized (bilinear) to the ground-truth mask's size: `resize_to`;
2. the mask is read as grayscale and a pixel is fake where value/255 > 0.5; Dolos masks are stored
   inverted (0 = inpainted): `load_mask(..., inverted=True)`;
3. per image: IoU at 0.5 (`iou`), F1 at 0.5 (`f1`) and at the best threshold (`best_f1`), both with
   a band around the mask's boundary left out (`boundary_ignore`), and pixel AP (`pixel_ap`).
   Reported figures are means over images, ×100; these functions return per-image values in [0, 1].

Throughout, a pixel is predicted fake where `pred > threshold` (strictly), as in the reference.

Where forensix departs from the reference, on purpose:
- `best_f1` takes the maximum over *every* threshold. The reference's sweep leaves out the two
  extreme binarisations (all pixels fake, no pixel fake) and takes max(sweep, F1 at 0.5); it gives
  NaN for a constant prediction map. Both agree whenever the best threshold flags some but not all
  of the counted pixels, which is the usual case; forensix can only be higher.
- `pixel_ap` is NaN for a mask with no fake pixel (AP is undefined there); the reference's value
  depends on the torchmetrics version.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = [
    "LocalizationScores",
    "best_f1",
    "boundary_ignore",
    "dilate_square",
    "f1",
    "iou",
    "load_mask",
    "pixel_ap",
    "resize_to",
    "score_mask",
]


@dataclass(frozen=True)
class LocalizationScores:
    """One image's scores, each in [0, 1] (NaN only for `ap` when the mask has no fake pixel)."""

    iou: float  # at the fixed threshold, all pixels
    f1: float  # at the fixed threshold, boundary band ignored
    f1_best: float  # at the best threshold, boundary band ignored
    best_threshold: float  # the threshold that gives f1_best (pred > best_threshold is fake)
    ap: float  # pixel average precision, all pixels


def resize_to(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`pred` (H0, W0) resized bilinearly to `shape` = (H, W), as float32.

    Half-pixel centres (align_corners=False); downscaling is antialiased (Pillow's filter, which
    torchvision's `resize(..., antialias=True)` reproduces); upscaling equals
    `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`. Returns `pred` itself
    (as float32) when it already has that shape, as the reference does.
    """
    arr = np.asarray(pred)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {arr.shape}")
    h, w = (int(v) for v in shape)
    if h < 1 or w < 1:
        raise ValueError(f"invalid target shape {shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.shape == (h, w):
        return arr
    resized = Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def load_mask(path_or_image: str | os.PathLike | Image.Image, inverted: bool = False) -> np.ndarray:
    """A ground-truth mask as bool (H, W), True = fake (manipulated).

    The image is converted to 8-bit grayscale (Pillow's `convert("L")`, as the reference does) and a
    pixel is fake where value/255 > 0.5, i.e. value >= 128. `inverted=True` is for masks stored with
    0 = manipulated (Dolos): fake where 255 - value > 127.5, i.e. value <= 127 — the exact complement.
    """
    if isinstance(path_or_image, Image.Image):
        gray = path_or_image.convert("L")
    else:
        with Image.open(path_or_image) as im:
            gray = im.convert("L")
    values = np.asarray(gray)
    return values <= 127 if inverted else values >= 128


def iou(pred_prob: np.ndarray, gt_bool: np.ndarray, threshold: float = 0.5) -> float:
    """Intersection over union of `pred_prob > threshold` and the mask, over all pixels.

    Convention: 1.0 when both are empty (nothing to find, nothing found), as the reference's
    (I + 1e-8) / (U + 1e-8) gives.
    """
    pred, gt = _check(pred_prob, gt_bool)
    flagged = pred > threshold
    union = np.count_nonzero(flagged | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(flagged & gt) / union


def boundary_ignore(gt_bool: np.ndarray, erode: int = 15, dilate: int = 11) -> np.ndarray:
    """The pixels that count for F1 (bool, same shape as the mask): all but a band at its boundary.

    `erode` and `dilate` are the side lengths of square windows centred on the pixel, as the
    reference's min/max filters (`max_pool2d(kernel_size=15)` and 11): "15 px" means a 15 x 15
    square, i.e. Chebyshev radius 7, and 11 means radius 5. Both must be odd; 1 means no change.

    - eroded: pixels whose whole erode-window is fake; pixels outside the image count as fake, so
      the image border does not erode the mask (the reference pads with +inf);
    - dilated: pixels whose dilate-window holds any fake pixel.

    Counted pixels are those surely fake (eroded) or surely real (outside dilated); the band
    dilated − eroded is ignored.
    """
    gt = _check_gt(gt_bool)
    eroded = ~dilate_square(~gt, _odd(erode, "erode"))
    dilated = dilate_square(gt, _odd(dilate, "dilate"))
    return eroded | ~dilated


def f1(pred_prob: np.ndarray, gt_bool: np.ndarray, threshold: float = 0.5, valid: np.ndarray | None = None) -> float:
    """F1 of `pred_prob > threshold` against the mask, over the pixels where `valid` (default: all).

    Convention: 1.0 when the counted pixels hold no fake pixel and none is flagged (the reference's
    (2TP + 1e-32) / max(2TP + FP + FN, 1e-32)); this includes the case of no counted pixel at all.
    """
    pred, gt = _check(pred_prob, gt_bool)
    flagged = pred > threshold
    if valid is not None:
        keep = _check_valid(valid, gt.shape)
        flagged, gt = flagged[keep], gt[keep]
    tp = np.count_nonzero(flagged & gt)
    wrong = np.count_nonzero(flagged ^ gt)  # FP + FN
    return _f1(tp, wrong)


def best_f1(pred_prob: np.ndarray, gt_bool: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    """(F1, threshold): the highest F1 over all thresholds, over the pixels where `valid`.

    Exact: every distinct binarisation `pred > t` is tried (one sort and cumulative sums), from
    "no pixel fake" (t = +inf) to "every pixel fake" (t = -inf); otherwise t is one of the counted
    predicted values, so `f1(pred_prob, gt_bool, t, valid)` gives the same F1 back. Ties go to the
    highest threshold. With no fake pixel counted, the answer is (1.0, +inf).
    """
    return _best_f1_sorted(*_counted_desc(pred_prob, gt_bool, valid))


def pixel_ap(pred_prob: np.ndarray, gt_bool: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Average precision of the pixels' scores (fake = positive), over the pixels where `valid`.

    Defined as scikit-learn's `average_precision_score`: sum over thresholds of
    (R_n − R_{n−1}) · P_n, no interpolation. NaN when no counted pixel is fake.
    """
    return _ap_sorted(*_counted_desc(pred_prob, gt_bool, valid))


def score_mask(
    pred_prob: np.ndarray,
    gt_bool: np.ndarray,
    *,
    threshold: float = 0.5,
    erode: int = 15,
    dilate: int = 11,
) -> LocalizationScores:
    """All of one image's scores, as the reference computes them.

    `pred_prob` is resized to the mask's shape first when it differs (`resize_to`). IoU and AP use
    every pixel; both F1 figures ignore the boundary band (`boundary_ignore(gt, erode, dilate)`).
    The pixels are sorted once for AP and best F1.
    """
    gt = _check_gt(gt_bool)
    pred = np.asarray(pred_prob)
    if pred.ndim == 2 and pred.shape != gt.shape:
        pred = resize_to(pred, gt.shape)
    pred, gt = _check(pred, gt)
    valid = boundary_ignore(gt, erode, dilate)

    scores, labels, keep = pred.ravel(), gt.ravel(), valid.ravel()
    order = np.argsort(scores, kind="stable")[::-1]
    counted = order[keep[order]]  # still in descending score order
    best, best_t = _best_f1_sorted(scores[counted], labels[counted])
    return LocalizationScores(
        iou=float(iou(pred, gt, threshold)),
        f1=float(f1(pred, gt, threshold, valid)),
        f1_best=best,
        best_threshold=best_t,
        ap=_ap_sorted(scores[order], labels[order]),
    )


# --- internals -------------------------------------------------------------------------------


def _counted_desc(
    pred_prob: np.ndarray, gt_bool: np.ndarray, valid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The counted pixels' scores and labels (where ``valid``), flattened, by descending score (stable)."""
    pred, gt = _check(pred_prob, gt_bool)
    scores, labels = pred.ravel(), gt.ravel()
    if valid is not None:
        keep = _check_valid(valid, gt.shape).ravel()
        scores, labels = scores[keep], labels[keep]
    order = np.argsort(scores, kind="stable")[::-1]
    return scores[order], labels[order]


def _f1(tp: int, wrong: int) -> float:
    denom = 2 * tp + wrong
    return 1.0 if denom == 0 else 2 * tp / denom


def _group_ends(scores_desc: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of equal scores in a descending array."""
    n = scores_desc.size
    return np.append(np.flatnonzero(scores_desc[1:] != scores_desc[:-1]), n - 1) if n else np.zeros(0, np.intp)


def _best_f1_sorted(scores_desc: np.ndarray, labels_desc: np.ndarray) -> tuple[float, float]:
    ends = _group_ends(scores_desc)
    tp = np.cumsum(labels_desc, dtype=np.int64)[ends]
    positives = int(tp[-1]) if tp.size else 0
    flagged = ends + 1
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (flagged + positives); index 0 is "no pixel flagged".
    f1s = np.empty(ends.size + 1, dtype=np.float64)
    f1s[0] = 1.0 if positives == 0 else 0.0
    if ends.size:
        f1s[1:] = 2.0 * tp / (flagged + positives)
    best = int(np.argmax(f1s))  # first maximum = highest threshold
    if best == 0:
        return float(f1s[0]), float("inf")
    end = ends[best - 1]
    # Flagging the groups down to `end` is `pred > (next lower value)`, or everything when none is lower.
    threshold = float(scores_desc[end + 1]) if end + 1 < scores_desc.size else float("-inf")
    return float(f1s[best]), threshold


def _ap_sorted(scores_desc: np.ndarray, labels_desc: np.ndarray) -> float:
    ends = _group_ends(scores_desc)
    if ends.size == 0:
        return float("nan")
    tp = np.cumsum(labels_desc, dtype=np.int64)[ends]
    positives = int(tp[-1])
    if positives == 0:
        return float("nan")
    precision = tp / (ends + 1.0)
    recall = tp / positives
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def dilate_square(mask: np.ndarray, size: int) -> np.ndarray:
    """Binary dilation of a 2-D bool array by a size x size square centred on each pixel (size odd);
    outside the array counts as False."""
    for axis in (0, 1):
        mask = _dilate_axis(mask, size, axis)
    return mask


def _dilate_axis(mask: np.ndarray, size: int, axis: int) -> np.ndarray:
    if size == 1 or mask.shape[axis] == 0:
        return mask
    r = size // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r + 1, r)  # one extra leading zero so window sums are differences of the cumsum
    counts = np.cumsum(np.pad(mask, pad), axis=axis, dtype=np.int32)
    n = mask.shape[axis]
    hi = [slice(None), slice(None)]
    lo = [slice(None), slice(None)]
    hi[axis] = slice(size, size + n)
    lo[axis] = slice(0, n)
    return counts[tuple(hi)] > counts[tuple(lo)]


def _odd(size: int, name: str) -> int:
    size = int(size)
    if size < 1 or size % 2 == 0:
        raise ValueError(f"{name} must be an odd window size >= 1, got {size}")
    return size


def _check_gt(gt_bool: np.ndarray) -> np.ndarray:
    gt = np.asarray(gt_bool)
    if gt.dtype != np.bool_:
        raise TypeError(f"the mask must be a bool array (see load_mask), got {gt.dtype}")
    if gt.ndim != 2:
        raise ValueError(f"the mask must be 2-D, got shape {gt.shape}")
    return gt


def _check(pred_prob: np.ndarray, gt_bool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt = _check_gt(gt_bool)
    pred = np.asarray(pred_prob)
    if not np.issubdtype(pred.dtype, np.floating):
        pred = pred.astype(np.float32)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from mask shape {gt.shape}; use resize_to first")
    if np.isnan(pred).any():
        raise ValueError("the prediction contains NaN")
    return pred, gt


def _check_valid(valid: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    keep = np.asarray(valid)
    if keep.dtype != np.bool_ or keep.shape != shape:
        raise ValueError(f"valid must be a bool array of shape {shape}, got {keep.dtype} {keep.shape}")
    return keep
