"""The array steps of RoBiS' SAM refinement (``SAM_Finer``) and of segment-anything's
``SamPredictor``, in numpy/OpenCV (no torch). Each function names the upstream step it mirrors;
docs/refine.md lists where results can differ and by how much.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..resize import resize_bilinear_antialias

SAM_IMAGE_SIZE = 1024
SAM_LOW_RES = 256
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)

__all__ = ["zoom_linear_uint8", "sam_input_size", "sam_resize", "sam_normalize_pad", "topn_boxes",
           "boxes_to_sam_frame", "postprocess_masks", "PIXEL_MEAN", "PIXEL_STD"]


# ----------------------------------------------------------------------------- image to mask size
def _zoom_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scipy.ndimage.zoom(order=1, grid_mode=False, mode='constant') taps along one axis.

    Coordinate of output k: ``k · ((n_in − 1) / (n_out − 1))`` (zoom factor 1 when n_out = 1),
    in float64 as scipy computes it; weights ``w0 = 1 − frac``, ``w1 = 1 − w0`` (scipy's spline
    weights for order 1). A coordinate that float rounding puts above ``n_in − 1`` is outside the
    input for scipy's 'constant' mode: that whole output row/column is cval = 0 (``valid``)."""
    zoom = (n_in - 1) / (n_out - 1) if n_out > 1 else 1.0
    cc = np.arange(n_out, dtype=np.float64) * zoom
    valid = cc <= n_in - 1
    i0 = np.minimum(np.floor(cc).astype(np.intp), n_in - 1)
    frac = cc - np.floor(cc)
    w0 = 1.0 - frac
    w1 = 1.0 - w0
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, w0, w1, valid


def zoom_linear_uint8(image: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 H×W or H×W×C image to ``out_hw`` exactly as RoBiS does with
    ``scipy.ndimage.zoom(image, (h/H, w/W, 1), order=1)``: corner-aligned bilinear, no
    antialiasing, channels independent, rounded half up to uint8.

    Per pixel scipy sums, in this order, ``((v00·wy0)·wx0) + ((v01·wy0)·wx1) + ((v10·wy1)·wx0) +
    ((v11·wy1)·wx1)`` in float64 (the channel axis, zoom 1, contributes weights 1 and 0, which
    change nothing), then stores ``trunc(t + 0.5)``; this function evaluates the same expression."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 H×W or H×W×C image, got {image.dtype} {image.shape}")
    oh, ow = int(out_hw[0]), int(out_hw[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"output size must be positive, got {out_hw}")
    y0, y1, wy0, wy1, vy = _zoom_axis(image.shape[0], oh)
    x0, x1, wx0, wx1, vx = _zoom_axis(image.shape[1], ow)
    extra = (None,) * (image.ndim - 2)
    wy0, wy1 = wy0[(slice(None), None, *extra)], wy1[(slice(None), None, *extra)]
    wx0, wx1 = wx0[(None, slice(None), *extra)], wx1[(None, slice(None), *extra)]
    r0, r1 = image.take(y0, axis=0), image.take(y1, axis=0)  # gathered rows, uint8
    t = (r0.take(x0, axis=1) * wy0) * wx0
    t += (r0.take(x1, axis=1) * wy0) * wx1
    t += (r1.take(x0, axis=1) * wy1) * wx0
    t += (r1.take(x1, axis=1) * wy1) * wx1
    t += 0.5
    np.clip(t, 0.0, 255.0, out=t)
    out = t.astype(np.uint8)  # truncation of t + 0.5 = round half up
    if not vy.all():
        out[~vy] = 0
    if not vx.all():
        out[:, ~vx] = 0
    return out


# ----------------------------------------------------------------------------- SAM preprocessing
def sam_input_size(h: int, w: int, long_side: int = SAM_IMAGE_SIZE) -> tuple[int, int]:
    """``ResizeLongestSide.get_preprocess_shape``: scale = L / max(h, w), side = int(side·scale + 0.5)."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def sam_resize(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """``ResizeLongestSide.apply_image``: torchvision ``resize`` of a PIL image, i.e. Pillow's
    BILINEAR (antialiased when shrinking, plain triangle filter when enlarging, fixed-point, uint8
    per pass), bit-exact via sdk/resize.py."""
    return resize_bilinear_antialias(np.ascontiguousarray(image), size_hw)


def sam_normalize_pad(resized: np.ndarray, size: int = SAM_IMAGE_SIZE,
                      mean: tuple[float, float, float] = PIXEL_MEAN,
                      std: tuple[float, float, float] = PIXEL_STD) -> np.ndarray:
    """``Sam.preprocess``: ``(x − mean) / std`` per channel in float32, then zero padding at the
    bottom/right to size×size, as a (1, 3, size, size) float32 array."""
    h, w = resized.shape[:2]
    out = np.zeros((1, 3, size, size), np.float32)
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    for c in range(3):
        dst = out[0, c, :h, :w]
        np.subtract(resized[:, :, c], m[c], out=dst, dtype=np.float32)
        np.divide(dst, s[c], out=dst)
    return out


# ----------------------------------------------------------------------------- boxes
def topn_boxes(mask: np.ndarray, top_n: int) -> np.ndarray:
    """RoBiS ``get_topn_bounding_boxes``: 8-connected components of the mask
    (``cv2.connectedComponentsWithStats``, default connectivity), ``np.argsort`` of the areas (its
    default, unstable, sort — ties resolve as RoBiS' do), the last ``top_n`` (largest; ascending
    area order kept), each as ``[x, y, x + w, y + h]`` (exclusive max) in mask pixels.
    Returns an (n, 4) int64 array, n = 0 when the mask is empty."""
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1 (got {top_n})")
    m = mask if mask.dtype == np.uint8 else (mask != 0).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(m)
    if n <= 1:
        return np.zeros((0, 4), np.int64)
    areas = stats[1:, cv2.CC_STAT_AREA]
    idx = np.argsort(areas)[-top_n:] + 1
    x = stats[idx, cv2.CC_STAT_LEFT].astype(np.int64)
    y = stats[idx, cv2.CC_STAT_TOP].astype(np.int64)
    w = stats[idx, cv2.CC_STAT_WIDTH].astype(np.int64)
    h = stats[idx, cv2.CC_STAT_HEIGHT].astype(np.int64)
    return np.stack([x, y, x + w, y + h], axis=1)


def boxes_to_sam_frame(boxes: np.ndarray, original_hw: tuple[int, int],
                       long_side: int = SAM_IMAGE_SIZE) -> np.ndarray:
    """``ResizeLongestSide.apply_boxes``: x · (new_w / w), y · (new_h / h) in float64, then float32
    (``torch.as_tensor(box, dtype=torch.float)`` in ``SamPredictor.predict``)."""
    h, w = original_hw
    nh, nw = sam_input_size(h, w, long_side)
    b = np.asarray(boxes).reshape(-1, 2, 2).astype(float)
    b[..., 0] = b[..., 0] * (nw / w)
    b[..., 1] = b[..., 1] * (nh / h)
    return b.reshape(-1, 4).astype(np.float32)


# ----------------------------------------------------------------------------- masks
def postprocess_masks(low_res: np.ndarray, input_hw: tuple[int, int], original_hw: tuple[int, int],
                      threshold: float = 0.0, size: int = SAM_IMAGE_SIZE) -> np.ndarray:
    """``Sam.postprocess_masks`` + ``> mask_threshold`` for (K, 256, 256) logits → (K, h, w) bool:
    bilinear (half-pixel centres, as ``align_corners=False``) to size×size, crop to the resized
    image ``[:new_h, :new_w]``, bilinear to the original (h, w), threshold. OpenCV's float
    INTER_LINEAR uses the same sample positions as torch (identical weights for the exact ×4
    step); only float rounding differs, so a pixel can flip only where its logit is ~0."""
    nh, nw = input_hw
    h, w = original_hw
    out = np.empty((low_res.shape[0], h, w), bool)
    for k, m in enumerate(low_res):
        up = cv2.resize(np.ascontiguousarray(m, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
        crop = up[:nh, :nw]
        if (nh, nw) != (h, w):
            crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
        np.greater(crop, threshold, out=out[k])
    return out
