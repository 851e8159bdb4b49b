"""The RoBiS tile model on this CPU: torch eager fp32 / bf16 autocast, ONNX Runtime fp32, OpenVINO
f32 / bf16 / int8 — ms per 518 tile (batch 1) and per 9-tile 2448×2048 frame, each precision's
parity with ONNX Runtime fp32 on fresh frames (max |Δ| of the 0..255 map, mask pixel agreement,
verdicts) and the parity gate's decision on the bundle's reference tiles; then ``serve`` vs calling
``Inspector`` directly on the same frames (throughput ratio).

Model: INP-Former ViT-B/14 at 518 (preset dinov2reg_vit_base_14), random weights, exported with
export/inpformer (benchmarks/vitb_bundle.py, cached under --work). One run, --threads threads.

    python benchmarks/bench_backends.py --work /tmp/robis-bench --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


class TorchBackend:
    """The torch INP-Former behind the SDK's Backend interface (fp32, or bf16 autocast)."""

    name = "torch"

    def __init__(self, model, bf16: bool) -> None:
        self.model, self.bf16 = model, bf16
        self.precision = "bf16 autocast" if bf16 else "fp32"
        self.provider = f"torch eager ({self.precision})"
        self.reason = "benchmark"

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(torch.from_numpy(np.ascontiguousarray(batch)))
        return out.float().numpy()[:, 0]


def interleaved(backends: dict, bundle, frames, tile: np.ndarray, runs: int) -> dict:
    """ms/tile (batch 1) and ms/frame (``Inspector.inspect``, 9 tiles) of every backend, measured
    round-robin (backend A, B, C, A, B, C, …) so that a shared, fluctuating CPU load falls on all of
    them alike; one warm-up each. Returns label → {ms_tile, ms_frame, runs, results}."""
    from sdk import Inspector

    out = {k: {"tile": [], "frame": [], "results": []} for k in backends}
    insp = {}
    for k, be in backends.items():
        be.run(tile)
        insp[k] = Inspector(bundle, backend=be)
    for i in range(runs):
        for k, be in backends.items():
            t0 = time.perf_counter()
            be.run(tile)
            out[k]["tile"].append((time.perf_counter() - t0) * 1e3)
        print(f"  tile round {i + 1}/{runs}: " + ", ".join(f"{k} {v['tile'][-1]:.0f}"
                                                          for k, v in out.items()), flush=True)
    for j, f in enumerate(frames):
        for k in backends:
            t0 = time.perf_counter()
            out[k]["results"].append(insp[k].inspect(f, "gray"))
            out[k]["frame"].append((time.perf_counter() - t0) * 1e3)
        print(f"  frame {j + 1}/{len(frames)}: " + ", ".join(f"{k} {v['frame'][-1]:.0f}"
                                                             for k, v in out.items()), flush=True)
    return out


def parity(ref_results, results) -> dict:
    dmax = max(float(np.abs(a.anomaly_map.astype(np.float64) - b.anomaly_map).max())
               for a, b in zip(ref_results, results))
    agree = min(float(np.mean((a.mask > 0) == (b.mask > 0))) for a, b in zip(ref_results, results))
    same = sum(a.verdict == b.verdict for a, b in zip(ref_results, results))
    return {"max_abs_255": dmax, "mask_agreement_min": agree, "verdicts_same": f"{same}/{len(results)}"}


def serve_vs_inspector(bundle_root: Path, backend: str, frames, threads: int) -> dict:
    """``serve`` (1 worker, pull input, loopback) vs ``Inspector.inspect``: each frame once through
    each, alternately, one at a time; the ratio of the summed times is the service's overhead."""
    import zmq

    from edge_runtime import protocol as P
    from edge_runtime.config import ServiceConfig
    from edge_runtime.service import Service
    from sdk import Inspector

    insp = Inspector(bundle_root, backend=backend, threads=threads)
    ctx = zmq.Context()
    cam = ctx.socket(zmq.PUSH)
    cam.bind("tcp://127.0.0.1:*")
    endpoint = cam.getsockopt_string(zmq.LAST_ENDPOINT)
    svc = Service(ServiceConfig(bundles=[(None, str(bundle_root))], input=endpoint,
                                output="tcp://127.0.0.1:*", control="tcp://127.0.0.1:*", input_mode="pull",
                                backend=backend, workers=1, threads=threads)).start()
    sub = ctx.socket(zmq.SUB)
    sub.connect(svc.endpoints["output"])
    sub.setsockopt(zmq.SUBSCRIBE, b"result.")
    time.sleep(0.5)

    def served(i: int, f) -> float:
        t0 = time.perf_counter()
        cam.send_multipart(P.encode_frame("cam0", i, f))
        assert sub.poll(600_000), "serve gave no result"
        sub.recv_multipart()
        return time.perf_counter() - t0

    try:
        served(0, frames[0])  # warm-up of both
        insp.inspect(frames[0], "gray")
        t_direct, t_served = [], []
        for i, f in enumerate(frames):
            t0 = time.perf_counter()
            insp.inspect(f, "gray")
            t_direct.append(time.perf_counter() - t0)
            t_served.append(served(i + 1, f))
    finally:
        svc.stop()
        for s in (cam, sub):
            s.close(0)
        ctx.term()
    direct, serve = len(frames) / sum(t_direct), len(frames) / sum(t_served)
    return {"backend": backend, "frames": len(frames), "inspector_fps": direct, "serve_fps": serve,
            "overhead_pct": 100.0 * (direct / serve - 1.0), "inspector_s": t_direct, "serve_s": t_served}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "robis-bench-backends")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=2, help="fresh 2448x2048 frames (default 2)")
    ap.add_argument("--tile-runs", type=int, default=3)
    ap.add_argument("--calibration-tiles", type=int, default=32, help="int8 PTQ tiles (default 32)")
    ap.add_argument("--serve-frames", type=int, default=3)
    ap.add_argument("--skip", action="append", default=[], help="skip a backend label (repeat)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("ROBIS_OPENVINO_CACHE", str(args.work / "ov-cache"))
    import cv2
    import torch
    from vitb_bundle import vitb_bundle, vitb_model

    from sdk.backends import create_backend
    from sdk.backends.openvino import OvBackend, bf16_native, openvino_host
    from sdk.engines.gate import gate_anomaly_model, pipeline_outputs
    from sdk.engines.openvino.build import calibration_tiles
    from sdk.engines.openvino.quantize import quantize_int8
    from sdk.engines.reference import load_reference_tiles
    from sdk.preprocess import TilePreprocessor
    from sdk.tools.evaluation.bench import host_info
    from sdk.tools.synthetic import make_frames

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    bundle = vitb_bundle(args.work / "vitb")
    host = openvino_host()
    frames = [f.image for f in make_frames(args.frames, 2048, 2448, defect_rate=0.5, seed=21)]
    pre = TilePreprocessor(bundle.preprocess, (1024, 1024))
    tile = pre(frames[0][:1024, :1024][None])
    ref_tiles, color = load_reference_tiles(bundle)
    s, m = bundle.preprocess.size, bundle.map_size
    print(f"{host.cpu_name} ({', '.join(host.isas)}), {args.threads} threads, OpenVINO {host.version}, "
          f"torch {torch.__version__}; {len(frames)} fresh 2448x2048 frames (9 tiles each)", flush=True)
    out = {"host": host_info(), "threads": args.threads, "isas": list(host.isas), "rows": [], "skipped": {}}

    backends, makers = {}, {}
    makers["onnxruntime fp32"] = lambda: create_backend(str(bundle.model_path), input_size=s, map_size=m,
                                                        backend="ort-cpu", threads=args.threads)
    if not {"torch fp32", "torch bf16 autocast"} <= set(args.skip):
        model = vitb_model()
        makers["torch fp32"] = lambda: TorchBackend(model, bf16=False)
        makers["torch bf16 autocast"] = lambda: TorchBackend(model, bf16=True)
    makers["openvino f32"] = lambda: OvBackend(bundle.model_path, input_size=s, map_size=m, precision="f32",
                                               threads=args.threads)
    if bf16_native(host.isas):
        makers["openvino bf16"] = lambda: OvBackend(bundle.model_path, input_size=s, map_size=m,
                                                    precision="bf16", threads=args.threads)
    else:
        out["skipped"]["openvino bf16"] = (f"no native bf16 on this CPU ({', '.join(host.isas)}): OpenVINO "
                                           "would run it as f32 (the backend refuses it)")
    xml = args.work / "vitb-int8" / "anomaly_model.int8.xml"
    if "openvino int8" not in args.skip and not xml.is_file():
        xml.parent.mkdir(parents=True, exist_ok=True)
        calib_dir = args.work / "calib-frames"
        calib_dir.mkdir(exist_ok=True)
        for i, f in enumerate(make_frames(max(1, args.calibration_tiles // 9), 2048, 2448, seed=31)):
            cv2.imwrite(str(calib_dir / f"f{i:03d}.png"), f.image)
        calib = calibration_tiles(bundle, ref_tiles, calib_dir, args.calibration_tiles)
        t0 = time.perf_counter()
        quantize_int8(bundle.model_path, calib, xml)
        out["int8_quantize_s"] = time.perf_counter() - t0
        out["int8_calibration_tiles"] = len(calib)
        print(f"  int8 PTQ on {len(calib)} tiles: {out['int8_quantize_s']:.0f} s", flush=True)
    makers["openvino int8"] = lambda: OvBackend(xml, input_size=s, map_size=m, precision="int8",
                                                threads=args.threads)
    for label, make in makers.items():
        if label in args.skip:
            out["skipped"][label] = "--skip"
            continue
        try:
            backends[label] = make()
        except Exception as exc:
            out["skipped"][label] = str(exc)
    for label, why in out["skipped"].items():
        print(f"  {label:<22} skipped: {why}", flush=True)
    got = interleaved(backends, bundle, frames, tile, args.tile_runs)
    ref = got["onnxruntime fp32"]
    ref_gate = pipeline_outputs(bundle, backends["onnxruntime fp32"], ref_tiles, color)
    base_tile, base_frame = float(np.median(ref["tile"])), float(np.median(ref["frame"]))
    steps = {"openvino f32": "f32", "openvino bf16": "bf16", "openvino int8": "int8"}
    print(f"\n{'backend':<22}{'ms/tile':>9}{'ms/frame':>10}{'× tile':>8}{'× frame':>9}{'max|Δ|':>8}"
          f"{'mask %':>9}{'verdicts':>9}  gate", flush=True)
    for label, v in got.items():
        be = backends[label]
        row = {"backend": label, "provider": be.provider, "precision": be.precision,
               "ms_tile": float(np.median(v["tile"])), "ms_frame": float(np.median(v["frame"])),
               "ms_tile_runs": v["tile"], "ms_frame_runs": v["frame"], **parity(ref["results"], v["results"])}
        row["speedup_tile"] = base_tile / row["ms_tile"]
        row["speedup_frame"] = base_frame / row["ms_frame"]
        gate = ""
        if label in steps:
            rep = gate_anomaly_model(bundle, be, ref_gate, ref_tiles, color, steps[label])
            row["gate"] = rep.to_json()
            gate = rep.line()
        out["rows"].append(row)
        print(f"{label:<22}{row['ms_tile']:9.0f}{row['ms_frame']:10.0f}{row['speedup_tile']:8.2f}"
              f"{row['speedup_frame']:9.2f}{row['max_abs_255']:8.2f}{100 * row['mask_agreement_min']:9.3f}"
              f"{row['verdicts_same']:>9}  {gate}", flush=True)
    backends.clear()
    gc.collect()
    gated = [r for r in out["rows"] if r.get("gate", {}).get("passed")]
    if gated and args.serve_frames:
        best = min(gated, key=lambda r: r["ms_tile"])
        print(f"serve vs Inspector on {args.serve_frames} frames, OpenVINO {best['precision']}", flush=True)
        from sdk import Bundle
        from sdk.engines.openvino.build import build_openvino_engine

        serve_bundle = args.work / "vitb-serve"
        if not serve_bundle.exists():
            import shutil

            shutil.copytree(bundle.root, serve_bundle)
        if not any(e.target == "openvino" and e.precision == best["precision"]
                   for e in Bundle.load(serve_bundle).engines):
            build_openvino_engine(serve_bundle, best["precision"], threads=args.threads, log=lambda t: None)
        sf = [f.image for f in make_frames(args.serve_frames, 2048, 2448, seed=41)]
        out["serve"] = serve_vs_inspector(serve_bundle, "openvino", sf, args.threads)
        sv = out["serve"]
        print(f"  inspector {sv['inspector_fps']:.3f} frames/s, serve {sv['serve_fps']:.3f} "
              f"frames/s: overhead {sv['overhead_pct']:+.1f} %", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
