import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from forensix.mask_metrics import (
    LocalizationScores,
    best_f1,
    boundary_ignore,
    f1,
    iou,
    load_mask,
    pixel_ap,
    resize_to,
    score_mask,
)

sk = pytest.importorskip("sklearn.metrics")

# A 3x3 case counted by hand. Flagged (> 0.5): (0,0) (0,1) (1,1) (2,2); 0.5 itself is not flagged.
PRED = np.array([[0.9, 0.6, 0.1], [0.4, 0.7, 0.2], [0.0, 0.5, 0.8]], dtype=np.float32)
GT = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=bool)  # TP 3, FP 1 (1,1), FN 1 (1,0)


def blob_case(seed: int, shape=(96, 128)) -> tuple[np.ndarray, np.ndarray]:
    """A rectangle-and-disk mask and a noisy, blurred-looking prediction of it."""
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    gt = ((y - h * 0.4) ** 2 + (x - w * 0.6) ** 2 < (min(h, w) * 0.2) ** 2) | ((y > 5) & (y < 30) & (x > 8) & (x < 40))
    pred = np.clip(gt * 0.6 + rng.normal(0.2, 0.25, shape), 0, 1).astype(np.float32)
    return np.round(pred, 3), gt  # rounding makes ties


def sklearn_best_f1(pred: np.ndarray, gt: np.ndarray) -> float:
    precision, recall, _ = sk.precision_recall_curve(gt.ravel(), pred.ravel())
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(scores.max())


def reference_boundary(gt: np.ndarray, erode: int, dilate: int) -> np.ndarray:
    """The reference's extract_ground_truths (min/max filters by max_pool2d), in torch."""
    t = torch.tensor(gt, dtype=torch.float32)
    pe, pd = (erode - 1) // 2, (dilate - 1) // 2
    eroded = -F.max_pool2d(-F.pad(t, (pe, pe, pe, pe), value=float("inf")).unsqueeze(0), erode, stride=1)[0]
    dilated = F.max_pool2d(F.pad(t, (pd, pd, pd, pd)).unsqueeze(0), dilate, stride=1)[0]
    return ((eroded > 0) | (dilated == 0)).numpy()


def reference_best_f1(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    """The reference's best F1 (TruFor-style sweep without the extremes, then max with F1 at 0.5)."""
    p, pos, neg = pred.ravel(), (gt & valid).ravel(), (~gt & valid).ravel()
    inds = np.argsort(p, kind="stable")
    inds = inds[(pos[inds] | neg[inds])]
    th, pos, neg = p[inds], pos[inds].astype(np.int64), neg[inds].astype(np.int64)
    tn, fn = np.cumsum(neg), np.cumsum(pos)
    fp, tp = neg.sum() - tn, pos.sum() - fn
    keep = np.append(th[1:] > th[:-1], False)
    sweep = (2 * tp[keep]) / np.maximum(2 * tp[keep] + fn[keep] + fp[keep], 1e-32)
    return max(float(sweep.max()), f1(pred, gt, 0.5, valid))


# --- IoU and F1, by hand ---------------------------------------------------------------------


def test_iou_by_hand():
    assert iou(PRED, GT) == pytest.approx(3 / 5)  # union: (0,0) (0,1) (1,0) (1,1) (2,2)
    assert iou(PRED, GT, threshold=0.05) == pytest.approx(4 / 8)  # all but (2,0) flagged


def test_f1_by_hand():
    assert f1(PRED, GT) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    skip_fp = np.ones((3, 3), bool)
    skip_fp[1, 1] = False
    assert f1(PRED, GT, valid=skip_fp) == pytest.approx(6 / 7)  # TP 3, FN 1
    skip_fp[1, 0] = False
    assert f1(PRED, GT, valid=skip_fp) == 1.0
    assert f1(PRED, GT) == pytest.approx(sk.f1_score(GT.ravel(), PRED.ravel() > 0.5))


def test_threshold_is_strict():
    pred = np.full((2, 2), 0.5, np.float32)
    gt = np.ones((2, 2), bool)
    assert iou(pred, gt) == 0.0
    assert iou(pred, gt, threshold=0.49) == 1.0


# --- boundary band -----------------------------------------------------------------------------


def test_boundary_band_by_hand():
    gt = np.zeros((9, 9), bool)
    gt[2:7, 2:7] = True  # 5x5 square
    valid = boundary_ignore(gt, erode=3, dilate=3)
    expected = np.ones((9, 9), bool)
    expected[1:8, 1:8] = False  # dilated by 1: 7x7 ...
    expected[3:6, 3:6] = True  # ... minus the square eroded by 1: 3x3
    assert np.array_equal(valid, expected)
    assert valid.sum() == 81 - 49 + 9


def test_boundary_image_edge_does_not_erode():
    gt = np.zeros((5, 5), bool)
    gt[:, :2] = True  # touches the left edge
    valid = boundary_ignore(gt, erode=3, dilate=3)
    # column 0 stays fake (outside the image counts as fake), column 1 is eroded, column 2 is dilated.
    assert np.array_equal(valid[0], [True, False, False, True, True])
    assert (valid == valid[0]).all()


def test_boundary_default_sizes_are_square_windows():
    gt = np.zeros((64, 64), bool)
    gt[17:47, 17:47] = True  # 30x30
    valid = boundary_ignore(gt)  # erode 15 = radius 7, dilate 11 = radius 5
    assert valid.sum() == 16 * 16 + (64 * 64 - 40 * 40)
    assert valid[24:40, 24:40].all() and not valid[23, 30] and not valid[12, 30] and valid[11, 30]


@pytest.mark.parametrize("seed", range(3))
def test_boundary_matches_reference_filters(seed):
    _, gt = blob_case(seed)
    gt[:, -3:] = True  # a strip along the right edge
    for erode, dilate in [(15, 11), (3, 7), (1, 1), (21, 5)]:
        assert np.array_equal(boundary_ignore(gt, erode, dilate), reference_boundary(gt, erode, dilate))


def test_boundary_sizes_must_be_odd():
    with pytest.raises(ValueError):
        boundary_ignore(np.zeros((4, 4), bool), erode=14)
    with pytest.raises(ValueError):
        boundary_ignore(np.zeros((4, 4), bool), dilate=0)


# --- best F1 and AP against scikit-learn ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_best_f1_matches_sklearn(seed):
    pred, gt = blob_case(seed)
    value, threshold = best_f1(pred, gt)
    assert value == pytest.approx(sklearn_best_f1(pred, gt), abs=1e-12)
    assert f1(pred, gt, threshold) == pytest.approx(value, abs=1e-12)

    valid = boundary_ignore(gt)
    value, threshold = best_f1(pred, gt, valid)
    assert value == pytest.approx(sklearn_best_f1(pred[valid], gt[valid]), abs=1e-12)
    assert f1(pred, gt, threshold, valid) == pytest.approx(value, abs=1e-12)
    # The reference's sweep omits only the extreme thresholds: same value on realistic maps.
    assert value == pytest.approx(reference_best_f1(pred, gt, valid), abs=1e-9)


def test_best_f1_is_exhaustive():
    rng = np.random.default_rng(7)
    pred = rng.integers(0, 6, (8, 9)).astype(np.float32) / 5
    gt = rng.random((8, 9)) < 0.4
    thresholds = [-np.inf, *np.unique(pred), np.inf]
    brute = max(f1(pred, gt, t) for t in thresholds)
    value, threshold = best_f1(pred, gt)
    assert value == pytest.approx(brute, abs=1e-12)
    assert threshold == max(t for t in thresholds if f1(pred, gt, t) == pytest.approx(brute, abs=1e-12))


def test_best_f1_extremes():
    gt = np.ones((4, 4), bool)
    gt[0, 0] = False
    pred = np.full((4, 4), 0.2, np.float32)  # constant: only "all" or "none"
    assert best_f1(pred, gt) == (pytest.approx(2 * 15 / (16 + 15)), -np.inf)
    assert best_f1(pred, np.zeros((4, 4), bool)) == (1.0, np.inf)


@pytest.mark.parametrize("seed", range(4))
def test_pixel_ap_matches_sklearn(seed):
    pred, gt = blob_case(seed)
    assert pixel_ap(pred, gt) == pytest.approx(sk.average_precision_score(gt.ravel(), pred.ravel()), abs=1e-12)
    valid = boundary_ignore(gt)
    expected = sk.average_precision_score(gt[valid], pred[valid])
    assert pixel_ap(pred, gt, valid) == pytest.approx(expected, abs=1e-12)


def test_pixel_ap_by_hand():
    pred = np.array([[0.9, 0.8, 0.7, 0.6]], np.float32)
    gt = np.array([[True, False, True, False]])
    assert pixel_ap(pred, gt) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


# --- masks and resizing ------------------------------------------------------------------------------


def test_load_mask_threshold_and_inverted(tmp_path):
    img = Image.fromarray(np.array([[0, 127, 128, 255]], np.uint8), "L")
    assert load_mask(img).tolist() == [[False, False, True, True]]
    assert load_mask(img, inverted=True).tolist() == [[True, True, False, False]]
    img.convert("RGB").save(tmp_path / "m.png")
    assert load_mask(tmp_path / "m.png").tolist() == [[False, False, True, True]]
    assert load_mask(str(tmp_path / "m.png"), inverted=True).dtype == bool


def test_resize_to_ramp():
    ramp = np.tile(np.arange(4, dtype=np.float32), (2, 1))  # 2x4, values = column index
    out = resize_to(ramp, (4, 8))
    # Half-pixel centres: output column x samples x/2 - 0.25, clamped to [0, 3].
    assert out.dtype == np.float32 and out.shape == (4, 8)
    np.testing.assert_allclose(out, np.tile([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3], (4, 1)), atol=1e-6)
    assert resize_to(ramp, (2, 4)) is ramp  # same shape, already float32: returned as is
    as_float32 = resize_to(ramp.astype(np.float64), (2, 4))
    assert as_float32.dtype == np.float32
    np.testing.assert_array_equal(as_float32, ramp)


def bilinear_oracle(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Upsampling with half-pixel centres, in float64 (torch's float32 kernel is off by ~1e-5)."""

    def taps(n_out: int, n_in: int):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    (y0, y1, fy), (x0, x1, fx) = taps(shape[0], pred.shape[0]), taps(shape[1], pred.shape[1])
    p = pred.astype(np.float64)
    rows = p[y0] * (1 - fy)[:, None] + p[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx) + rows[:, x1] * fx


@pytest.mark.parametrize("shape", [(512, 384), (300, 1000), (257, 256)])
def test_resize_to_upsampling_is_bilinear(shape):
    pred = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    out = resize_to(pred, shape)
    np.testing.assert_allclose(out, bilinear_oracle(pred, shape), atol=1e-6)
    expected = F.interpolate(torch.from_numpy(pred)[None, None], size=shape, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(out, expected[0, 0].numpy(), atol=3e-5)


def test_resize_to_downscaling_is_antialiased():
    pred = np.random.default_rng(1).random((256, 256), dtype=np.float32)
    t = torch.from_numpy(pred)[None, None]
    expected = F.interpolate(t, size=(100, 60), mode="bilinear", align_corners=False, antialias=True)
    np.testing.assert_allclose(resize_to(pred, (100, 60)), expected[0, 0].numpy(), atol=1e-5)


# --- conventions and errors ---------------------------------------------------------------------------


def test_empty_mask_conventions():
    gt = np.zeros((8, 8), bool)
    quiet = np.full((8, 8), 0.1, np.float32)
    assert iou(quiet, gt) == 1.0 and f1(quiet, gt) == 1.0
    assert np.isnan(pixel_ap(quiet, gt))
    noisy = quiet.copy()
    noisy[3, 3] = 0.9
    assert iou(noisy, gt) == 0.0 and f1(noisy, gt) == 0.0
    assert best_f1(noisy, gt) == (1.0, np.inf)


def test_all_fake_mask_conventions():
    gt = np.ones((20, 20), bool)
    pred = np.random.default_rng(2).random((20, 20)).astype(np.float32)
    assert boundary_ignore(gt).all()  # the image edge does not erode
    assert iou(pred, gt) == pytest.approx(np.mean(pred > 0.5))
    assert pixel_ap(pred, gt) == 1.0
    assert best_f1(pred, gt) == (1.0, -np.inf)


def test_errors():
    pred = np.zeros((3, 3), np.float32)
    pred[1, 1] = np.nan
    for fn in (iou, f1, best_f1, pixel_ap, score_mask):
        with pytest.raises(ValueError, match="NaN"):
            fn(pred, GT)
    with pytest.raises(TypeError):
        iou(PRED, GT.astype(np.uint8))
    with pytest.raises(ValueError, match="resize_to"):
        iou(PRED, np.zeros((4, 4), bool))
    with pytest.raises(ValueError):
        f1(PRED, GT, valid=np.ones((3, 3), np.uint8))


# --- per-image scores ------------------------------------------------------------------------------


def test_score_mask_resizes_and_agrees():
    pred, gt = blob_case(5, shape=(64, 64))
    big_gt = np.repeat(np.repeat(gt, 2, 0), 3, 1)  # (128, 192)
    scores = score_mask(pred, big_gt)
    assert isinstance(scores, LocalizationScores)
    at_size = resize_to(pred, big_gt.shape)
    valid = boundary_ignore(big_gt)
    assert scores.iou == pytest.approx(iou(at_size, big_gt))
    assert scores.f1 == pytest.approx(f1(at_size, big_gt, 0.5, valid))
    assert (scores.f1_best, scores.best_threshold) == best_f1(at_size, big_gt, valid)
    assert scores.ap == pytest.approx(pixel_ap(at_size, big_gt))
    assert scores.f1_best >= scores.f1
    assert all(0 <= v <= 1 for v in (scores.iou, scores.f1, scores.f1_best, scores.ap))
