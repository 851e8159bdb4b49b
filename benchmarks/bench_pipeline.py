"""Per-stage latency of the Inspector's own work at RoBiS geometry, on the CPU.

Builds a bundle around a trivial ONNX model (block mean of one channel, 518 → 256) so that
"infer" is negligible and the numbers show the SDK's overhead per frame: conversion, tiling,
Pillow-exact resize, normalisation, merge, binarisation, regions.

    python benchmarks/bench_pipeline.py --frame-size 2448x2048 --frames 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    from conftest import build_blockmean_model

    from sdk import Inspector, create_bundle
    from sdk.tools.synthetic import make_frames

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frame-size", default="2448x2048", help="WxH")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="OpenCV and ONNX Runtime threads")
    args = ap.parse_args()
    w, h = (int(v) for v in args.frame_size.lower().split("x"))
    cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        build_blockmean_model(Path(tmp) / "m.onnx", 518, 259)  # 2×2 block mean: 518 → 259
        bundle = create_bundle(tmp, "bench", "m.onnx", 259)
        frames = [f.image for f in make_frames(args.frames + 2, h, w, seed=3)]
        insp = Inspector(bundle, backend="ort-cpu", scope="rolling", threads=args.threads)
        bundle.set_calibration(insp.calibrate(frames[:2], ["gray", "gray"]))
        insp = Inspector(bundle, backend="ort-cpu", threads=args.threads)
        insp.inspect(frames[0])  # warm-up
        rows = [insp.inspect(f, "gray").timings_ms for f in frames[2:]]
    plan = insp.plan(h, w)
    print(f"frame {w}x{h} gray uint8, {plan.num_tiles} tiles of {plan.tile_hw[0]} → 518, "
          f"{args.frames} frames, {args.threads} thread(s)")
    print(f"{'stage':<12}{'p50 ms':>10}{'p99 ms':>10}")
    for k in rows[0]:
        v = np.array([r[k] for r in rows])
        print(f"{k:<12}{np.percentile(v, 50):>10.2f}{np.percentile(v, 99):>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
