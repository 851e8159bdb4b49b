"""Benchmark: SAM box refinement on CPU, ONNX Runtime (sdk.refine.SamRefiner) vs the
segment-anything torch model, same image, same boxes, same run.

The torch side follows RoBiS' SAM_Finer on SamPredictor's steps: Pillow resize to longest side
1024, ``Sam.preprocess``, ``image_encoder`` once, then one ``predict`` per box (prompt encoder,
mask decoder, ``postprocess_masks``, ``> 0``), union. The ONNX side is ``SamRefiner``: one
encoder run, one batched decoder run for all boxes. Both start from the same frame already
brought to the coarse-mask resolution (the zoom is timed separately, it is the same code for
both), and both end with the same hole filling (not timed). Repeats are interleaved; p50 is
reported per stage, with the ORT/torch ratio and the agreement of the two masks.

Without ``--checkpoint`` the model is SAM ``--model-type`` (ViT-B) with random weights
(export.sam.model.random_sam) exported to a temporary directory first (≈ 1 min for ViT-B).

    python benchmarks/bench_refine.py                      # ViT-B, random weights
    python benchmarks/bench_refine.py --checkpoint sam_vit_b_01ec64.pth --repeat 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_scene(frame_hw: tuple[int, int], mask_hw: tuple[int, int], seed: int):
    """A camera-like frame and a coarse mask with 4 regions (top-3 are prompted)."""
    rng = np.random.default_rng(seed)
    h, w = frame_hw
    low = rng.uniform(40, 215, (8, 8, 3)).astype(np.float32)
    frame = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 6, (h, w, 3))
    frame = np.clip(frame, 0, 255).astype(np.uint8)
    mh, mw = mask_hw
    coarse = np.zeros(mask_hw, np.uint8)
    cv2.circle(coarse, (mw // 4, mh // 3), max(3, mh // 12), 255, -1)
    cv2.rectangle(coarse, (mw // 2, mh // 2), (mw // 2 + mw // 6, mh // 2 + mh // 8), 255, -1)
    cv2.ellipse(coarse, (mw - mw // 6, mh // 5), (mw // 14, mh // 20), 30, 0, 360, 255, -1)
    coarse[mh - 3:mh, 2:5] = 255
    return frame, coarse


def torch_refine(sam, small: np.ndarray, boxes: np.ndarray, multimask: bool, torch, timings: dict):
    """SamPredictor.set_image + one SamPredictor.predict(box=...) per box, timed by stage."""
    from PIL import Image

    t0 = time.perf_counter()
    h, w = small.shape[:2]
    scale = 1024 * 1.0 / max(h, w)  # ResizeLongestSide.get_preprocess_shape
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    resized = np.array(Image.fromarray(small).resize((nw, nh), Image.BILINEAR))  # apply_image
    with torch.no_grad():
        x = sam.preprocess(torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None])
        t1 = time.perf_counter()
        features = sam.image_encoder(x)
        t2 = time.perf_counter()
        union = np.zeros((h, w), bool)
        dec_ms = post_ms = 0.0
        for box in boxes:
            ta = time.perf_counter()
            b = box.reshape(-1, 2, 2).astype(float)  # ResizeLongestSide.apply_boxes
            b[..., 0] = b[..., 0] * (nw / w)
            b[..., 1] = b[..., 1] * (nh / h)
            bt = torch.as_tensor(b.reshape(-1, 4), dtype=torch.float)[None]
            sparse, dense = sam.prompt_encoder(points=None, boxes=bt, masks=None)
            low, _ = sam.mask_decoder(image_embeddings=features, image_pe=sam.prompt_encoder.get_dense_pe(),
                                      sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                      multimask_output=multimask)
            tb = time.perf_counter()
            m = sam.postprocess_masks(low, (nh, nw), (h, w)) > sam.mask_threshold
            union |= m[0].numpy().any(0)
            tc = time.perf_counter()
            dec_ms += (tb - ta) * 1000
            post_ms += (tc - tb) * 1000
    timings.setdefault("pre", []).append((t1 - t0) * 1000)
    timings.setdefault("encoder", []).append((t2 - t1) * 1000)
    timings.setdefault("decoder", []).append(dec_ms)
    timings.setdefault("post", []).append(post_ms)
    return union.astype(np.uint8) * 255


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="a real sam_vit_*.pth (default: random weights)")
    ap.add_argument("--model-type", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    ap.add_argument("--onnx-dir", type=Path, help="reuse/keep sam_encoder.onnx + sam_decoder.onnx here")
    ap.add_argument("--mode", default="single", choices=["single", "multi_or"])
    ap.add_argument("--frame", default="2048x2448", help="full frame HxW (default 2048x2448)")
    ap.add_argument("--mask", default="512x612", help="coarse mask HxW (default 512x612: frame/4)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats, interleaved (default 3)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads for both")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    frame_hw = tuple(int(v) for v in args.frame.lower().split("x"))
    mask_hw = tuple(int(v) for v in args.mask.lower().split("x"))

    import onnxruntime as ort
    import torch

    from export.sam.model import load_sam, random_sam
    from export.sam.onnx_export import export_decoder, export_encoder
    from sdk.refine import SamRefiner
    from sdk.refine.ops import fill_holes, topn_boxes, zoom_linear_uint8

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    if args.checkpoint:
        sam, arch = load_sam(args.checkpoint, args.model_type)
        source = f"{args.checkpoint.name} ({arch.model_type})"
    else:
        sam = random_sam(args.model_type, seed=0)
        source = f"{args.model_type}, random weights (export.sam.model.random_sam seed 0)"
    tmp = None
    out_dir = args.onnx_dir
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_refine_")
        out_dir = Path(tmp.name)
    enc_path, dec_path = out_dir / "sam_encoder.onnx", out_dir / "sam_decoder.onnx"
    export_report = None
    if not (enc_path.exists() and dec_path.exists()):
        t0 = time.perf_counter()
        enc_r = export_encoder(sam, enc_path)
        dec_r = export_decoder(sam, dec_path)
        export_report = {"seconds": round(time.perf_counter() - t0, 1),
                         "encoder_max_abs_diff": enc_r["max_abs_diff"],
                         "decoder_max_abs_diff": dec_r["max_abs_diff"],
                         "encoder_ops": enc_r["ops"], "decoder_ops": dec_r["ops"],
                         "encoder_mib": round(enc_r["file_size_bytes"] / 2**20, 1)}
        print(f"exported in {export_report['seconds']} s: encoder max|ORT-torch| "
              f"{enc_r['max_abs_diff']:.2e}, decoder {dec_r['max_abs_diff']:.2e}")

    refiner = SamRefiner(enc_path, dec_path, mode=args.mode, top_n=3, threads=args.threads)
    frame, coarse = make_scene(frame_hw, mask_hw, 0)
    boxes = topn_boxes(coarse, 3)
    t0 = time.perf_counter()
    small = zoom_linear_uint8(frame, mask_hw)  # same step for both sides
    zoom_ms = (time.perf_counter() - t0) * 1000
    small_bgr_as_rgb = np.ascontiguousarray(small)  # the frame is "BGR": fed as it is (parity)

    ort_t: dict[str, list[float]] = {}
    torch_t: dict[str, list[float]] = {}
    agree = []
    multimask = args.mode == "multi_or"
    refiner.refine_verbose(frame, coarse, color="bgr")  # warm-up (ORT arena, first-run costs)
    for _ in range(args.repeat):
        out = refiner.refine_verbose(frame, coarse, color="bgr")
        for k, v in out.timings_ms.items():
            ort_t.setdefault(k.removeprefix("sam_"), []).append(v)
        ref = torch_refine(sam, small_bgr_as_rgb, boxes, multimask, torch, torch_t)
        agree.append(float((fill_holes(ref) == out.mask).mean()))

    def p50(d, k):
        return statistics.median(d[k]) if d.get(k) else float("nan")

    stages = ["pre", "encoder", "decoder", "post"]
    rows = []
    print(f"\nSAM refine, {source}; frame {frame_hw[0]}x{frame_hw[1]}, mask {mask_hw[0]}x{mask_hw[1]} "
          f"-> SAM {out.sam_input_hw[0]}x{out.sam_input_hw[1]}, {len(boxes)} boxes, mode {args.mode}, "
          f"{args.threads} threads, p50 of {args.repeat}")
    print(f"{'stage':<10}{'ORT ms':>12}{'torch ms':>12}{'ORT/torch':>11}")
    for s in stages:
        o, t = p50(ort_t, s), p50(torch_t, s)
        rows.append({"stage": s, "ort_ms": round(o, 2), "torch_ms": round(t, 2), "ratio": round(o / t, 3)})
        print(f"{s:<10}{o:>12.1f}{t:>12.1f}{o / t:>11.2f}")
    o_tot, t_tot = sum(p50(ort_t, s) for s in stages), sum(p50(torch_t, s) for s in stages)
    print(f"{'total':<10}{o_tot:>12.1f}{t_tot:>12.1f}{o_tot / t_tot:>11.2f}")
    print(f"(ORT 'pre' includes the zoom to mask size, {zoom_ms:.1f} ms here; torch 'pre' starts after it; "
          f"torch 'decoder' is {len(boxes)} predict calls)")
    print(f"mask agreement ORT vs torch: min {min(agree):.6f}")
    result = {"source": source, "frame_hw": frame_hw, "mask_hw": mask_hw, "sam_input_hw": out.sam_input_hw,
              "boxes": len(boxes), "mode": args.mode, "threads": args.threads, "repeat": args.repeat,
              "stages": rows, "total_ort_ms": round(o_tot, 1), "total_torch_ms": round(t_tot, 1),
              "zoom_ms": round(zoom_ms, 2), "mask_agreement_min": min(agree), "export": export_report,
              "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__,
                           "python": platform.python_version()},
              "machine": f"{platform.machine()}, {os.cpu_count()} cpus"}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
