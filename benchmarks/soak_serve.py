"""Soak test of ``robis-edge serve``: many frames of mixed sizes and encodings, ~10 % malformed,
from 4 cameras, through one serve process; RSS every 1 000 frames, exactly one result per frame.

Starts ``robis-edge serve --input-mode pull`` as a child process on loopback (the classical
demo bundle by default), pushes pre-encoded messages with at most ``--in-flight`` frames
unanswered (so that nothing is dropped for overload unless the service loses frames), and
checks every result against what was sent: one per (camera, seq), and one per message whose
camera/seq cannot be read. Prints a table and writes JSON with ``--json``.

    python benchmarks/soak_serve.py                     # 10 000 frames
    python benchmarks/soak_serve.py --frames 3000 --json soak.json

Not a test: numbers go to docs/BENCHMARKS.md ("Soak").
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CAMERAS = ("cam0", "cam1", "cam2", "cam3")
SIZES = ((972, 1432), (480, 640), (1000, 700), (301, 417))  # (H, W), one odd
ENCODINGS = ("raw", "png", "jpeg")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _pool(seed: int = 0) -> list[tuple[np.ndarray, str]]:
    """Good frames: every size, gray and colour, 8- and 16-bit gray."""
    from sdk.tools.synthetic import make_frames

    out = []
    for k, (h, w) in enumerate(SIZES):
        for f in make_frames(3, h, w, defect_rate=0.5, seed=seed + k):
            out.append((f.image, "gray"))
        bgr = np.repeat(make_frames(1, h, w, seed=seed + 10 + k)[0].image[:, :, None], 3, axis=2)
        bgr[:, :, 0] //= 2  # not a gray picture in three channels
        out.append((bgr, "bgr"))
        out.append((make_frames(1, h, w, seed=seed + 20 + k)[0].image.astype(np.uint16) * 257, "gray"))
    return out


MALFORMED = ("short_payload", "corrupt_png", "bad_json", "two_parts", "unknown_product", "bad_color",
             "tiny_frame", "bad_dtype")


def _malformed(kind: str, camera: str, seq: int, good: list[bytes]) -> tuple[list[bytes], bool]:
    """A malformed message of ``kind`` and whether its (camera, seq) can still be read."""
    topic, header, payload = good
    h = json.loads(header)
    if kind == "short_payload":
        return [topic, header, payload[:-7] if h["encoding"] == "raw" else payload[: len(payload) // 2]], True
    if kind == "corrupt_png":
        h.update(encoding="png", shape=None, dtype=None)
        h = {k: v for k, v in h.items() if v is not None}
        return [topic, json.dumps(h).encode(), b"\x89PNG\r\n\x1a\n" + os.urandom(200)], True
    if kind == "bad_json":
        return [topic, b"{not json", payload], False
    if kind == "two_parts":
        return [topic, header], True  # serve still reads camera and seq from the header
    if kind == "unknown_product":
        h["product"] = "no-such-product"
        return [topic, json.dumps(h).encode(), payload], True
    if kind == "bad_color":
        h["color"] = "bgr" if len(h.get("shape", [0, 0])) == 2 else "gray"
        return [topic, json.dumps(h).encode(), payload], True
    if kind == "tiny_frame":
        from edge_runtime import protocol as P

        return P.encode_frame(camera, seq, np.zeros((2, 3), np.uint8)), True
    h["dtype"] = "float32"  # bad_dtype
    return [topic, json.dumps(h).encode(), payload], True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=10_000, help="messages to send (default 10000)")
    ap.add_argument("--bundle", default=str(ROOT / "examples" / "demo-bundle"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="serve --threads (default 1)")
    ap.add_argument("--malformed", type=float, default=0.1, help="share of malformed messages (default 0.1)")
    ap.add_argument("--in-flight", type=int, default=6, help="unanswered frames at most (default 6)")
    ap.add_argument("--every", type=int, default=1000, help="RSS sample period in frames (default 1000)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a result (default 60)")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import zmq

    from edge_runtime import protocol as P

    rng = np.random.default_rng(args.seed)
    pool = _pool(args.seed)
    encoded: dict[tuple[int, str], list[bytes]] = {}
    p_in, p_out = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "edge_runtime.cli", "serve", "--bundle", args.bundle, "--input-mode", "pull",
           "--input", f"tcp://127.0.0.1:{p_in}", "--output", f"tcp://127.0.0.1:{p_out}",
           "--workers", str(args.workers), "--threads", str(args.threads), "--log-level", "ERROR"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.bind(f"tcp://127.0.0.1:{p_in}")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, P.RESULT_PREFIX)
    sub.connect(f"tcp://127.0.0.1:{p_out}")
    log = tempfile.NamedTemporaryFile("w+", prefix="soak-serve-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stderr=log, text=True)
    try:
        start = time.monotonic()
        while "ready" not in Path(log.name).read_text():
            if proc.poll() is not None or time.monotonic() - start > 120:
                raise SystemExit(f"serve did not start: {Path(log.name).read_text()}")
            time.sleep(0.2)
        time.sleep(0.5)  # the subscription reaches serve's XPUB
        expected: Counter = Counter()  # (camera, seq) -> 1
        anonymous_sent = 0
        got: Counter = Counter()
        anonymous_got = 0
        verdicts: Counter = Counter()
        codes: Counter = Counter()
        kinds: Counter = Counter()
        rss: list[dict] = [{"frames": 0, "rss_mib": round(_rss_mib(proc.pid), 1)}]
        answered = 0
        seqs = dict.fromkeys(CAMERAS, 0)
        t0 = time.perf_counter()
        latencies = []

        def receive(block_s: float) -> bool:
            nonlocal answered, anonymous_got
            if not sub.poll(int(block_s * 1000)):
                return False
            head, _ = P.decode_result(sub.recv_multipart())
            answered += 1
            verdicts[head["verdict"]] += 1
            if head["error"]:
                codes[head["error"]["code"]] += 1
            if head["seq"] is None or head["camera"] is None:
                anonymous_got += 1
            else:
                got[(head["camera"], head["seq"])] += 1
            if head["verdict"] != "error":
                latencies.append(head["timings_ms"]["total"])
            if answered % args.every == 0:
                rss.append({"frames": answered, "rss_mib": round(_rss_mib(proc.pid), 1),
                            "seconds": round(time.perf_counter() - t0, 1)})
                print(f"  {answered:>6} frames  RSS {rss[-1]['rss_mib']:.1f} MiB  "
                      f"{rss[-1]['seconds']:.0f} s", flush=True)
            return True

        for i in range(args.frames):
            while i - answered >= args.in_flight:
                if not receive(args.timeout):
                    raise SystemExit(f"no result for {args.timeout} s after {answered} of {i} sent")
            camera = CAMERAS[i % len(CAMERAS)]
            seq = seqs[camera]
            seqs[camera] += 1
            k = int(rng.integers(len(pool)))
            image, color = pool[k]
            encoding = ENCODINGS[int(rng.integers(len(ENCODINGS)))]
            if encoding == "jpeg" and image.dtype != np.uint8:
                encoding = "png"
            key = (k, encoding)
            if key not in encoded:
                encoded[key] = P.encode_frame("cam0", 0, image, color=color, encoding=encoding)
            topic, header, payload = encoded[key]
            h = json.loads(header)
            h.update(camera=camera, seq=seq, ts_ns=time.time_ns())
            msg = [P.FRAME_PREFIX + camera.encode(), json.dumps(h).encode(), payload]
            if rng.random() < args.malformed:
                kind = MALFORMED[int(rng.integers(len(MALFORMED)))]
                msg, readable = _malformed(kind, camera, seq, msg)
                kinds[kind] += 1
            else:
                readable = True
            if readable:
                expected[(camera, seq)] += 1
            else:
                anonymous_sent += 1
            push.send_multipart(msg, copy=False)
        deadline = time.monotonic() + args.timeout
        while answered < args.frames and time.monotonic() < deadline:
            receive(1.0)
        while receive(1.0):  # anything extra (a duplicate) still arrives
            pass
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
        push.close()
        sub.close()
        ctx.term()
    missing = sum(1 for k in expected if got[k] == 0)
    duplicates = sum(c - 1 for c in got.values() if c > 1)
    unexpected = sum(c for k, c in got.items() if k not in expected)
    after_first = [r["rss_mib"] for r in rss if r["frames"] >= min(args.every, args.frames)]
    growth = round(after_first[-1] - after_first[0], 1) if len(after_first) > 1 else 0.0
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    report = {"frames_sent": args.frames, "results": answered, "wall_s": round(wall, 1),
              "frames_per_s": round(answered / wall, 1), "missing": missing, "duplicates": duplicates,
              "unexpected": unexpected, "anonymous": {"sent": anonymous_sent, "answered": anonymous_got},
              "dropped_overloaded": codes.get("overloaded", 0), "verdicts": dict(verdicts),
              "errors_by_code": dict(codes), "malformed_sent": dict(kinds),
              "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1),
                             "p99": round(float(np.percentile(lat, 99)), 1)},
              "rss": rss, "rss_growth_after_first_mib": growth,
              "serve_exit": proc.returncode, "bundle": Path(args.bundle).name, "workers": args.workers,
              "threads": args.threads, "cpus": os.cpu_count(), "serve_log": log.name}
    exactly_once = missing == 0 and duplicates == 0 and unexpected == 0 and anonymous_got == anonymous_sent
    print(json.dumps({k: v for k, v in report.items() if k != "rss"}, indent=1))
    print(f"every frame answered exactly once: {exactly_once}; RSS growth after the first "
          f"{args.every} frames: {growth} MiB (target < 50)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if exactly_once and growth < 50 else 1


if __name__ == "__main__":
    sys.exit(main())
