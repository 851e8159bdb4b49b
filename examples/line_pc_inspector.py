"""A line-PC program that embeds the SDK's ``Inspector`` in its own acquisition loop (no service).

This is the smallest useful integration: the program owns the camera (here: synthetic parts from
``sdk.tools.synthetic`` or the image files of a folder, standing in for a vendor camera SDK), and calls
``Inspector.inspect`` on each frame in the same process. One line per frame::

    seq=3 frame=frame_003 verdict=fail score=212.4 regions=2 ms=41.7
    seq=4 frame=broken.png verdict=error error=input: broken.png: not a readable image ...

A frame that cannot be inspected (an unreadable file, a frame of the wrong dtype from a badly
configured camera...) raises ``sdk.InputError``: the loop logs it as an ``error`` line and goes on
with the next frame. Anything else (a broken bundle, a bug) stops the program.

    python examples/line_pc_inspector.py                          # 8 synthetic frames, demo bundle
    python examples/line_pc_inspector.py --folder path/to/images  # every image file once
    python examples/line_pc_inspector.py --count 20 --bad-every 5 # every 5th frame is unusable
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def acquire_synthetic(count: int, width: int, height: int, seed: int, bad_every: int = 0
                      ) -> Iterator[tuple[str, np.ndarray]]:
    """Synthetic parts, half of them with defects. With ``bad_every`` N, every Nth frame is a
    float32 image, as a misconfigured camera might deliver (the Inspector refuses it)."""
    from sdk.tools.synthetic import make_frames

    for i, f in enumerate(make_frames(count, height, width, defect_rate=0.5, seed=seed)):
        if bad_every and (i + 1) % bad_every == 0:
            yield f.name + "-float", f.image.astype(np.float32)
        else:
            yield f.name, f.image


def acquire_folder(folder: Path) -> Iterator[tuple[str, np.ndarray | Path]]:
    """Every image file of a folder, sorted by name. Files are read inside the loop's ``try`` (an
    unreadable file is one bad frame, not the end of the program), so this yields paths."""
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
            yield p.name, p


def run(inspector, frames, *, out=sys.stdout, fps: float = 0.0) -> dict:
    """The acquisition loop: inspect each frame, print its verdict, never stop on a bad frame."""
    from sdk import InputError
    from sdk.imageio import read_image

    counts = {"pass": 0, "fail": 0, "error": 0}
    period = 1.0 / fps if fps > 0 else 0.0
    t_next = time.monotonic()
    for seq, (name, frame) in enumerate(frames):
        if period:  # pace the loop as a triggered camera would
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))
        t0 = time.perf_counter()
        try:
            if isinstance(frame, Path):
                image, color = read_image(frame)
            else:
                image, color = frame, None
            res = inspector.inspect(image, color)
        except InputError as exc:
            counts["error"] += 1
            print(f"seq={seq} frame={name} verdict=error error=input: {exc}", file=out, flush=True)
            continue
        ms = (time.perf_counter() - t0) * 1000.0
        counts[res.verdict] += 1
        print(f"seq={seq} frame={name} verdict={res.verdict} score={res.score:.1f} "
              f"regions={len(res.regions)} ms={ms:.1f}", file=out, flush=True)
    return counts


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from sdk import Inspector

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=ROOT / "examples" / "demo-bundle")
    ap.add_argument("--folder", type=Path, help="image files to inspect (default: synthetic frames)")
    ap.add_argument("--count", type=int, default=8, help="synthetic frames (default 8)")
    ap.add_argument("--width", type=int, default=1432)
    ap.add_argument("--height", type=int, default=972)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--bad-every", type=int, default=0, help="synthetic: every Nth frame is unusable")
    ap.add_argument("--fps", type=float, default=0.0, help="acquisition rate (default 0: free-running)")
    ap.add_argument("--backend", default="auto", help="auto, onnxruntime, ort-cpu, ort-cuda, ort-tensorrt")
    ap.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    args = ap.parse_args(argv)

    inspector = Inspector(args.bundle, backend=args.backend, threads=args.threads)
    if args.folder is not None:
        if not args.folder.is_dir():
            print(f"line_pc_inspector: {args.folder} is not a folder", file=sys.stderr)
            return 2
        frames = acquire_folder(args.folder)
    else:
        frames = acquire_synthetic(args.count, args.width, args.height, args.seed, args.bad_every)
    t0 = time.perf_counter()
    counts = run(inspector, frames, fps=args.fps)
    n = sum(counts.values())
    wall = time.perf_counter() - t0
    print("summary " + json.dumps({"frames": n, **counts, "seconds": round(wall, 3),
                                   "frames_per_s": round(n / wall, 2) if wall > 0 else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
