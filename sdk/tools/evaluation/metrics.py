"""Anomaly-detection metrics over a split: SegF1, AucPro, ClassF1, and the AUROC / F1-max references.

numpy and OpenCV only. Everything is computed by streaming: ``PixelMetrics.add`` takes one image
(ground truth, continuous map, binary mask), updates a few fixed-size accumulators and forgets the
image, so a split of any length costs the same memory.

Scores and thresholds
---------------------
The curves (PRO, ROC, precision-recall) need, for every threshold ``t``, how many pixels of each
kind score ``>= t``. Instead of keeping and sorting every pixel, each score is rounded to IEEE
float16 and used as a 16-bit key whose integer order is the order of the values
(``score_keys``); three 65 536-bin histograms over these keys are all the curves need:

- ``all``: every pixel (good pixels = all − defect),
- ``defect``: pixels inside a ground-truth region,
- ``pro``: pixels inside a ground-truth region, each weighted by 1/(area of its region).

Why float16, and why this is exact: every distinct float16 value has its own bin, so sweeping
the bins from the top is *exactly* the sweep over the sorted scores that the MVTec AD evaluation
does (ties merged, one curve point per distinct value) for the float16-rounded map. RoBiS itself
stores its merged maps as float16 (and MVTec AD 2 submissions are float16 TIFFs), so this is the
precision its numbers are computed at. Relative to float32 scores the rounding moves a score by
at most 2^-11 of its value (0.06 at 255); docs/evaluation.md gives the measured difference. Any
range works (negative scores of the rolling scope, scores above 255); NaN maps are refused.

Cost per image: one float16 conversion, one 65 536-bin histogram of all pixels (OpenCV
``calcHist``, exact integer counts), and work proportional to the ground-truth bounding box
(connected components, weighted counts) — no sort, no per-threshold pass.

Definitions (docs/evaluation.md says the same in prose)
-------------------------------------------------------
- SegF1: F1 = 2TP / (2TP + FP + FN) of the final binary masks, TP/FP/FN summed over all pixels
  of all images of the split (a micro average, as MVTec AD 2 does: large and small images weigh
  by their pixels, defect-free images contribute their false positives). ``None`` when the split
  has neither a defect pixel nor a predicted one.
- AucPro@L: per-region overlap PRO(t) = mean over all ground-truth regions (8-connected, of all
  images) of |region ∩ {score >= t}| / |region|; FPR(t) = |good pixels with score >= t| / |good
  pixels| over all images; the curve is prepended with (0, 0) and closed with (1, 1), integrated
  with the trapezoidal rule up to FPR = L (the last segment interpolated linearly at L) and
  divided by L. This is the MVTec AD evaluation's ``compute_pro`` + ``trapezoid``.
- ClassF1: F1 of the verdicts ("fail" = predicted defective) against "the ground truth has a
  defect pixel".
- image AUROC: Mann–Whitney statistic of the image scores (ties count one half).
- pixel AUROC, pixel F1-max: from the pixel histograms; F1-max is the best F1 of "score >= t"
  over all thresholds t.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

NUM_BINS = 1 << 16
FPR_LIMIT = 0.05
_CALC_HIST_MAX = 1 << 24  # float32 bin counts of cv2.calcHist are exact below this many pixels


def f1_score(tp: int, fp: int, fn: int) -> float | None:
    """2TP / (2TP + FP + FN); ``None`` when there is neither a positive nor a prediction."""
    denom = 2 * tp + fp + fn
    return None if denom == 0 else 2.0 * tp / denom


# -- score keys ---------------------------------------------------------------------------
def score_keys(scores: np.ndarray) -> np.ndarray:
    """uint16 keys of the float16-rounded scores, ordered as the values are.

    Non-negative values v map to 0x8000 + bits(v), negative ones to 2^16 − bits(v) (so −0 and
    +0 share 0x8000); NaN keys would sort outside the finite ones (callers refuse NaN)."""
    x = np.asarray(scores)
    with np.errstate(over="ignore"):  # beyond ±65504 is ±inf in float16: still ordered
        bits = (x if x.dtype == np.float16 else x.astype(np.float16)).view(np.uint16)
    if x.size and x.min() >= 0:  # the usual case (0..255 maps): −0 is the only bits >= 0x8000
        return bits | np.uint16(0x8000)
    return np.where(bits >= 0x8000, np.negative(bits), bits | np.uint16(0x8000)).astype(np.uint16)


_KEY_VALUES: np.ndarray | None = None


def key_values() -> np.ndarray:
    """The float64 score of each of the 65 536 keys (NaN where no float16 maps to a key)."""
    global _KEY_VALUES
    if _KEY_VALUES is None:
        k = np.arange(NUM_BINS, dtype=np.uint32)
        bits = np.where(k >= 0x8000, k - 0x8000, (NUM_BINS - k) % NUM_BINS).astype(np.uint16)
        vals = bits.view(np.float16).astype(np.float64)
        vals[0] = np.nan  # 2^16 − bits = 0 would be bits 0x0000, which is +0 (key 0x8000)
        _KEY_VALUES = vals
    return _KEY_VALUES


def key_histogram(keys: np.ndarray) -> np.ndarray:
    """int64 histogram (65 536 bins) of a 2-D uint16 key array."""
    keys = np.ascontiguousarray(keys)
    if keys.ndim != 2:
        keys = keys.reshape(1, -1)
    hist = np.zeros(NUM_BINS, np.int64)
    rows = max(1, _CALC_HIST_MAX // max(1, keys.shape[1]))
    for r0 in range(0, keys.shape[0], rows):
        part = keys[r0:r0 + rows]
        if part.shape[1] > _CALC_HIST_MAX:  # a single row longer than calcHist counts exactly
            hist += np.bincount(part.ravel(), minlength=NUM_BINS)
            continue
        h = cv2.calcHist([part], [0], None, [NUM_BINS], [0, NUM_BINS], accumulate=False)
        hist += np.rint(h.ravel()).astype(np.int64)
    return hist


# -- resizing to the ground truth -------------------------------------------------------------
def resize_map(amap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A continuous map at the ground truth's size: bilinear (OpenCV INTER_LINEAR, pixel centres
    aligned, i.e. align_corners=False), float32."""
    amap = np.asarray(amap, np.float32)
    if amap.shape == tuple(shape):
        return amap
    return cv2.resize(amap, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A binary mask at the ground truth's size: nearest neighbour (OpenCV INTER_NEAREST, as
    ``Inspector(mask_scale=1.0)`` does), bool."""
    m = (np.asarray(mask) > 0).view(np.uint8)
    if m.shape != tuple(shape):
        m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return m.view(bool)


# -- curves from histograms -------------------------------------------------------------------
def trapezoid(x: np.ndarray, y: np.ndarray, x_max: float | None = None) -> float:
    """Area under the polyline (x, y) (x ascending), up to ``x_max``; the segment crossing
    ``x_max`` is cut there with y interpolated linearly (the MVTec AD evaluation's rule)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    correction = 0.0
    if x_max is not None:
        if x_max not in x:
            ins = int(np.searchsorted(x, x_max, side="right"))
            if ins == 0 or ins == len(x):
                raise ValueError(f"x_max={x_max} is outside the curve's range [{x[0]}, {x[-1]}]")
            y_at = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
            correction = 0.5 * (y_at + y[ins - 1]) * (x_max - x[ins - 1])
        keep = x <= x_max
        x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)) + correction)


def _descending(hist: np.ndarray, occupied: np.ndarray) -> np.ndarray:
    """Cumulative sums from the highest key down, at the occupied keys only."""
    return np.cumsum(hist[::-1])[occupied[::-1]]


def pro_curve(hist_all: np.ndarray, hist_defect: np.ndarray, hist_pro: np.ndarray,
              n_regions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, pro, thresholds), one point per distinct score from the highest down, with (0, 0)
    prepended and (1, 1) appended (thresholds +inf / −inf there)."""
    good = hist_all - hist_defect
    n_good = int(good.sum())
    occupied = hist_all > 0
    thr = key_values()[::-1][occupied[::-1]]
    fpr = _descending(good, occupied) / max(n_good, 1)
    pro = _descending(hist_pro, occupied) / max(n_regions, 1)
    np.clip(fpr, None, 1.0, out=fpr)
    np.clip(pro, None, 1.0, out=pro)
    return (np.r_[0.0, fpr, 1.0], np.r_[0.0, pro, 1.0], np.r_[np.inf, thr, -np.inf])


def au_pro(fpr: np.ndarray, pro: np.ndarray, limit: float = FPR_LIMIT) -> float:
    """Normalised area under the PRO curve up to FPR = ``limit``."""
    return trapezoid(fpr, pro, limit) / limit


def roc_curve(hist_pos: np.ndarray, hist_neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of "score >= t", from (0, 0) to (1, 1)."""
    occupied = (hist_pos + hist_neg) > 0
    tp = _descending(hist_pos, occupied)
    fp = _descending(hist_neg, occupied)
    thr = key_values()[::-1][occupied[::-1]]
    return (np.r_[0.0, fp / max(int(hist_neg.sum()), 1)], np.r_[0.0, tp / max(int(hist_pos.sum()), 1)],
            np.r_[np.inf, thr])


def auroc_from_hist(hist_pos: np.ndarray, hist_neg: np.ndarray) -> float | None:
    """Area under the ROC curve (ties between a positive and a negative count one half)."""
    if hist_pos.sum() == 0 or hist_neg.sum() == 0:
        return None
    fpr, tpr, _ = roc_curve(hist_pos, hist_neg)
    return trapezoid(fpr, tpr)


def pr_curve(hist_pos: np.ndarray, hist_neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) of "score >= t", one point per distinct score, highest
    threshold first."""
    occupied = (hist_pos + hist_neg) > 0
    tp = _descending(hist_pos, occupied).astype(np.float64)
    fp = _descending(hist_neg, occupied).astype(np.float64)
    n_pos = max(int(hist_pos.sum()), 1)
    precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
    return precision, tp / n_pos, key_values()[::-1][occupied[::-1]]


def f1_max_from_hist(hist_pos: np.ndarray, hist_neg: np.ndarray) -> tuple[float | None, float | None]:
    """(best F1 of "score >= t" over all t, that t); (None, None) without positives."""
    n_pos = int(hist_pos.sum())
    if n_pos == 0:
        return None, None
    occupied = (hist_pos + hist_neg) > 0
    tp = _descending(hist_pos, occupied).astype(np.float64)
    fp = _descending(hist_neg, occupied).astype(np.float64)
    f1 = 2 * tp / (tp + fp + n_pos)
    i = int(np.argmax(f1))
    return float(f1[i]), float(key_values()[::-1][occupied[::-1]][i])


def auroc(scores, labels) -> float | None:
    """Image-level AUROC by the rank formula (average ranks for ties); exact for float64 scores.
    ``None`` when one class is absent."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    rank_sum = float(avg_rank[inverse][y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


# -- accumulators --------------------------------------------------------------------------------
@dataclass
class ImagePixelStats:
    """What one image contributed (at the ground truth's resolution)."""

    pixels: int
    gt_pixels: int
    gt_regions: int
    regions_hit: int  # ground-truth regions with at least one predicted pixel
    pred_pixels: int
    tp: int
    fp: int
    fn: int

    @property
    def seg_f1(self) -> float | None:
        return f1_score(self.tp, self.fp, self.fn)

    def to_json(self) -> dict:
        d = asdict(self)
        d["seg_f1"] = self.seg_f1
        return d


class PixelMetrics:
    """Streaming pixel-level metrics of one split (SegF1, AucPro, pixel AUROC, pixel F1-max).

    Memory: three 65 536-bin histograms and a few counters, whatever the number of images."""

    def __init__(self) -> None:
        self.hist_all = np.zeros(NUM_BINS, np.int64)
        self.hist_defect = np.zeros(NUM_BINS, np.int64)
        self.hist_pro = np.zeros(NUM_BINS, np.float64)
        self.images = 0
        self.defective_images = 0
        self.regions = 0
        self.pixels = 0
        self.defect_pixels = 0
        self.tp = self.fp = self.fn = 0

    def add(self, gt: np.ndarray, amap: np.ndarray | None, mask: np.ndarray | None) -> ImagePixelStats:
        """Add one image: ``gt`` (H×W, nonzero = defect) at the resolution metrics are computed at;
        ``amap`` the continuous map and ``mask`` the final binary mask at any size (resized to
        H×W: bilinear and nearest). Either may be None to skip the metrics that need it."""
        gt8 = (np.asarray(gt) > 0).view(np.uint8)
        if gt8.ndim != 2:
            raise ValueError(f"ground truth must be 2-D, got shape {gt8.shape}")
        shape = gt8.shape
        n_px = shape[0] * shape[1]
        x, y, w, h = cv2.boundingRect(gt8)  # (0, 0, 0, 0) for an empty mask
        gt_pixels = cv2.countNonZero(gt8)
        labels = None
        n_reg = 0
        if gt_pixels:
            n, labels, stats, _ = cv2.connectedComponentsWithStats(gt8[y:y + h, x:x + w], connectivity=8)
            n_reg = n - 1
            fg = labels > 0
            lab = labels[fg]

        keys = None
        if amap is not None:
            amap = np.asarray(amap)
            if np.isnan(amap).any():
                raise ValueError("the anomaly map contains NaN")
            keys = score_keys(resize_map(amap, shape))
            self.hist_all += key_histogram(keys)
            if gt_pixels:
                kd = keys[y:y + h, x:x + w][fg]
                self.hist_defect += np.bincount(kd, minlength=NUM_BINS)
                area = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
                self.hist_pro += np.bincount(kd, weights=1.0 / area[lab], minlength=NUM_BINS)

        tp = pred_pixels = regions_hit = 0
        if mask is not None:
            pred = resize_mask(mask, shape)
            pred_pixels = cv2.countNonZero(pred.view(np.uint8))
            if gt_pixels:
                hit = pred[y:y + h, x:x + w][fg]
                tp = int(np.count_nonzero(hit))
                regions_hit = int(np.count_nonzero(np.bincount(lab[hit], minlength=n_reg + 1)[1:]))
            self.tp += tp
            self.fp += pred_pixels - tp
            self.fn += gt_pixels - tp
        self.images += 1
        self.defective_images += gt_pixels > 0
        self.regions += n_reg
        self.pixels += n_px
        self.defect_pixels += gt_pixels
        return ImagePixelStats(n_px, gt_pixels, n_reg, regions_hit, pred_pixels, tp, pred_pixels - tp,
                               gt_pixels - tp)

    @property
    def good_pixels(self) -> int:
        return self.pixels - self.defect_pixels

    def pro_curve(self):
        return pro_curve(self.hist_all, self.hist_defect, self.hist_pro, self.regions)

    def au_pro(self, limit: float = FPR_LIMIT) -> float | None:
        if self.regions == 0 or self.good_pixels == 0 or self.hist_all.sum() == 0:
            return None
        fpr, pro, _ = self.pro_curve()
        return au_pro(fpr, pro, limit)

    def result(self, limit: float = FPR_LIMIT) -> dict:
        """The metrics, each with what it rests on."""
        base = {"images": self.images, "defective_images": self.defective_images, "regions": self.regions}
        good = self.hist_all - self.hist_defect
        f1max, f1thr = f1_max_from_hist(self.hist_defect, good) if self.hist_all.any() else (None, None)
        prec = None if self.tp + self.fp == 0 else self.tp / (self.tp + self.fp)
        rec = None if self.tp + self.fn == 0 else self.tp / (self.tp + self.fn)
        return {
            "seg_f1": {"value": f1_score(self.tp, self.fp, self.fn), **base, "pixels": self.pixels,
                       "tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": prec, "recall": rec},
            "au_pro": {"value": self.au_pro(limit), "fpr_limit": limit, **base,
                       "good_pixels": self.good_pixels},
            "pixel_auroc": {"value": auroc_from_hist(self.hist_defect, good) if self.hist_all.any() else None,
                            **base, "defect_pixels": self.defect_pixels, "good_pixels": self.good_pixels},
            "pixel_f1_max": {"value": f1max, "threshold": f1thr, **base},
        }


class ImageMetrics:
    """Image-level metrics of one split: ClassF1 of the verdicts and the image AUROC."""

    def __init__(self) -> None:
        self.scores: list[float] = []
        self.labels: list[bool] = []
        self.fails: list[bool] = []

    def add(self, defective: bool, score: float, fail: bool) -> None:
        self.scores.append(float(score))
        self.labels.append(bool(defective))
        self.fails.append(bool(fail))

    def result(self) -> dict:
        y = np.asarray(self.labels, bool)
        p = np.asarray(self.fails, bool)
        tp, fp = int(np.sum(y & p)), int(np.sum(~y & p))
        fn, tn = int(np.sum(y & ~p)), int(np.sum(~y & ~p))
        base = {"images": len(y), "defective_images": int(y.sum()), "good_images": int((~y).sum())}
        return {"class_f1": {"value": f1_score(tp, fp, fn), **base, "tp": tp, "fp": fp, "fn": fn, "tn": tn},
                "image_auroc": {"value": auroc(self.scores, self.labels), **base}}
