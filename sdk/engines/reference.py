"""Reference tiles stored in a bundle (``bundle.json`` ``reference``; docs/gpu.md).

A few real tiles, cut from the images a bundle was calibrated (or exported) with, kept as
lossless PNG: the parity gate of ``robis-edge build`` runs them through ONNX Runtime fp32
and through the new engine and compares maps and verdicts. Tiles are window-sized frames (one tile
each), so the gate runs the whole pipeline on them; bundles without tiling keep whole frames
resized to the model's input size.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import BundleError, InputError
from ..geometry import TilingPlan
from ..imageio import read_image, write_png

REFERENCE_DIR = "reference"
DEFAULT_TILES = 4


def choose_tiles(scores: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` tiles: the ⌈n/2⌉ highest-scoring (likely defects: the gate must see tiles
    that fail) and the rest spread evenly over the remaining ranks down to the lowest."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    n = min(max(n, 0), len(order))
    top = (n + 1) // 2
    rest = order[top:]
    picks = list(order[:top])
    if n - top >= len(rest):
        picks += list(rest)
    elif n - top > 0:
        at = np.round(np.linspace(0, len(rest) - 1, n - top + 1)[1:]).astype(int)  # ends at the lowest
        picks += list(rest[np.unique(at)])
    return [int(i) for i in picks]


def cut_tiles(frame: np.ndarray, plan: TilingPlan, size: int) -> np.ndarray:
    """The plan's tiles of a prepared frame (gray H×W or RGB H×W×3, uint8); an untiled plan gives
    the whole frame resized to ``size`` (what the model sees, before its own resize)."""
    if plan.window is None:
        return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)[None]
    return plan.extract(frame)


def write_reference_tiles(bundle, tiles: list[np.ndarray], source: str) -> list[str]:
    """Replace the bundle's reference tiles (files and ``reference`` section; not saved)."""
    if not tiles:
        raise InputError("no reference tiles to write")
    old = bundle.reference
    for rel in old.tiles if old is not None else ():
        bundle.drop_file(rel, delete=True)
    rels = []
    for i, t in enumerate(tiles):
        rel = f"{REFERENCE_DIR}/tile_{i:02d}.png"
        write_png(bundle.root / rel, np.ascontiguousarray(t if t.ndim == 2 else t[:, :, ::-1]))  # PNG is BGR
        bundle.add_file(rel)
        rels.append(rel)
    bundle.set_section("reference", {"tiles": rels, "color": "gray" if tiles[0].ndim == 2 else "rgb",
                                     "source": source})
    return rels


def load_reference_tiles(bundle) -> tuple[list[np.ndarray], str]:
    """The bundle's reference tiles and their colour ("gray" or "rgb")."""
    ref = bundle.reference
    if ref is None or not ref.tiles:
        raise BundleError(f"{bundle.root}: no reference tiles (run `robis-edge calibrate` on a few images, "
                          "or pass --reference-images)")
    files = bundle.files
    out = []
    for rel in ref.tiles:
        if rel not in files:
            raise BundleError(f"{bundle.root}: reference tile {rel!r} is not listed under 'files'")
        img, color = read_image(bundle.resolve(rel))
        out.append(img if color == "gray" else img[:, :, ::-1].copy())  # read_image gives BGR
    return out, ref.color


def store_reference_from_folder(bundle, folder: str | Path, n: int = DEFAULT_TILES) -> list[str]:
    """Cut every tile of the images under ``folder``, keep ``n`` chosen by their score with the
    bundle's model on ONNX Runtime CPU (``choose_tiles``), and write them into the bundle."""
    from ..backends import create_backend
    from ..imageio import IMAGE_EXTS, find_files
    from ..preprocess import prepare_frame, tile_preprocessor

    paths = find_files(folder, IMAGE_EXTS)
    if not paths:
        raise InputError(f"no images ({', '.join(IMAGE_EXTS)}) under {folder}")
    spec = bundle.preprocess
    window, overlap = bundle.tiling
    pool = []
    for p in paths:
        img, color = read_image(p)
        frame = prepare_frame(img, color)
        pool.extend(cut_tiles(frame, TilingPlan(frame.shape[0], frame.shape[1], window, overlap), spec.size))
    model = create_backend(str(bundle.model_path), input_size=spec.size, map_size=bundle.map_size,
                           backend="ort-cpu")
    pre = tile_preprocessor(spec, pool[0].shape[:2])  # every tile has the window's (or S×S) size
    scores = np.array([float(model.run(pre(t[None])).max()) for t in pool])
    return write_reference_tiles(bundle, [pool[i] for i in choose_tiles(scores, n)], f"images under {folder}")


def sam_reference_inputs(tiles: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """SAM encoder inputs of the reference tiles (SAM's own resize, normalisation and padding)."""
    from ..refine.ops import sam_input_size, sam_normalize_pad, sam_resize

    out = []
    for t in tiles:
        rgb = np.repeat(t[:, :, None], 3, axis=2) if t.ndim == 2 else t
        hw = sam_input_size(*rgb.shape[:2])
        out.append({"image": sam_normalize_pad(sam_resize(rgb, hw))})
    return out


def sam_decoder_inputs(embeddings: list[np.ndarray], n_boxes: int) -> list[dict[str, np.ndarray]]:
    """Decoder inputs: each reference embedding with ``n_boxes`` nested boxes around the centre."""
    c, feeds = 512.0, []
    half = np.linspace(64, 480, n_boxes, dtype=np.float32)
    boxes = np.stack([c - half, c - half * 0.8, c + half, c + half * 0.8], axis=1).astype(np.float32)
    for e in embeddings:
        feeds.append({"embeddings": e, "boxes": boxes})
    return feeds
