"""``serve`` frames/s with 1, 2, 4 … workers: camera simulator (PUSH) → ``Service`` (PULL, queue
policy, nothing dropped) → a subscriber, all on loopback in one process (issue 16; docs/gpu-bench.md).

The same pieces as ``robis-edge camera --synthetic --mode push`` and ``robis-edge serve
--input-mode pull``. Synthetic gray frames of the given size are generated once and cycled; the
camera sends as fast as serve takes them (PUSH blocks when serve's queue is full), so frames/s is the
service's capacity. Per worker count: frames/s over the wall time from the first frame sent to the
last result received, and the p50/p99 of the pipeline time and of its stages as serve reports them
in each result.

    python benchmarks/gpu/serve_throughput.py --bundle B --backend ort-cuda --workers 1 2 4 --json serve.json
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _pct(v: list[float]) -> dict:
    a = np.asarray([x for x in v if x == x] or [np.nan], np.float64)
    return {"p50": round(float(np.nanpercentile(a, 50)), 2), "p99": round(float(np.nanpercentile(a, 99)), 2)}


def run_once(bundle: Path, workers: int, args, pool) -> dict:
    import zmq

    from edge_runtime import protocol as P
    from edge_runtime.camera import CameraConfig, CameraSimulator
    from edge_runtime.config import ServiceConfig
    from edge_runtime.service import Service

    cam = CameraSimulator(CameraConfig(output="tcp://127.0.0.1:*", synthetic=True, scene=args.scene,
                                       count=args.frames, pool=args.pool, width=args.width,
                                       height=args.height,
                                       seed=args.seed, encoding="raw", mode="push", camera="cam0"))
    if pool is not None:
        cam._pool = pool  # the frames of the first run (generation is not what is measured)
    cam.prepare()
    endpoint = cam.bind()
    service = Service(ServiceConfig(
        bundles=[(None, str(bundle))], input=endpoint, input_mode="pull", output="tcp://127.0.0.1:*",
        control="tcp://127.0.0.1:*", backend=args.backend, workers=workers, threads=args.threads,
        queue_size=max(2 * workers, 8), policy="queue")).start()
    ep = service.endpoints
    ctx = zmq.Context()
    sub, req = ctx.socket(zmq.SUB), ctx.socket(zmq.REQ)
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

    t_wait = time.monotonic() + 10
    while control("health")["subscribers"] < 1 and time.monotonic() < t_wait:
        time.sleep(0.02)
    stop = threading.Event()
    heads: list[dict] = []
    t0 = time.perf_counter()
    camera = threading.Thread(target=cam.run, args=(stop,), name="camera", daemon=True)
    camera.start()
    deadline = time.monotonic() + args.timeout
    t_first = None
    try:
        while len(heads) < args.frames and time.monotonic() < deadline:
            if not sub.poll(200):
                continue
            head, _ = P.decode_result(sub.recv_multipart())
            if t_first is None:
                t_first = time.perf_counter()
            heads.append(head)
        wall = time.perf_counter() - t0
        stats = control("stats")
    finally:
        stop.set()
        camera.join(5)
        cam.close()
        service.stop()
        sub.close(0)
        req.close(0)
        ctx.term()
    ok = [h for h in heads if h["verdict"] != "error"]
    stages: dict[str, list[float]] = {}
    for h in ok:
        for k, v in (h.get("timings_ms") or {}).items():
            if isinstance(v, (int, float)):
                stages.setdefault(k, []).append(float(v))
    # Steady state: from the first result to the last (excludes the first frame's start-up).
    steady = (len(heads) - 1) / (time.perf_counter() - t_first) if t_first and len(heads) > 1 else None
    b = stats["bundles"][service.default]
    return {"workers": workers, "frames_sent": args.frames, "results": len(heads),
            "errors": len(heads) - len(ok),
            "dropped": stats.get("dropped"), "wall_s": round(wall, 3), "fps": round(len(heads) / wall, 2),
            "fps_steady": round(steady, 2) if steady else None,
            "backend": b.get("backend"), "provider": b.get("provider"), "precision": b.get("precision"),
            "timings_ms": {k: _pct(v) for k, v in stages.items()},
            "first_error": next((h["error"] for h in heads if h["error"]), None)}, cam._pool


def main(argv: list[str] | None = None) -> int:
    from sdk.tools.synthetic import SCENES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, type=Path)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--frames", type=int, default=60, help="frames per worker count")
    ap.add_argument("--pool", type=int, default=8, help="distinct synthetic frames, cycled")
    ap.add_argument("--width", type=int, default=2448)
    ap.add_argument("--height", type=int, default=2048)
    ap.add_argument("--scene", choices=SCENES, default="surface")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    ap.add_argument("--timeout", type=float, default=120.0, help="per worker count, seconds")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    runs, pool = [], None
    for w in args.workers:
        try:
            r, pool = run_once(args.bundle, w, args, pool)
        except Exception as e:  # keep the other worker counts
            r = {"workers": w, "error": f"{type(e).__name__}: {e}"}
        runs.append(r)
        print(json.dumps(r), flush=True)
    res = {"bundle": str(args.bundle), "backend": args.backend, "frame_size": [args.width, args.height],
           "frames_per_run": args.frames, "runs": runs,
           "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(f"\n{'workers':>8}{'frames/s':>10}{'steady':>9}{'pipeline p50':>14}{'p99':>8}  backend")
    for r in runs:
        if "error" in r:
            print(f"{r['workers']:>8}  ERROR {r['error']}")
            continue
        pipe = r["timings_ms"].get("pipeline", {"p50": float("nan"), "p99": float("nan")})
        print(f"{r['workers']:>8}{r['fps']:>10.2f}{(r['fps_steady'] or 0):>9.2f}{pipe['p50']:>14.1f}"
              f"{pipe['p99']:>8.1f}  {r['backend']}/{r['provider']} "
              f"({r['results']}/{r['frames_sent']} results, {r['errors']} errors)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0 if all("error" not in r and r["results"] == args.frames for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
