"""Frame and tile preprocessing, as the training transform of RoBiS does it.

Frames become 8-bit RGB the way the reference reads files with ``cv2.imread``: gray is
replicated to three channels, uint16 keeps its high byte (``>> 8``), BGR is reordered. Tiles
are resized to the model size with Pillow's antialiased bilinear filter (bit-exact, see
sdk/resize.py), scaled to 0..1 and normalised with the bundle's mean/std, in float32 and in
the same order of operations as torchvision's ToTensor + Normalize.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .bundle import PreprocessSpec
from .errors import InputError
from .resize import BilinearAntialiasResizer

Color = Literal["gray", "bgr", "rgb"]
COLORS: tuple[str, ...] = ("gray", "bgr", "rgb")


def frame_to_rgb8(frame: np.ndarray, color: str | None = None) -> np.ndarray:
    """Return the frame as a C-contiguous H×W×3 uint8 RGB array.

    ``color`` is ``"gray"``, ``"bgr"`` or ``"rgb"``; ``None`` means gray for 2-D or
    single-channel frames and BGR (OpenCV's order) for three channels.
    """
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
        channels = 1
    elif frame.ndim == 3 and frame.shape[2] == 3:
        if color not in (None, "bgr", "rgb"):
            raise InputError(f"a 3-channel frame cannot be {color!r}; pass color='bgr' or 'rgb'")
        channels = 3
    else:
        raise InputError(f"frames must be H×W (gray) or H×W×3 (BGR/RGB), got shape {frame.shape}")
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    if channels == 1:
        return np.repeat(frame[:, :, None], 3, axis=2)
    if color == "rgb":
        return np.ascontiguousarray(frame)
    return np.ascontiguousarray(frame[:, :, ::-1])


class TilePreprocessor:
    """Turns uint8 RGB tiles (N, T, T, 3) into the model input (N, 3, S, S) float32."""

    def __init__(self, spec: PreprocessSpec, tile_hw: tuple[int, int]) -> None:
        if spec.resize != "pil_bilinear_antialias":
            raise InputError(f"unsupported preprocess.resize {spec.resize!r} (supported: "
                             "'pil_bilinear_antialias')")
        self.spec = spec
        self.tile_hw = tuple(tile_hw)
        out = (spec.size, spec.size)
        self._resize = None if self.tile_hw == out else BilinearAntialiasResizer(self.tile_hw, out)
        order = [0, 1, 2] if spec.channel_order == "RGB" else [2, 1, 0]
        self._order = order
        self._mean = np.asarray(spec.mean, dtype=np.float32)
        self._std = np.asarray(spec.std, dtype=np.float32)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        if tiles.ndim != 4 or tiles.shape[1:] != (*self.tile_hw, 3) or tiles.dtype != np.uint8:
            raise InputError(f"expected uint8 tiles of shape (N, {self.tile_hw[0]}, {self.tile_hw[1]}, 3), "
                             f"got {tiles.dtype} {tiles.shape}")
        small = tiles if self._resize is None else self._resize(tiles)
        n, s = small.shape[0], self.spec.size
        out = np.empty((n, 3, s, s), dtype=np.float32)
        for c_out, c_in in enumerate(self._order):
            plane = out[:, c_out]
            np.divide(small[..., c_in], np.float32(255.0), out=plane, dtype=np.float32)
            plane -= self._mean[c_out]
            plane /= self._std[c_out]
        return out
