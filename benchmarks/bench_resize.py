"""Benchmark: Pillow's BILINEAR resize vs the SDK's exact numpy re-implementation, in one run.

Times, single-threaded and interleaved over R repeats, the resize of N RGB tiles (1024x1024 ->
518x518 by default) by ``sdk.resize.BilinearAntialiasResizer`` (one batched call), by Pillow
(``Image.fromarray(tile).resize(..., BILINEAR)``, with and without the array conversions) and,
for reference only, by ``cv2.resize`` INTER_AREA / INTER_LINEAR, which are *not* Pillow's
filter. Prints per-tile times and the max |difference| of every output from Pillow's; exits
with status 1 if the SDK's output is not identical to Pillow's.

    python benchmarks/bench_resize.py
    python benchmarks/bench_resize.py --tiles 9 --repeat 7 --in-size 1024 --out-size 518
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from PIL import __version__ as PIL_VERSION  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sdk.resize import BilinearAntialiasResizer  # noqa: E402


def make_tiles(n: int, size: int, seed: int) -> np.ndarray:
    """Camera-like RGB tiles: smooth shading, sharp-edged blobs, texture and sensor noise."""
    rng = np.random.default_rng(seed)
    tiles = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        low = cv2.resize(rng.uniform(40, 215, (8, 8, 3)).astype(np.float32), (size, size),
                         interpolation=cv2.INTER_CUBIC)
        img = low + rng.normal(0, 6, (size, size, 3)).astype(np.float32)
        for _ in range(12):
            cx, cy, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(size // 40, size // 8))]
            cv2.circle(img, (cx, cy), r, rng.uniform(0, 255, 3).tolist(), -1)
        img[::2, :, :] += 8  # a fine stripe texture: the antialiasing filter matters here
        tiles[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return tiles


def pil_resize(tiles: np.ndarray, out: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(t).resize((out, out), Image.BILINEAR)) for t in tiles])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=9, help="tiles per batch (default 9)")
    ap.add_argument("--repeat", type=int, default=7, help="timed repeats, interleaved (default 7)")
    ap.add_argument("--in-size", type=int, default=1024, help="tile side (default 1024)")
    ap.add_argument("--out-size", type=int, default=518, help="model input side (default 518)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.tiles < 1 or args.repeat < 1:
        ap.error("--tiles and --repeat must be >= 1")

    cv2.setNumThreads(1)
    n, s_in, s_out = args.tiles, args.in_size, args.out_size
    tiles = make_tiles(n, s_in, args.seed)
    pil_images = [Image.fromarray(t) for t in tiles]
    resizer = BilinearAntialiasResizer((s_in, s_in), (s_out, s_out))

    methods = {
        "sdk.resize (exact)": lambda: resizer(tiles),
        "Pillow resize only": lambda: [im.resize((s_out, s_out), Image.BILINEAR) for im in pil_images],
        "Pillow + array conv.": lambda: pil_resize(tiles, s_out),
        "cv2 INTER_AREA": lambda: [cv2.resize(t, (s_out, s_out), interpolation=cv2.INTER_AREA)
                                   for t in tiles],
        "cv2 INTER_LINEAR": lambda: [cv2.resize(t, (s_out, s_out), interpolation=cv2.INTER_LINEAR)
                                     for t in tiles],
    }
    reference = pil_resize(tiles, s_out)
    outputs = {
        "sdk.resize (exact)": resizer(tiles),
        "Pillow resize only": reference,
        "Pillow + array conv.": reference,
        "cv2 INTER_AREA": np.stack(methods["cv2 INTER_AREA"]()),
        "cv2 INTER_LINEAR": np.stack(methods["cv2 INTER_LINEAR"]()),
    }

    times: dict[str, list[float]] = {name: [] for name in methods}
    for fn in methods.values():  # warm-up
        fn()
    for _ in range(args.repeat):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / n * 1e3)

    print(f"RGB {s_in}x{s_in} -> {s_out}x{s_out}, {n} tiles x {args.repeat} repeats, single thread")
    print(f"Python {platform.python_version()}, numpy {np.__version__}, Pillow {PIL_VERSION}, "
          f"OpenCV {cv2.__version__}, {platform.machine()}")
    print()
    print(f"{'method':<22} {'ms/tile (min)':>14} {'ms/tile (median)':>17} {'max|diff| vs Pillow':>20}")
    for name in methods:
        diff = int(np.abs(outputs[name].astype(np.int16) - reference.astype(np.int16)).max())
        print(f"{name:<22} {min(times[name]):>14.3f} {statistics.median(times[name]):>17.3f} {diff:>20d}")
    ours, pil = min(times["sdk.resize (exact)"]), min(times["Pillow resize only"])
    print()
    print(f"Pillow resize only / sdk.resize = {pil / ours:.2f}x "
          f"(with Pillow's array conversions: {min(times['Pillow + array conv.']) / ours:.2f}x)")
    exact = np.array_equal(outputs["sdk.resize (exact)"], reference)
    mismatch = np.count_nonzero(outputs["sdk.resize (exact)"] != reference)
    print("sdk.resize is bit-identical to Pillow" if exact
          else f"ERROR: sdk.resize differs from Pillow in {mismatch} values")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
