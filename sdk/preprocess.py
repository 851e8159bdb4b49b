"""Frame and tile preprocessing, as the training transform of RoBiS does it.

Frames become 8-bit RGB the way the reference reads files with ``cv2.imread``: gray is
replicated to three channels, uint16 keeps its high byte (``>> 8``), BGR is reordered. Tiles
are resized to the model size with Pillow's antialiased bilinear filter (bit-exact, see
sdk/resize.py), scaled to 0..1 and normalised with the bundle's mean/std, in float32 and in
the same order of operations as torchvision's ToTensor + Normalize.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from .bundle import PreprocessSpec
from .errors import InputError
from .resize import BilinearAntialiasResizer
from .vocabulary import COLORS  # noqa: F401 - re-exported


def prepare_frame(frame: np.ndarray, color: str | None = None) -> np.ndarray:
    """The frame as uint8 in the model's colour layout: H×W for gray (its three RGB channels
    would be identical, so they are never materialised), H×W×3 RGB otherwise.

    ``color`` is ``"gray"``, ``"bgr"`` or ``"rgb"``; ``None`` means gray for 2-D or
    single-channel frames and BGR (OpenCV's order) for three channels.
    """
    if frame is None:
        raise InputError("the frame is None (cv2.imread returns None when it cannot read a file: check "
                         "the path)")
    if not isinstance(frame, np.ndarray):
        raise InputError(f"a frame must be a numpy array, got {type(frame).__name__}")
    if frame.size == 0:
        raise InputError(f"the frame is empty (shape {frame.shape})")
    if frame.dtype not in (np.uint8, np.uint16):
        raise InputError(f"frames must be uint8 or uint16, got {frame.dtype}; convert the camera "
                         "output to one of them")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        if color not in (None, "gray"):
            raise InputError(f"a single-channel frame cannot be {color!r}; pass color='gray'")
    elif frame.ndim == 3 and frame.shape[2] == 3:
        if color not in (None, "bgr", "rgb"):
            raise InputError(f"a 3-channel frame cannot be {color!r}; pass color='bgr' or 'rgb'")
    elif frame.ndim == 3 and frame.shape[2] == 4:
        raise InputError(f"frames must be H×W (gray) or H×W×3 (BGR/RGB), got shape {frame.shape} (with "
                         "alpha): pass frame[:, :, :3]")
    else:
        raise InputError(f"frames must be H×W (gray) or H×W×3 (BGR/RGB), got shape {frame.shape}")
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    if frame.ndim == 2 or color == "rgb":
        return frame
    return frame[:, :, ::-1]


def frame_to_rgb8(frame: np.ndarray, color: str | None = None) -> np.ndarray:
    """The frame as a C-contiguous H×W×3 uint8 RGB array (gray replicated)."""
    f = prepare_frame(frame, color)
    return np.repeat(f[:, :, None], 3, axis=2) if f.ndim == 2 else np.ascontiguousarray(f)


class TilePreprocessor:
    """Turns uint8 tiles (N, T, T, 3) RGB or (N, T, T) gray into the model input (N, 3, S, S) float32.

    A gray tile is resized once and feeds all three channels. Normalisation is a per-channel
    lookup table of the 256 possible values, each computed as ToTensor + Normalize would
    (``(v / 255 - mean) / std`` in float32), so the result is bit-identical and costs one pass.
    """

    def __init__(self, spec: PreprocessSpec, tile_hw: tuple[int, int]) -> None:
        if spec.resize != "pil_bilinear_antialias":
            raise InputError(f"unsupported preprocess.resize {spec.resize!r} (supported: "
                             "'pil_bilinear_antialias')")
        self.spec = spec
        self.tile_hw = tuple(tile_hw)
        out = (spec.size, spec.size)
        self._resize = None if self.tile_hw == out else BilinearAntialiasResizer(self.tile_hw, out)
        self._order = [0, 1, 2] if spec.channel_order == "RGB" else [2, 1, 0]
        v = np.arange(256, dtype=np.float32) / np.float32(255.0)
        self._lut = [((v - np.float32(m)) / np.float32(sd)).reshape(256, 1)
                     for m, sd in zip(spec.mean, spec.std)]

    def resize(self, tiles: np.ndarray) -> np.ndarray:
        """The uint8 tiles resized to S×S (the model's input size), gray tiles resized once."""
        if self._resize is None:
            return tiles
        if tiles.ndim == 3:
            return self._resize(tiles[..., None])[..., 0]
        return self._resize(tiles)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        gray = tiles.ndim == 3
        if tiles.dtype != np.uint8 or tiles.shape[1:3] != self.tile_hw or not (
                gray or (tiles.ndim == 4 and tiles.shape[3] == 3)):
            raise InputError(f"expected uint8 tiles of shape (N, {self.tile_hw[0]}, {self.tile_hw[1]}[, 3]), "
                             f"got {tiles.dtype} {tiles.shape}")
        small = self.resize(tiles)
        n, s = small.shape[0], self.spec.size
        out = np.empty((n, 3, s, s), dtype=np.float32)
        for i in range(n):
            planes = (small[i],) * 3 if gray else cv2.split(small[i])
            for c_out, c_in in enumerate(self._order):
                cv2.LUT(planes[c_in], self._lut[c_out], dst=out[i, c_out])
        return out


@functools.lru_cache(maxsize=32)
def tile_preprocessor(spec: PreprocessSpec, tile_hw: tuple[int, int]) -> TilePreprocessor:
    """The preprocessor of a tile size, built once per (spec, size): its resize taps and lookup
    tables are shared by every Inspector, the reference tiles and the training tiles."""
    return TilePreprocessor(spec, tuple(tile_hw))
