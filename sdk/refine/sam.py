"""SAM box refinement of a coarse anomaly mask, as RoBiS' ``SAM_Finer`` does it, on ONNX Runtime.

Per frame: boxes of the ``top_n`` largest 8-connected coarse regions → frame brought to the mask
resolution (scipy ``zoom(order=1)`` semantics) → SAM preprocessing (longest side 1024, Pillow
bilinear, normalise, zero-pad) → ONE encoder run → ONE decoder run for all boxes → low-res logits
upsampled, cropped and resized to the mask resolution, ``> 0`` → token 0 (``single``) or the union
of tokens 1..3 (``multi_or``) → union over boxes → RoBiS' hole filling. The result replaces the
coarse mask. An empty coarse mask returns an empty mask without running any model.
See docs/refine.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.onnxruntime import open_session
from ..errors import BackendError, BundleError, InputError
from ..postprocess.morphology import fill_holes
from ..preprocess import prepare_frame
from ..timing import ms_since
from ..vocabulary import COLORS, SAM_CHANNEL_ORDERS, SAM_MODES
from .ops import (
    PIXEL_MEAN,
    PIXEL_STD,
    SAM_IMAGE_SIZE,
    SAM_LOW_RES,
    boxes_to_sam_frame,
    postprocess_masks,
    sam_input_size,
    sam_normalize_pad,
    sam_resize,
    topn_boxes,
    zoom_linear_uint8,
)

MODES = SAM_MODES
CHANNEL_ORDERS = SAM_CHANNEL_ORDERS
TIMING_KEYS = ("sam_pre", "sam_encoder", "sam_decoder", "sam_post")


@dataclass
class RefineOutput:
    """What one refinement did (``SamRefiner.refine_verbose``)."""

    mask: np.ndarray  # uint8 0/255 at the coarse-mask resolution
    timings_ms: dict[str, float]
    boxes: np.ndarray  # (n, 4) int64 boxes in mask pixels, x0 y0 x1 y1 (exclusive max)
    sam_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # 1024 frame
    iou: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # (n, 4) predictions
    sam_input_hw: tuple[int, int] = (0, 0)
    unfilled: np.ndarray | None = None  # the union of the SAM masks before hole filling


def _session(path: str | os.PathLike, providers: Sequence[str], threads: int | None):
    return open_session(path, list(providers), threads)


def _check_io(sess, inputs: Sequence[str], outputs: Sequence[str], what: str) -> None:
    ins = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    if any(n not in ins for n in inputs) or any(n not in outs for n in outputs):
        raise BackendError(f"the SAM {what} must have inputs {list(inputs)} and outputs {list(outputs)} "
                           f"(docs/bundle.md); it has {ins} → {outs}")


class SamRefiner:
    """Refines coarse masks with a SAM encoder/decoder pair exported by ``robis-edge export sam``.

    ``mode``: ``"single"`` (mask token 0) or ``"multi_or"`` (union of tokens 1..3).
    ``channel_order``: what SAM is fed — ``"bgr_as_rgb"`` (default: BGR bytes in SAM's RGB slots,
    which is what RoBiS does, reading with cv2.imread and never converting; needed for parity) or
    ``"rgb"`` (true RGB, what SAM was trained on). ``providers``: ONNX Runtime execution providers
    (default CPU). Thread-safe: ``refine`` may be called from several threads.
    """

    def __init__(self, encoder_path: str | os.PathLike, decoder_path: str | os.PathLike, mode: str = "single",
                 top_n: int = 3, channel_order: str = "bgr_as_rgb", providers: Sequence[str] | None = None,
                 *, threads: int | None = None, mask_threshold: float = 0.0, fill_holes: bool = True) -> None:
        providers = list(providers) if providers else ["CPUExecutionProvider"]
        enc = _session(encoder_path, providers, threads)
        dec = _session(decoder_path, providers, threads)
        self._init(enc, dec, mode, top_n, channel_order, mask_threshold, fill_holes)
        self.provider = enc.get_providers()[0]

    @classmethod
    def from_sessions(cls, encoder, decoder, mode: str = "single", top_n: int = 3,
                      channel_order: str = "bgr_as_rgb", *, mask_threshold: float = 0.0,
                      fill_holes: bool = True) -> SamRefiner:
        """A refiner around two objects with ONNX Runtime's ``run(output_names, feeds)`` and
        ``get_inputs()/get_outputs()`` (other runtimes, tests)."""
        self = cls.__new__(cls)
        self._init(encoder, decoder, mode, top_n, channel_order, mask_threshold, fill_holes)
        self.provider = type(encoder).__name__
        return self

    def _init(self, enc, dec, mode, top_n, channel_order, mask_threshold, do_fill) -> None:
        if mode not in MODES:
            raise InputError(f"SAM refine mode must be one of {MODES} (got {mode!r}; 'off' means no refiner)")
        if channel_order not in CHANNEL_ORDERS:
            raise InputError(f"channel_order must be one of {CHANNEL_ORDERS} (got {channel_order!r})")
        if isinstance(top_n, bool) or int(top_n) != top_n or int(top_n) < 1:
            raise InputError(f"top_n must be a positive integer (got {top_n!r})")
        _check_io(enc, ["image"], ["embeddings"], "encoder")
        _check_io(dec, ["embeddings", "boxes"], ["masks", "iou"], "decoder")
        self.encoder, self.decoder = enc, dec
        self.mode, self.top_n, self.channel_order = mode, int(top_n), channel_order
        self.mask_threshold = float(mask_threshold)
        self.fill_holes = bool(do_fill)
        self.tokens = slice(0, 1) if mode == "single" else slice(1, 4)

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "top_n": self.top_n, "channel_order": self.channel_order,
                "provider": self.provider, "mask_threshold": self.mask_threshold}

    # -- steps -----------------------------------------------------------------------------
    def _frame_at_mask_size(self, frame: np.ndarray, hw: tuple[int, int], color: str) -> np.ndarray:
        """The frame at the mask resolution, 3 channels, in the order SAM is fed."""
        if color not in (None, *COLORS):
            raise InputError(f"color must be one of {', '.join(COLORS)} (got {color!r})")
        gray = isinstance(frame, np.ndarray) and (frame.ndim == 2 or frame.shape[-1:] == (1,))
        if not gray and color not in ("rgb", "bgr"):
            raise InputError(f"a 3-channel frame must be color 'rgb' or 'bgr' (got {color!r})")
        rgb = prepare_frame(frame, None if gray else color)  # the one frame check; H×W or RGB H×W×3 uint8
        if rgb.ndim == 2:
            small = zoom_linear_uint8(rgb, hw)
            return np.repeat(small[:, :, None], 3, axis=2)  # cv2.imread replicates gray
        src = rgb[:, :, ::-1] if self.channel_order == "bgr_as_rgb" else rgb  # views, no copies
        return np.ascontiguousarray(zoom_linear_uint8(src, hw))  # per channel: commutes with the order

    def encode(self, small: np.ndarray) -> tuple[np.ndarray, tuple[int, int], float, float]:
        """SAM preprocessing + the encoder: (embeddings, resized hw, pre ms, encoder ms)."""
        t0 = time.perf_counter()
        in_hw = sam_input_size(*small.shape[:2])
        if min(in_hw) < 1:
            raise InputError(f"a {small.shape[0]}×{small.shape[1]} mask is too elongated for SAM's "
                             f"longest-side 1024 resize (it would be {in_hw[0]}×{in_hw[1]})")
        image = sam_normalize_pad(sam_resize(small, in_hw), SAM_IMAGE_SIZE, PIXEL_MEAN, PIXEL_STD)
        t1 = time.perf_counter()
        emb = self.encoder.run(["embeddings"], {"image": image})[0]
        return emb, in_hw, (t1 - t0) * 1000.0, ms_since(t1)

    def decode(self, embeddings: np.ndarray, sam_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One decoder run for all boxes: (B, 4, 256, 256) logits, (B, 4) iou."""
        feeds = {"embeddings": embeddings, "boxes": np.ascontiguousarray(sam_boxes, np.float32)}
        masks, iou = self.decoder.run(["masks", "iou"], feeds)
        n = len(sam_boxes)
        if masks.shape != (n, 4, SAM_LOW_RES, SAM_LOW_RES) or iou.shape != (n, 4):
            raise BackendError(f"the SAM decoder returned {masks.shape} / {iou.shape} for {n} boxes, "
                               f"expected ({n}, 4, {SAM_LOW_RES}, {SAM_LOW_RES}) / ({n}, 4)")
        return masks, iou

    # -- public API ------------------------------------------------------------------------
    def refine(self, frame: np.ndarray, coarse_mask: np.ndarray, color: str = "rgb"
               ) -> tuple[np.ndarray, dict[str, float]]:
        """Refine ``coarse_mask`` (h×w, nonzero = defect, any resolution; RoBiS: frame/4) of the
        full-resolution ``frame`` (H×W×3 uint8 in ``color`` order, or H×W gray). Returns the new
        mask (uint8 0/255, h×w) and timings in ms (``sam_pre``, ``sam_encoder``, ``sam_decoder``,
        ``sam_post``)."""
        out = self.refine_verbose(frame, coarse_mask, color)
        return out.mask, out.timings_ms

    def refine_verbose(self, frame: np.ndarray, coarse_mask: np.ndarray, color: str = "rgb") -> RefineOutput:
        t0 = time.perf_counter()
        if not isinstance(coarse_mask, np.ndarray) or coarse_mask.ndim != 2 or coarse_mask.size == 0:
            raise InputError(f"the coarse mask must be a non-empty 2-D array, got "
                             f"{getattr(coarse_mask, 'shape', type(coarse_mask).__name__)}")
        hw = (int(coarse_mask.shape[0]), int(coarse_mask.shape[1]))
        boxes = topn_boxes(coarse_mask, self.top_n)
        timings = dict.fromkeys(TIMING_KEYS, 0.0)
        if len(boxes) == 0:  # RoBiS: no components → all zeros, SAM never runs
            timings["sam_pre"] = ms_since(t0)
            empty = np.zeros(hw, np.uint8)
            return RefineOutput(empty, timings, boxes, unfilled=empty.copy())
        small = self._frame_at_mask_size(frame, hw, color)
        t_zoom = ms_since(t0)
        emb, in_hw, t_pre, t_enc = self.encode(small)
        timings["sam_encoder"] = t_enc
        t1 = time.perf_counter()
        sam_boxes = boxes_to_sam_frame(boxes, hw)
        timings["sam_pre"] = t_zoom + t_pre + ms_since(t1)
        t2 = time.perf_counter()
        low, iou = self.decode(emb, sam_boxes)
        timings["sam_decoder"] = ms_since(t2)
        t3 = time.perf_counter()
        sel = low[:, self.tokens].reshape(-1, SAM_LOW_RES, SAM_LOW_RES)
        fg = postprocess_masks(sel, in_hw, hw, self.mask_threshold).any(axis=0)  # tokens and boxes: union
        union = fg.astype(np.uint8) * np.uint8(255)
        mask = fill_holes(union) if self.fill_holes else union
        timings["sam_post"] = ms_since(t3)
        return RefineOutput(mask, timings, boxes, sam_boxes, iou, in_hw, union)


# ----------------------------------------------------------------------------- bundle
def load_sam_refiner(bundle, backend: str = "auto", *, threads: int | None = None,
                     providers: Sequence[str] | None = None, mode: str | None = None) -> SamRefiner | None:
    """The refiner a bundle asks for, or None when it has no ``refine.sam`` section or its mode is
    ``"off"`` (``mode`` overrides the bundle's). ``bundle`` is a ``sdk.bundle.Bundle`` or a path;
    the files' sha256 are those ``Bundle.load`` verified. ``backend`` picks the ONNX Runtime
    providers as the anomaly model's backend does (``providers`` overrides)."""
    from ..bundle import Bundle

    if not isinstance(bundle, Bundle):
        bundle = Bundle.load(bundle)
    spec = bundle.sam
    if spec is None:
        return None
    mode = mode or spec.mode
    if mode == "off":
        return None
    files = bundle.files
    for rel in (spec.encoder_file, spec.decoder_file):
        if rel not in files:
            raise BundleError(f"{bundle.where}: {rel!r} (refine.sam) is not listed under 'files' "
                              "with its sha256")
    if providers is None and backend in ("auto", "tensorrt"):
        engines = _sam_engines(bundle, backend)
        if engines is not None:
            return SamRefiner.from_sessions(*engines, mode=mode, top_n=spec.top_n,
                                            channel_order=spec.channel_order,
                                            mask_threshold=spec.mask_threshold, fill_holes=spec.fill_holes)
    if providers is None:
        from ..backends.onnxruntime import choose_providers

        providers, _ = choose_providers("auto" if backend == "tensorrt" else backend)
    return SamRefiner(bundle.resolve(spec.encoder_file), bundle.resolve(spec.decoder_file), mode, spec.top_n,
                      spec.channel_order, providers, threads=threads, mask_threshold=spec.mask_threshold,
                      fill_holes=spec.fill_holes)


def _sam_engines(bundle, backend: str):
    """TensorRT sessions for the SAM encoder and decoder when the bundle has engines for both that
    run here. ``tensorrt`` without them runs SAM on ONNX Runtime (the anomaly model's engine is
    what that backend name requires; SAM engines are optional)."""
    from ..backends import tensorrt_engine_for

    found = [tensorrt_engine_for(bundle, m)[0] for m in ("sam_encoder", "sam_decoder")]
    if any(e is None for e in found):
        return None
    from ..backends.tensorrt import TrtSession

    return tuple(TrtSession(bundle.resolve(e.file), f"TensorRT {e.precision}") for e in found)
