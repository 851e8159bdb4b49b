"""Build the INP-Former demo bundle (examples/demo/bundle) end to end on a CPU and measure it.

1. frames: synthetic 1892×1432 brushed metal sheets (sdk/tools/synthetic/product.py, style "sheet") with
   scratches, spots and missing material (holes through the sheet); defect-free frames for
   training, calibration and verdict tuning, and a fresh mixed set (with ground-truth masks) for the
   evaluation; 4×3 tiles of 512 (overlap 0.1) cover a frame exactly;
2. fit: a small INP-Former trained as RoBiS does (export/inpformer/training/) on the defect-free
   training frames; NO pretrained encoder is available offline, so its frozen encoder is a seeded
   random encoder: by default the non-linear random "demo encoder" (``--encoder demo``,
   ``demo_encoder_state_dict``: centred patch embedding plus a constant token offset, saved as a
   DINOv2-layout .pth and passed to ``fit`` as ``encoder_weights``, the path real weights take), or
   DINOv2's own random initialisation (``--encoder dinov2-random``; the fit prints a warning);
3. export: ONNX + bundle.json (export.inpformer.bundle_export: ONNX Runtime checked against torch,
   provenance with the checkpoint sha256 and the torch/onnx versions), with the ``features``
   output of ``export inpformer --features`` for the TTT refiner;
4. calibrate: ``Inspector.calibrate`` on defect-free frames (the issue asks for good-only frames;
   docs/upstream-robis.md ("Calibration statistics") warns that the MEBin range then collapses,
   so the verdict is tuned on further held-out defect-free frames: ``min_area_px`` above every
   region they produce);
5. evaluate: ``robis-edge inspect`` on the fresh frames; image-level recall and false-alarm rate,
   pixel F1 (full resolution), per-defect recall by kind.

Run (from the repository root; about 3 min on 2 idle CPU cores, of which ~1.5 min training):
    .venv/bin/python examples/demo/build_bundle.py
Needs the export extra (torch, onnx). ``make demo`` itself needs no torch: the bundle is committed.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# The demo model: small enough to train in ≤ 15 min on 2 CPU cores and to stay under 10 MB as ONNX.
DEMO_ARCH = dict(embed_dim=96, depth=8, num_heads=4, img_size=224, patch_size=14, num_register_tokens=4,
                 inp_num=6, target_layers=[2, 3, 4, 5, 6, 7], fuse_layer_encoder=[[0, 1, 2], [3, 4, 5]],
                 fuse_layer_decoder=[[0, 1, 2], [3, 4, 5]], decoder_depth=6, mlp_ratio=4.0, map_size=128,
                 gaussian_kernel=5, gaussian_sigma=4.0)
WINDOW, OVERLAP = 512, 0.1
# refine.ttt of the demo bundle (docs/BENCHMARKS.md, "TTT4AS refinement"): chosen on frames of seed
# 4242, not enabled by default (`--refine ttt` runs it).
DEMO_TTT = dict(enabled=False, percentile=99.7, hard_radius=0, nominal_stride=16, svm_c=1.0,
                class_weight="balanced", max_iter=1000, normalize="l2", within_coarse=True,
                verdict_from="coarse")
# 512 + 3·460 by 512 + 2·460: 4×3 tiles of 512 (step 460) cover the frame exactly, no padding.
FRAME_W, FRAME_H = 1892, 1432
# Frame seeds. "validation" (404) was only used to choose the encoder and the training length
# (docs/BENCHMARKS.md, "Third round"); the reported numbers come from "eval" (505).
SEEDS = {"train": 101, "calibration": 202, "tuning": 303, "validation": 404, "eval": 505}


def demo_encoder_state_dict(arch, seed: int = 0, *, ls_attn: float = 0.1, ls_mlp: float = 1.0,
                            fc1_gain: float = 1.0, fc1_bias: float = 0.5, fc2_gain: float = 1.0,
                            qk_std: float = 0.02, patch_gain: float = 1.0, pos_gain: float = 1.0,
                            center_level: float | None = 160.0, bias_std: float = 0.25) -> dict:
    """A NON-LINEAR random encoder in DINOv2-reg's architecture and key layout (no ``encoder.``
    prefix), deterministic for ``seed``. It is NOT pretrained and carries no learned features.

    Why: no pretrained DINOv2 weights are available offline, and DINOv2's own random init
    (LayerScale 1e-8) makes the frozen encoder a random *linear* projection of each 14×14 patch.
    On the bright sheet a dark defect's tokens are then about the negation of the normal tokens,
    the INP extractor's softmax attention puts nearly all its mass on them, the prototypes describe
    the defect and the whole tile reconstructs badly (masks cover tiles).

    What this encoder does instead (docs/BENCHMARKS.md, "Third round"):

    * the blocks do work: LayerScale ``ls_mlp`` on the MLP branch (``ls_attn``, small, on the
      attention branch so tokens stay mostly local), fc1 scaled so GELU pre-activations are O(1)
      (std ``fc1_gain``, bias std ``fc1_bias``), q/k weights std ``qk_std`` (near-uniform attention);
    * the patch embedding (DINOv2's init × ``patch_gain``) is centred on a flat patch at grey level
      ``center_level`` (its bias absorbs W·x_L), so a token carries the patch's deviation from the
      sheet's level, not the level itself: dark defects are no longer negated sheet tokens;
    * a constant random vector (per-channel std ``bias_std``) is added to every token. Each
      block's LayerNorm makes the features blind to a token's length, and a defect differs from
      the sheet texture mostly by length (4–13× a normal deviation). Against a fixed offset of
      about three normal deviations, a large deviation turns the token far and a normal one
      barely, so defects stand out after the LayerNorm while normal tokens stay varied enough
      that the INP extractor's attention is not captured by them.

    ``center_level=None`` and ``bias_std=0`` give the second round's encoder (``patch_gain`` was
    scanned from 0.03 to 1 there). The position embedding is DINOv2's init × ``pos_gain``;
    cls/register tokens are DINOv2's init (``export.inpformer.training.random_encoder_state_dict``)."""
    import torch

    from export.inpformer.training import random_encoder_state_dict
    from sdk.bundle import IMAGENET_MEAN, IMAGENET_STD

    g = torch.Generator().manual_seed(int(seed) + 7919)
    c, hid = arch.embed_dim, arch.mlp_hidden
    sd = {k[len("encoder."):]: v for k, v in random_encoder_state_dict(arch, seed).items()}
    w = sd["patch_embed.proj.weight"] = sd["patch_embed.proj.weight"] * patch_gain
    sd["patch_embed.proj.bias"] = sd["patch_embed.proj.bias"] * patch_gain
    sd["pos_embed"] *= pos_gain
    if center_level is not None:
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)  # the bundle's preprocess
        flat = (center_level / 255.0 - mean) / std  # the grey level after the model's normalisation
        sd["patch_embed.proj.bias"] -= (w * flat[None, :, None, None]).sum((1, 2, 3))
    if bias_std:
        # Its own generator: the blocks below stay the same whatever ``bias_std`` is.
        offset = torch.Generator().manual_seed(int(seed) + 104729)
        sd["patch_embed.proj.bias"] += torch.randn(c, generator=offset) * bias_std
    for i in range(arch.depth):
        b = f"blocks.{i}."
        qkv = torch.randn(3 * c, c, generator=g) * 0.02
        qkv[:2 * c] = torch.randn(2 * c, c, generator=g) * qk_std
        qkv[2 * c:] = torch.randn(c, c, generator=g) / math.sqrt(c)
        sd[b + "attn.qkv.weight"] = qkv
        sd[b + "attn.proj.weight"] = torch.randn(c, c, generator=g) / math.sqrt(c)
        sd[b + "mlp.fc1.weight"] = torch.randn(hid, c, generator=g) * (fc1_gain / math.sqrt(c))
        sd[b + "mlp.fc1.bias"] = torch.randn(hid, generator=g) * fc1_bias
        sd[b + "mlp.fc2.weight"] = torch.randn(c, hid, generator=g) * (fc2_gain / math.sqrt(hid))
        sd[b + "ls1.gamma"] = torch.full((c,), float(ls_attn))
        sd[b + "ls2.gamma"] = torch.full((c,), float(ls_mlp))
    return sd


def add_reference(bundle, tiles) -> None:
    """Reference tiles for the TensorRT parity gate (`robis-edge build`) and the camera frame size."""
    from sdk.engines.reference import write_reference_tiles

    write_reference_tiles(bundle, tiles, f"sdk.tools.synthetic.product seed {SEEDS['calibration']} "
                          "(calibration frames)")
    bundle.set_frame_hw((FRAME_H, FRAME_W))


def log(msg: str) -> None:
    print(msg, flush=True)


def write_frames(frames, folder: Path, masks: bool = False) -> None:
    from sdk.imageio import write_png

    for f in frames:
        write_png(folder / "images" / f"{f.name}.png", f.image)
        if masks:
            write_png(folder / "ground_truth" / f"{f.name}.png", f.mask)


def tune_verdict(insp, frames, margin: float) -> tuple[int, dict]:
    """min_area_px above every region that held-out defect-free frames produce (× margin)."""
    areas, scores = [], []
    for f in frames:
        r = insp.inspect(f.image, "gray")
        areas.append(max((g.area_px for g in r.regions), default=0))
        scores.append(r.score)
    largest = max(areas)
    min_area = max(1, int(math.ceil(largest * margin)))
    return min_area, {"tuning_frames": len(frames), "largest_good_region_px": int(largest),
                      "good_region_area_p50": float(np.percentile(areas, 50)),
                      "good_score_max": float(max(scores)), "margin": margin}


def evaluate(bundle_dir: Path, frames, work: Path, threads: int) -> dict:
    """`robis-edge inspect` on ``frames`` (written to work/eval), then metrics against the truth."""
    import cv2

    from edge_runtime.cli import main as robis_edge

    ev = work / "eval"
    if ev.exists():
        shutil.rmtree(ev)
    write_frames(frames, ev, masks=True)
    t0 = time.perf_counter()
    rc = robis_edge(["inspect", "--bundle", str(bundle_dir), "--images", str(ev / "images"),
                     "--out", str(ev / "inspect"), "--backend", "ort-cpu", "--mask-scale", "1.0",
                     "--threads", str(threads)])
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"robis-edge inspect failed with status {rc}")
    results = [json.loads(line) for line in (ev / "inspect" / "results.jsonl").read_text().splitlines()]
    by_name = {Path(r["file"]).stem: r for r in results}
    tp = fp = fn = tn = 0
    ptp = pfp = pfn = 0
    kinds: dict[str, list[int]] = {}
    lat = []
    for f in frames:
        r = by_name[f.name]
        fail = r["verdict"] == "fail"
        bad = f.defective
        tp, fp, fn, tn = tp + (fail and bad), fp + (fail and not bad), fn + (bad and not fail), \
            tn + (not bad and not fail)
        lat.append(r["timings_ms"]["total"])
        pred = cv2.imread(str(ev / "inspect" / "masks" / f"{f.name}.png"), cv2.IMREAD_GRAYSCALE) > 0
        gt = f.mask > 0
        ptp += int(np.count_nonzero(pred & gt))
        pfp += int(np.count_nonzero(pred & ~gt))
        pfn += int(np.count_nonzero(~pred & gt))
        for kind, (x0, y0, x1, y1) in f.defects:
            hit = bool(np.any(pred[y0:y1, x0:x1] & gt[y0:y1, x0:x1]))
            kinds.setdefault(kind, [0, 0])
            kinds[kind][0] += hit
            kinds[kind][1] += 1
    prec = ptp / max(1, ptp + pfp)
    rec = ptp / max(1, ptp + pfn)
    return {
        "frames": len(frames), "defective": tp + fn, "good": fp + tn,
        "image_recall": tp / max(1, tp + fn), "false_alarm_rate": fp / max(1, fp + tn),
        "detected": tp, "missed": fn, "false_alarms": fp,
        "pixel_precision": prec, "pixel_recall": rec,
        "pixel_f1": 2 * prec * rec / max(1e-12, prec + rec),
        "defect_recall_by_kind": {k: {"found": v[0], "total": v[1]} for k, v in sorted(kinds.items())},
        "latency_ms_p50": float(np.percentile(lat, 50)), "inspect_wall_s": wall,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", type=Path, default=ROOT / "examples" / "demo" / "bundle")
    ap.add_argument("--work", type=Path, default=ROOT / "demo-out" / "demo-build",
                    help="frames, checkpoint and evaluation outputs (not committed)")
    ap.add_argument("--train-frames", type=int, default=30)
    ap.add_argument("--calibration-frames", type=int, default=20)
    ap.add_argument("--tuning-frames", type=int, default=30)
    ap.add_argument("--eval-frames", type=int, default=100)
    ap.add_argument("--iters", type=int, default=300, help="training iterations (batch 16)")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime threads")
    ap.add_argument("--seed", type=int, default=1, help="training seed")
    ap.add_argument("--eval-seed", type=int, default=SEEDS["eval"], help="seed of the evaluation frames")
    ap.add_argument("--margin", type=float, default=1.25,
                    help="min_area_px = margin × largest region on held-out good frames")
    ap.add_argument("--width", type=int, default=FRAME_W)
    ap.add_argument("--height", type=int, default=FRAME_H)
    ap.add_argument("--style", choices=("sheet", "plate"), default="sheet",
                    help="synthetic product (sdk/tools/synthetic/product.py); the demo bundle uses 'sheet'")
    ap.add_argument("--encoder", choices=("demo", "dinov2-random"), default="demo",
                    help="frozen encoder: 'demo' = the non-linear random demo encoder "
                    "(demo_encoder_state_dict, saved as a DINOv2-layout .pth and loaded like real "
                    "DINOv2 weights), 'dinov2-random' = DINOv2's own random init (LayerScale 1e-8)")
    ap.add_argument("--encoder-config", type=json.loads, default={},
                    help="JSON overrides of demo_encoder_state_dict's keyword arguments")
    ap.add_argument("--skip-fit", action="store_true", help="reuse the checkpoint in --work")
    args = ap.parse_args()

    import cv2
    import torch

    from export.inpformer.arch import InpFormerArch
    from export.inpformer.bundle_export import export_inpformer_bundle
    from export.inpformer.training import FitOptions, fit
    from sdk import Bundle, Inspector
    from sdk.tools.synthetic.product import make_product_frames

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    t_all = time.perf_counter()
    arch = InpFormerArch.from_dict(DEMO_ARCH)
    args.work.mkdir(parents=True, exist_ok=True)
    ckpt = args.work / "model.pth"

    # ---- 1. frames -------------------------------------------------------------------------
    t0 = time.perf_counter()
    train = make_product_frames(args.train_frames, defect_rate=0.0, seed=SEEDS["train"], prefix="train",
                                style=args.style, height=args.height, width=args.width)
    calib = make_product_frames(args.calibration_frames, defect_rate=0.0, seed=SEEDS["calibration"],
                                prefix="calib", style=args.style, height=args.height, width=args.width)
    tuning = make_product_frames(args.tuning_frames, defect_rate=0.0, seed=SEEDS["tuning"], prefix="tune",
                                 style=args.style, height=args.height, width=args.width)
    log(f"[1/5] {len(train)} training, {len(calib)} calibration, {len(tuning)} tuning defect-free "
        f"frames ({train[0].image.shape[1]}x{train[0].image.shape[0]}) in {time.perf_counter() - t0:.0f} s")

    # ---- 2. fit ----------------------------------------------------------------------------
    if args.skip_fit and ckpt.is_file():
        log(f"[2/5] reusing {ckpt}")
        fit_info = json.loads((args.work / "fit.json").read_text())
    else:
        log(f"[2/5] fit: {args.iters} iterations, batch {args.batch_size}, window {WINDOW}/{OVERLAP}, "
            f"S={arch.img_size}, {args.threads} threads")
        enc_path = None
        if args.encoder == "demo":
            enc_path = args.work / "demo_encoder.pth"
            torch.save(demo_encoder_state_dict(arch, args.seed, **args.encoder_config), enc_path)
        res = fit([(f.image, "gray") for f in train], arch, ckpt, encoder_weights=enc_path,
                  options=FitOptions(iters=args.iters, batch_size=args.batch_size, warmup=args.warmup,
                                     window=WINDOW, overlap=OVERLAP, seed=args.seed))
        k = max(1, len(res.losses) // 20)
        fit_info = {"iterations": res.iterations, "epochs": round(res.epochs, 2),
                    "batch_size": res.batch_size, "train_frames": res.n_frames, "train_tiles": res.n_tiles,
                    "seconds": round(res.seconds, 1), "loss_first": float(np.mean(res.losses[:k])),
                    "loss_last": float(np.mean(res.losses[-k:])),
                    "encoder": res.encoder, "encoder_kind": args.encoder,
                    "encoder_config": args.encoder_config, "seed": args.seed, "threads": args.threads,
                    "loss_curve": [round(float(np.mean(res.losses[i:i + k])), 5)
                                   for i in range(0, len(res.losses), k)]}
        (args.work / "fit.json").write_text(json.dumps(fit_info, indent=1))

    # ---- 3. export -------------------------------------------------------------------------
    log("[3/5] export")
    if args.out.exists():
        shutil.rmtree(args.out)
    bundle, report = export_inpformer_bundle(ckpt, arch, args.out, name="demo-sheet", window=WINDOW,
                                             overlap=OVERLAP, features=True,
                                             log=lambda m: log("      " + m))
    bundle.update_provenance(training={
        "builder": "examples/demo/build_bundle.py", "command": "python examples/demo/build_bundle.py "
        + " ".join(sys.argv[1:]), "data": "sdk.tools.synthetic.product, defect-free frames, seed "
        f"{SEEDS['train']}", **fit_info,
        "note": ("encoder NOT pretrained: a seeded random non-linear encoder in DINOv2's layout "
                 "(examples/demo/build_bundle.py demo_encoder_state_dict; no weights offline); demo only"
                 if fit_info.get("encoder_kind", "dinov2-random") == "demo" else
                 "encoder NOT pretrained: DINOv2 random init (no weights offline); demo only")})
    bundle.set_ttt(DEMO_TTT)
    bundle.save()

    # ---- 4. calibrate + verdict -------------------------------------------------------------
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        insp = Inspector(bundle, backend="ort-cpu", scope="rolling", threads=args.threads)
    cal, ref_tiles = insp.calibrate_with_reference(
        [f.image for f in calib], ["gray"] * len(calib),
        source=f"sdk.tools.synthetic.product seed {SEEDS['calibration']} (defect-free)", n_defective=0)
    bundle.set_calibration(cal)
    add_reference(bundle, ref_tiles)
    bundle.save()
    tuned = Inspector(Bundle.load(args.out), backend="ort-cpu", threads=args.threads)
    min_area, tune_info = tune_verdict(tuned, tuning, args.margin)
    bundle.set_verdict(min_area_px=min_area)
    bundle.update_provenance(verdict_tuning={
        **tune_info, "rule": "min_area_px = ceil(margin × largest region on held-out defect-free frames)",
        "source": f"sdk.tools.synthetic.product seed {SEEDS['tuning']}"})
    bundle.save()
    b = cal.bins
    log(f"[4/5] calibrated on {len(calib)} defect-free frames: amap {cal.norm.amap_min:.4g}.."
        f"{cal.norm.amap_max:.4g}, "
        f"MEBin range {b.mebin_min_th:.1f}..{b.mebin_max_th:.1f}; verdict min_area_px {min_area} "
        f"(largest region on {len(tuning)} held-out good frames: {tune_info['largest_good_region_px']} px)")

    # ---- 5. evaluate ------------------------------------------------------------------------
    fresh = make_product_frames(args.eval_frames, defect_rate=0.5, seed=args.eval_seed, prefix="eval",
                                style=args.style, height=args.height, width=args.width)
    log(f"[5/5] evaluation with `robis-edge inspect` on {len(fresh)} fresh frames "
        f"({sum(f.defective for f in fresh)} defective)")
    m = evaluate(args.out, fresh, args.work, args.threads)
    size = sum(p.stat().st_size for p in args.out.iterdir())
    m.update({"bundle_bytes": size, "min_area_px": min_area, "total_seconds": time.perf_counter() - t_all,
              "fit": fit_info})
    (args.work / "quality.json").write_text(json.dumps(m, indent=1))
    kinds = ", ".join(f"{k} {v['found']}/{v['total']}" for k, v in m["defect_recall_by_kind"].items())
    log(f"\nimage level: recall {m['image_recall']:.3f} ({m['detected']}/{m['defective']}), false alarms "
        f"{m['false_alarm_rate']:.3f} ({m['false_alarms']}/{m['good']})\n"
        f"pixel level: F1 {m['pixel_f1']:.3f} (precision {m['pixel_precision']:.3f}, recall "
        f"{m['pixel_recall']:.3f})\ndefects found by kind: {kinds}\n"
        f"latency p50 {m['latency_ms_p50']:.0f} ms/frame; bundle {size / 2**20:.2f} MiB in {args.out}; "
        f"training {fit_info['seconds']:.0f} s; total {m['total_seconds']:.0f} s")
    target = m["image_recall"] >= 0.9 and m["false_alarm_rate"] <= 0.05
    log("target (recall >= 0.9 at <= 5 % false alarms): " + ("MET" if target else "NOT MET"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
