"""Benchmark: what serve's line-integration outputs cost the frame path, in one run.

Runs ``serve`` in-process on loopback with the classical demo bundle and streams the same frames
through it in three configurations, interleaved over ``--repeat`` rounds:

- ``none``: ZeroMQ only;
- ``all``: ``--http``, ``--opcua`` and ``--mqtt`` to a live Mosquitto broker, an MQTT subscriber
  and a browser-like client polling the page, ``/api/stats`` and the overlay every 0.2 s;
- ``broker-dead``: the same, the broker killed before the stream (results dropped and counted).

For each: ZeroMQ results/s over the stream and the p50/p99 of ``end_to_end`` (arrival → hand-off to
the ZeroMQ socket) from the results, plus what each output sent and dropped. Also the cost of one
``Output.offer`` call (the publisher's only work per output).

    python benchmarks/bench_outputs.py --frames 200 --repeat 3 [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from outputs_peers import Broker, free_port  # noqa: E402

from edge_runtime import protocol as P  # noqa: E402
from edge_runtime.config import ServiceConfig  # noqa: E402
from edge_runtime.outputs.base import Output, Update  # noqa: E402
from edge_runtime.service import Service  # noqa: E402
from sdk.tools.synthetic import make_frames  # noqa: E402


def stream(mode: str, frames: list, n: int, broker: Broker) -> dict:
    import zmq

    ctx = zmq.Context()
    cam = ctx.socket(zmq.PUB)
    cam.setsockopt(zmq.SNDHWM, 100000)
    port = cam.bind_to_random_port("tcp://127.0.0.1")
    extra = {}
    if mode != "none":
        if mode == "all" and broker.proc is None:
            broker.start()
        extra = {"http": "127.0.0.1:0", "opcua": f"opc.tcp://127.0.0.1:{free_port()}", "mqtt": broker.url}
    svc = Service(ServiceConfig(bundles=[(None, str(REPO / "examples" / "demo-bundle"))],
                                input=f"tcp://127.0.0.1:{port}", output="tcp://127.0.0.1:*",
                                backend="ort-cpu", threads=1, queue_size=n + 8, **extra)).start()
    if mode == "broker-dead":
        broker.kill()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 100000)
    sub.connect(svc.endpoints["output"])
    sub.setsockopt(zmq.SUBSCRIBE, b"result.cam")
    time.sleep(0.5)
    stop = threading.Event()

    def browser():
        base = svc.endpoints["http"]
        while not stop.wait(0.2):
            for path in ("", "api/stats", "api/cameras/cam0/latest.jpg"):
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(base + path, timeout=5).read()

    poller = threading.Thread(target=browser, daemon=True) if mode != "none" else None
    listener = None
    if mode == "all":
        from outputs_peers import Listener

        listener = Listener(broker.port, "robis-edge/#")
    if poller:
        poller.start()
    time.sleep(0.3)
    msgs = [P.encode_frame("cam0", i, frames[i % len(frames)]) for i in range(n)]
    t0 = time.perf_counter()
    for m in msgs:
        cam.send_multipart(m)
    e2e = []
    while len(e2e) < n and sub.poll(20000):
        head = P.decode_result(sub.recv_multipart())[0]
        e2e.append(head["timings_ms"].get("total", 0.0))
    wall = time.perf_counter() - t0
    stop.set()
    outs = {o.name: {k: o.stats()[k] for k in ("sent", "dropped")} for o in svc.outputs}
    svc.stop()
    if listener is not None:
        outs["mqtt_received"] = sum(1 for t, *_ in listener.messages if t.endswith("/result"))
        listener.close()
    sub.close(0)
    cam.close(0)
    ctx.term()
    assert len(e2e) == n, f"{mode}: {len(e2e)} of {n} results"
    return {"results_per_s": n / wall, "total_p50_ms": float(np.percentile(e2e, 50)),
            "total_p99_ms": float(np.percentile(e2e, 99)), "outputs": outs}


def offer_cost(repeat: int = 200000) -> float:
    class Sink(Output):
        name = "sink"

        def handle(self, update):  # the thread is not started: offer() only
            pass

    sink = Sink(queue_size=64)
    u = Update([b"result.c", b"{}", b""], "pass", 0.0)
    t0 = time.perf_counter()
    for _ in range(repeat):
        sink.offer(u)
    return (time.perf_counter() - t0) / repeat * 1e9


def opcua_update_cost(n: int = 300) -> dict:
    """Wall and CPU ms of one result written to the OPC UA server (nine variables, one write call),
    as the output's thread does it (hand-off to the server's event loop included)."""
    from edge_runtime.outputs.opcua import OpcUaOutput

    out = OpcUaOutput(f"opc.tcp://127.0.0.1:{free_port()}", lambda: None, lambda: {})
    out.open()
    out._last_service = float("inf")  # results only, no service-variable refresh
    head = json.dumps({"camera": "cam0", "seq": 1, "ts_ns": time.time_ns(), "verdict": "pass", "score": 3.0,
                       "regions": [], "timings_ms": {"total": 3.0}, "error": None}).encode()
    out.handle(Update([b"result.cam0", head, b""], "pass", time.time(), "p", 10))  # creates the camera
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        out.handle(Update([b"result.cam0", head, b""], "pass", time.time(), "p", 10))
    wall, cpu = (time.perf_counter() - t0) / n * 1e3, (time.process_time() - c0) / n * 1e3
    out.close()
    return {"wall_ms": wall, "cpu_ms": cpu}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    frames = [f.image for f in make_frames(8, 160, 200, defect_rate=0.5, seed=5)]
    runs: dict[str, list] = {"none": [], "all": [], "broker-dead": []}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp))
        try:
            for _ in range(args.repeat):
                for mode in runs:
                    runs[mode].append(stream(mode, frames, args.frames, broker))
        finally:
            broker.kill()
    out = {"host": platform.node(), "machine": platform.machine(), "python": platform.python_version(),
           "frames": args.frames, "frame": "160x200 gray, raw", "offer_ns": offer_cost(),
           "opcua_update": opcua_update_cost(), "modes": {}}
    print(f"{args.frames} frames 160x200, demo bundle, ort-cpu, {args.repeat} interleaved rounds")
    print(f"{'mode':<12} {'results/s':>10} {'total p50':>10} {'total p99':>10}  outputs (last round)")
    for mode, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs)
               for k in ("results_per_s", "total_p50_ms", "total_p99_ms")}
        out["modes"][mode] = {**med, "rounds": rs}
        print(f"{mode:<12} {med['results_per_s']:>10.1f} {med['total_p50_ms']:>9.2f}ms "
              f"{med['total_p99_ms']:>9.2f}ms  {json.dumps(rs[-1]['outputs'])}")
    print(f"Output.offer: {out['offer_ns']:.0f} ns per call; one OPC UA result write: "
          f"{out['opcua_update']['wall_ms']:.2f} ms wall, {out['opcua_update']['cpu_ms']:.2f} ms CPU")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
