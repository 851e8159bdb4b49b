"""Synthetic frames as image files → `robis-edge inspect` with a committed demo bundle on the CPU →
one line per frame, a summary against the ground truth, and overlay pictures.

Default: the INP-Former demo bundle (examples/demo/bundle) on brushed-sheet frames of its camera
size (1892×1432); the classical model: ``--bundle examples/demo-bundle --scene surface``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from edge_runtime.cli import main as robis_edge
    from sdk import Bundle
    from sdk.imageio import write_png
    from sdk.tools.synthetic import SCENES, make_scene_frames

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", type=Path, default=ROOT / "examples" / "demo" / "bundle")
    ap.add_argument("--scene", choices=SCENES, default="sheet", help="synthetic frames (sdk.tools.synthetic)")
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    height, width = Bundle.load(args.bundle).frame_hw or (972, 1432)
    frames = make_scene_frames(args.scene, args.frames, height, width, defect_rate=0.5, seed=args.seed)
    for f in frames:
        write_png(args.out / "frames" / f"{f.name}.png", f.image)
        write_png(args.out / "ground_truth" / f"{f.name}.png", f.mask)
    print(f"{len(frames)} synthetic {frames[0].image.shape[1]}x{frames[0].image.shape[0]} frames "
          f"({sum(f.defective for f in frames)} with defects) in {args.out / 'frames'}")
    t0 = time.perf_counter()
    rc = robis_edge(["inspect", "--bundle", str(args.bundle), "--images", str(args.out / "frames"),
                     "--out", str(args.out / "inspect"), "--backend", "ort-cpu"])
    wall = time.perf_counter() - t0
    if rc != 0:
        return rc
    results = {json.loads(line)["file"]: json.loads(line)
               for line in (args.out / "inspect" / "results.jsonl").read_text().splitlines()}
    truth = {f"{f.name}.png": f for f in frames}
    print(f"\n{'frame':<16}{'truth':<8}{'verdict':<9}{'regions':>8}{'score':>8}{'ms':>9}")
    tp = fp = fn = tn = 0
    latencies = []
    for name, r in sorted(results.items()):
        defective = truth[name].defective
        fail = r["verdict"] == "fail"
        tp, fp = tp + (fail and defective), fp + (fail and not defective)
        fn, tn = fn + (not fail and defective), tn + (not fail and not defective)
        latencies.append(r["timings_ms"]["total"])
        print(f"{name:<16}{'defect' if defective else 'good':<8}{r['verdict']:<9}{len(r['regions']):>8}"
              f"{r['score']:>8.1f}{r['timings_ms']['total']:>9.1f}")
    lat = np.array(latencies)
    print(f"\nframes {len(results)}: detected {tp}/{tp + fn} defective (recall "
          f"{tp / max(1, tp + fn):.2f}), false alarms {fp}/{fp + tn} good; "
          f"latency p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} ms; "
          f"{len(results) / wall:.1f} frames/s overall")
    print(f"overlays: {args.out / 'inspect' / 'overlays'}  masks: {args.out / 'inspect' / 'masks'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
