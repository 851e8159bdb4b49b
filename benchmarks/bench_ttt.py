"""TTT4AS on the INP-Former demo bundle: pixel F1 and image F1 with `--refine none` and `--refine ttt`
through `robis-edge evaluate`, and the refine cost per failing frame against its inference time.

Frames: fresh synthetic sheet frames (1892×1432, half defective) from a seed the demo builder
never used (examples/demo/build_bundle.py SEEDS; tests/test_demo_inp_bundle.py uses 909), written
as a `pairs` dataset. When the bundle has no `features` output (a bundle built before
`export inpformer --features`), a copy is made in the work folder whose ONNX graph also outputs
the tensor `--features` exports: the fused encoder tokens (the mean over the target layers, the
first ReduceMean over the stacked layers), transposed and reshaped to N×C×g×g. The map output and
every other node are unchanged, so `--refine none` reproduces the committed bundle exactly.

Run: .venv/bin/python benchmarks/bench_ttt.py [--frames 40] [--seed 1717] [--work DIR]
Numbers: docs/BENCHMARKS.md, "TTT4AS refinement".
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "examples" / "demo" / "bundle"


def with_features(src: Path, dest: Path) -> Path:
    """A copy of bundle ``src`` whose model also outputs ``features`` (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper

    from sdk import Bundle
    from sdk.bundle import TttRefineSpec

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest)
    b = Bundle.load(dest)
    if b.model.features is not None:
        return dest
    arch = json.loads((dest / "arch.json").read_text())
    c, g = arch["embed_dim"], arch["img_size"] // arch["patch_size"]
    model = onnx.load(str(b.model_path))
    prod = {o: n for n in model.graph.node for o in n.output}
    fused = next(n for n in model.graph.node if n.op_type == "ReduceMean"
                 and prod[n.input[0]].op_type == "Concat"
                 and len(prod[n.input[0]].input) == len(arch["target_layers"]))
    model.graph.initializer.append(helper.make_tensor("bench_feat_shape", TensorProto.INT64, [4], [-1, c, g, g]))
    model.graph.node.extend([
        helper.make_node("Transpose", [fused.output[0]], ["bench_feat_t"], perm=[0, 2, 1]),
        helper.make_node("Reshape", ["bench_feat_t", "bench_feat_shape"], ["features"])])
    model.graph.output.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", c, g, g]))
    onnx.checker.check_model(model)
    onnx.save(model, str(b.model_path))
    b.add_file(b.model.file)
    b.set_model_fields(features="features")
    b.set_ttt({**asdict(TttRefineSpec()), "enabled": False})
    b.update_provenance(features_added_by="benchmarks/bench_ttt.py (the fused encoder tokens of the graph)")
    b.save()
    return dest


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


def run_evaluate(bundle: Path, data: Path, out: Path, refine: str, threads: int) -> dict:
    cmd = [sys.executable, "-m", "edge_runtime.cli", "evaluate", "--bundle", str(bundle), "--dataset", str(data),
           "--layout", "pairs", "--out", str(out), "--backend", "ort-cpu", "--threads", str(threads),
           "--refine", refine, "--quiet"]
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
    args = ap.parse_args()
    from sdk import Bundle

    args.work.mkdir(parents=True, exist_ok=True)
    bundle = with_features(args.bundle, args.work / "bundle")
    hw = Bundle.load(bundle).frame_hw or (1432, 1892)
    n_bad = write_dataset(args.work / "data" / "sheet", args.frames, args.seed, hw)
    print(f"{args.frames} fresh sheet frames ({n_bad} defective), seed {args.seed}, {hw[1]}x{hw[0]}")
    runs = {mode: run_evaluate(bundle, args.work / "data" / "sheet", args.work / f"eval-{mode}", mode,
                               args.threads) for mode in ("none", "ttt")}
    report = {"frames": args.frames, "defective": n_bad, "seed": args.seed}
    for mode, r in runs.items():
        o = r["metrics"]["overall"]
        seg, cls = o["seg_f1"], o["class_f1"]
        fails = [x for x in r["rows"] if x.get("verdict") == "fail"]
        infer = [x["timings_ms"]["preprocess"] + x["timings_ms"]["infer"] for x in r["rows"]]
        refine = [x["timings_ms"].get("refine", 0.0) for x in fails]
        ratio = [x["timings_ms"].get("refine", 0.0) / (x["timings_ms"]["preprocess"] + x["timings_ms"]["infer"])
                 for x in fails]
        report[mode] = {
            "pixel_f1": seg["value"], "pixel_precision": seg["tp"] / max(1, seg["tp"] + seg["fp"]),
            "pixel_recall": seg["tp"] / max(1, seg["tp"] + seg["fn"]), "image_f1": cls["value"],
            "image": {k: cls[k] for k in ("tp", "fp", "fn", "tn")}, "failing_frames": len(fails),
            "infer_ms_p50": float(np.median(infer)),
            "refine_ms_p50_failing": float(np.median(refine)) if refine else 0.0,
            "refine_over_infer_p50": float(np.median(ratio)) if ratio else 0.0,
            "refine_over_infer_max": float(np.max(ratio)) if ratio else 0.0,
        }
        m = report[mode]
        print(f"--refine {mode:<4}: pixel F1 {m['pixel_f1']:.3f} (P {m['pixel_precision']:.3f}, R "
              f"{m['pixel_recall']:.3f}), image F1 {m['image_f1']:.3f} {m['image']}; preprocess+infer p50 "
              f"{m['infer_ms_p50']:.0f} ms; refine per failing frame p50 {m['refine_ms_p50_failing']:.1f} ms "
              f"= {100 * m['refine_over_infer_p50']:.1f} % of inference (max {100 * m['refine_over_infer_max']:.1f} %)")
    gain = report["ttt"]["pixel_f1"] / max(1e-12, report["none"]["pixel_f1"]) - 1
    print(f"pixel F1 {100 * gain:+.0f} % relative; image F1 {report['none']['image_f1']:.3f} → "
          f"{report['ttt']['image_f1']:.3f}")
    (args.work / "bench_ttt.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
