"""TTT4AS on the INP-Former demo bundle: pixel F1 and image F1 with `--refine none` and `--refine ttt`
through `robis-edge evaluate`, and the refine cost per failing frame against its inference time.

Frames: fresh synthetic sheet frames (1892×1432, half defective) from a seed the demo builder
never used (examples/demo/build_bundle.py SEEDS; tests/test_demo_inp_bundle.py uses 909), written
as a `pairs` dataset. The bundle needs the `features` output (`export inpformer --features`;
the committed demo bundle has it). `--refine ttt` uses the bundle's refine.ttt parameters.

Run: .venv/bin/python benchmarks/bench_ttt.py [--frames 40] [--seed 1717] [--work DIR]
Numbers: docs/BENCHMARKS.md, "TTT4AS refinement".
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "examples" / "demo" / "bundle"


def bundle_with_features(path: Path) -> Path:
    from sdk import Bundle

    b = Bundle.load(path)
    if b.model.features is None:
        raise SystemExit(f"{path} has no features output: export it with `robis-edge export inpformer "
                         "--features`, or add it with examples/demo/add_features.py")
    return path


def write_dataset(folder: Path, n: int, seed: int, hw: tuple[int, int]) -> int:
    import cv2

    from sdk.tools.synthetic import make_scene_frames

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    frames = make_scene_frames("sheet", n, *hw, defect_rate=0.5, seed=seed)
    for f in frames:
        cv2.imwrite(str(folder / f"{f.name}.bmp"), f.image)  # lossless, and not the mask's .png
        cv2.imwrite(str(folder / f"{f.name}.png"), (f.mask > 0).astype(np.uint8) * 255)
    return sum(f.defective for f in frames)


def run_evaluate(bundle: Path, data: Path, out: Path, refine: str, threads: int, reuse: bool) -> dict:
    cmd = [sys.executable, "-m", "edge_runtime.cli", "evaluate", "--bundle", str(bundle),
           "--dataset", str(data), "--layout", "pairs", "--out", str(out), "--backend", "ort-cpu",
           "--threads", str(threads),
           "--refine", refine, "--quiet"]
    if not reuse or not (out / "metrics.json").is_file():
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(x) for x in (out / "per_image.jsonl").read_text().splitlines()]
    return {"metrics": metrics, "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=DEMO)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1717, help="frame seed (not one of the builder's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=ROOT / "demo-out" / "bench-ttt")
    ap.add_argument("--reuse", action="store_true", help="reuse the frames and evaluations in --work")
    args = ap.parse_args()
    import cv2

    from sdk import Bundle

    args.work.mkdir(parents=True, exist_ok=True)
    bundle = bundle_with_features(args.bundle)
    hw = Bundle.load(bundle).frame_hw or (1432, 1892)
    data = args.work / "data" / "sheet"
    if args.reuse and data.is_dir():
        n_bad = sum(1 for p in data.glob("*.png") if cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).any())
    else:
        n_bad = write_dataset(data, args.frames, args.seed, hw)
    print(f"{args.frames} fresh sheet frames ({n_bad} defective), seed {args.seed}, {hw[1]}x{hw[0]}")
    runs = {mode: run_evaluate(bundle, args.work / "data" / "sheet", args.work / f"eval-{mode}", mode,
                               args.threads, args.reuse) for mode in ("none", "ttt")}
    report = {"frames": args.frames, "defective": n_bad, "seed": args.seed}
    for mode, r in runs.items():
        rows = [x for x in r["rows"] if x.get("verdict") in ("pass", "fail")]
        tp, fp, fn = (sum(x[k] for x in rows) for k in ("tp", "fp", "fn"))
        itp = sum(x["defective"] and x["verdict"] == "fail" for x in rows)
        ifp = sum(not x["defective"] and x["verdict"] == "fail" for x in rows)
        ifn = sum(x["defective"] and x["verdict"] == "pass" for x in rows)
        fails = [x["timings_ms"] for x in rows if x["verdict"] == "fail"]
        infer = [t["preprocess"] + t["infer"] for t in fails]
        refine = [t.get("refine", 0.0) for t in fails]
        ratio = [a / b for a, b in zip(refine, infer)]
        overall = r["metrics"]["overall"]["metrics"]
        report[mode] = {
            "pixel_f1": 2 * tp / max(1, 2 * tp + fp + fn), "pixel_precision": tp / max(1, tp + fp),
            "pixel_recall": tp / max(1, tp + fn), "image_f1": 2 * itp / max(1, 2 * itp + ifp + ifn),
            "image": {"tp": itp, "fp": ifp, "fn": ifn}, "failing_frames": len(fails),
            "evaluate_seg_f1": overall["seg_f1"]["value"], "evaluate_class_f1": overall["class_f1"]["value"],
            "infer_ms_p50_failing": float(np.median(infer)) if infer else 0.0,
            "refine_ms_p50_failing": float(np.median(refine)) if refine else 0.0,
            "refine_over_infer_p50": float(np.median(ratio)) if ratio else 0.0,
            "refine_over_infer_max": float(np.max(ratio)) if ratio else 0.0,
        }
        m = report[mode]
        print(f"--refine {mode:<4}: pixel F1 {m['pixel_f1']:.3f} (P {m['pixel_precision']:.3f}, R "
              f"{m['pixel_recall']:.3f}; evaluate SegF1 {m['evaluate_seg_f1']:.3f}), image F1 "
              f"{m['image_f1']:.3f} {m['image']} (ClassF1 {m['evaluate_class_f1']:.3f})")
        print(f"              failing frames {len(fails)}: preprocess+infer p50 "
              f"{m['infer_ms_p50_failing']:.0f} ms, refine p50 {m['refine_ms_p50_failing']:.1f} ms = "
              f"{100 * m['refine_over_infer_p50']:.1f} % (max {100 * m['refine_over_infer_max']:.1f} %)")
    gain = report["ttt"]["pixel_f1"] / max(1e-12, report["none"]["pixel_f1"]) - 1
    print(f"pixel F1 {100 * gain:+.0f} % relative; image F1 {report['none']['image_f1']:.3f} → "
          f"{report['ttt']['image_f1']:.3f}")
    (args.work / "bench_ttt.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
