"""Streaming demo: camera simulator → ``serve`` → listener, all on loopback (127.0.0.1).

The same pieces as ``robis-edge camera --synthetic`` and ``robis-edge serve``, started here as
threads of one process on ephemeral ports. Prints one line per frame (seq, truth, verdict,
regions, score, latency) and a summary against the simulator's ground truth (recall, false
alarms, frames/s, latency percentiles), then writes overlays (frame + mask contours + region
boxes) to a folder it names.

Default: the INP-Former demo bundle (examples/demo/bundle) on synthetic 1892×1432 brushed-sheet
frames (the camera frame size stored in the bundle). The classical model of the first demo:
``--bundle examples/demo-bundle --scene surface`` (1432×972 frames).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def render(frame_gray: np.ndarray, header: dict, mask: np.ndarray | None, min_area_px: int = 1) -> np.ndarray:
    """BGR overlay from what a subscriber receives: mask tint and contours, a box around each region
    of at least ``min_area_px`` (the bundle's verdict rule; smaller ones keep only their contour),
    verdict banner."""
    import cv2

    h, w = frame_gray.shape[:2]
    out = cv2.cvtColor(frame_gray, cv2.COLOR_GRAY2BGR)
    fail = header["verdict"] == "fail"
    color = (40, 40, 230) if fail else (60, 180, 60) if header["verdict"] == "pass" else (0, 160, 255)
    thick = max(1, round(max(h, w) / 600))
    if mask is not None:
        full = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        tint = out.copy()
        tint[full > 0] = (0, 0, 255)
        out = cv2.addWeighted(out, 0.65, tint, 0.35, 0)
        contours, _ = cv2.findContours(full, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), thick + 1)
    big = [r for r in header["regions"] if r["area_px"] >= min_area_px]
    for r in big:
        x0, y0, x1, y1 = r["bbox"]
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), color, thick + 1)
    score = "-" if header["score"] is None else f"{header['score']:.1f}"
    n = len(header["regions"])
    text = (f"seq {header['seq']}  {header['verdict'].upper()}  score {score}  regions {n}, "
            f"{len(big)} >= {min_area_px} px")
    font = max(0.4, max(h, w) / 1500)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, thick)
    cv2.rectangle(out, (0, 0), (tw + 12, th + base + 12), color, -1)
    cv2.putText(out, text, (6, th + 6), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    import zmq

    from edge_runtime import protocol as P
    from edge_runtime.camera import CameraConfig, CameraSimulator
    from edge_runtime.config import ServiceConfig
    from edge_runtime.service import Service
    from sdk import Bundle
    from sdk.imageio import write_png
    from sdk.tools.synthetic import SCENES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=ROOT / "examples" / "demo" / "bundle")
    ap.add_argument("--scene", choices=SCENES, default="sheet",
                    help="synthetic frames: 'sheet' (the INP-Former demo bundle's product, default) or "
                    "'surface' (the classical examples/demo-bundle)")
    ap.add_argument("--out", type=Path, default=Path("demo-out") / "stream")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--width", type=int, help="default: the bundle's camera frame size, else 1432")
    ap.add_argument("--height", type=int, help="default: the bundle's camera frame size, else 972")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--fps", type=float, default=0.0, help="camera rate (default 0: as fast as possible)")
    ap.add_argument("--encoding", choices=("raw", "png", "jpeg"), default="raw")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: its own choice)")
    ap.add_argument("--overload", choices=("queue", "latest"), default="queue")
    ap.add_argument("--queue-size", type=int, help="default: --frames (nothing dropped)")
    ap.add_argument("--timeout", type=float, default=90.0, help="give up after this many seconds")
    args = ap.parse_args(argv)
    bundle = Bundle.load(args.bundle)
    frame_hw = bundle.frame_hw or (972, 1432)
    args.height = args.height or int(frame_hw[0])
    args.width = args.width or int(frame_hw[1])

    cam = CameraSimulator(CameraConfig(output="tcp://127.0.0.1:*", synthetic=True, scene=args.scene,
                                       count=args.frames,
                                       pool=args.frames, width=args.width, height=args.height, seed=args.seed,
                                       fps=args.fps, encoding=args.encoding, truth=args.out / "truth",
                                       camera="cam0"))
    print(f"generating {args.frames} synthetic {args.width}x{args.height} frames ...", flush=True)
    cam.prepare()
    cam_endpoint = cam.bind()
    service = Service(ServiceConfig(
        bundles=[(None, str(args.bundle))], input=cam_endpoint, output="tcp://127.0.0.1:*",
        control="tcp://127.0.0.1:*", backend="ort-cpu", workers=args.workers, threads=args.threads,
        queue_size=args.queue_size or max(8, args.frames), policy=args.overload)).start()
    ep = service.endpoints
    print(f"camera  {cam_endpoint}   (robis-edge camera --synthetic --output {cam_endpoint} ...)")
    print(f"serve   results {ep['output']}, control {ep['control']}   (robis-edge serve --bundle "
          f"{args.bundle} --input {cam_endpoint} --output {ep['output']} --control {ep['control']})")

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    req = ctx.socket(zmq.REQ)
    for s in (sub, req):
        s.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 100000)
    sub.connect(ep["output"])
    sub.setsockopt(zmq.SUBSCRIBE, b"result.")
    req.setsockopt(zmq.RCVTIMEO, 5000)
    req.connect(ep["control"])

    def control(cmd: str) -> dict:
        req.send(json.dumps({"cmd": cmd}).encode())
        return json.loads(req.recv())

    while control("health")["subscribers"] < 1:  # our subscription has reached serve
        time.sleep(0.02)

    stop = threading.Event()
    t_start = time.perf_counter()
    camera = threading.Thread(target=cam.run, args=(stop,), name="camera", daemon=True)
    camera.start()
    results: dict[int, tuple[dict, np.ndarray | None, float]] = {}
    print(f"\n{'seq':>4} {'verdict':<8}{'regions':>8}{'score':>8}{'latency ms':>11}  error")
    deadline = time.monotonic() + args.timeout
    try:
        while len(results) < args.frames and time.monotonic() < deadline:
            if not sub.poll(200):
                continue
            head, mask = P.decode_result(sub.recv_multipart())
            latency = (time.time_ns() - head["ts_ns"]) / 1e6 if head.get("ts_ns") else float("nan")
            results[head["seq"]] = (head, mask, latency)
            err = head["error"]["code"] if head["error"] else ""
            score = "-" if head["score"] is None else f"{head['score']:.1f}"
            print(f"{head['seq']:>4} {head['verdict']:<8}{len(head['regions']):>8}{score:>8}"
                  f"{latency:>11.1f}  {err}", flush=True)
        wall = time.perf_counter() - t_start
        stats = control("stats")
    finally:
        stop.set()
        camera.join(5)
        cam.close()
        service.stop()
        sub.close(0)
        req.close(0)
        ctx.term()

    truth = {}
    truth_file = args.out / "truth" / "ground_truth.jsonl"
    for line in truth_file.read_text().splitlines():
        t = json.loads(line)
        truth[t["seq"]] = t["defective"]
    verdicts = [r[0]["verdict"] for r in results.values()]
    tp = sum(1 for s, r in results.items() if r[0]["verdict"] == "fail" and truth.get(s))
    fn = sum(1 for s, r in results.items() if r[0]["verdict"] == "pass" and truth.get(s))
    fp = sum(1 for s, r in results.items() if r[0]["verdict"] == "fail" and truth.get(s) is False)
    tn = sum(1 for s, r in results.items() if r[0]["verdict"] == "pass" and truth.get(s) is False)
    lat = np.array([r[2] for r in results.values() if r[0]["verdict"] != "error"] or [np.nan])
    pipe = np.array([r[0]["timings_ms"].get("pipeline", np.nan) for r in results.values()
                     if r[0]["verdict"] != "error"] or [np.nan])
    b = stats["bundles"][service.default]
    print(f"\nframes {len(results)}/{args.frames}: {verdicts.count('pass')} pass, "
          f"{verdicts.count('fail')} fail, {verdicts.count('error')} error; dropped {stats['dropped']}")
    print(f"detection against ground truth: recall {tp}/{tp + fn} defective = {tp / max(1, tp + fn):.2f}, "
          f"false alarms {fp}/{fp + tn} good")
    print(f"throughput {len(results) / wall:.1f} frames/s ({args.workers} worker(s), {b['backend']}/"
          f"{b['provider']} {b['precision']}); latency capture→result p50 "
          f"{np.nanpercentile(lat, 50):.0f} ms, p99 {np.nanpercentile(lat, 99):.0f} ms; pipeline p50 "
          f"{np.nanpercentile(pipe, 50):.0f} ms")
    if args.fps <= 0:
        print("(the camera sent as fast as it could: frames/s is the service's capacity, and the latency "
              "includes waiting in the queue; --fps N paces the camera)")

    overlays = args.out / "overlays"
    for old in overlays.glob("*.png"):  # a previous run's pictures (names carry the verdict)
        old.unlink()
    frames = {i: f for i, f in enumerate(cam._pool or [])}
    for seq, (head, mask, _) in sorted(results.items()):
        frame = frames.get(seq % max(1, len(frames)))
        if frame is not None:
            picture = render(frame.image, head, mask, bundle.verdict.min_area_px)
            write_png(overlays / f"{seq:04d}_{head['verdict']}.png", picture)
    print(f"overlays: {overlays}   ground truth: {truth_file}")
    return 0 if len(results) == args.frames and "error" not in verdicts else 1


if __name__ == "__main__":
    sys.exit(main())
