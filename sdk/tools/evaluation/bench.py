"""``robis-edge bench``: per-stage latency (p50/p99) and frames/s of a bundle on this host, for given
frame sizes, with the backend and precision in use and a description of the host.

Frames are synthetic (``sdk.tools.synthetic``: textured gray surfaces, half of them with defects) of
each requested size, generated before timing and cycled; each frame goes through
``Inspector.inspect`` (the one pipeline code path) one after the other, after ``warmup``
untimed frames per size. frames/s is the number of timed frames over the wall time of the timed
loop (one stream, no overlap between frames). With ``metrics=True`` the evaluation's metric
accumulation (``PixelMetrics.add`` at full frame resolution against the synthetic ground truth) is
timed too, as the extra row ``evaluate_metrics``; it is not part of ``total``.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from pathlib import Path

import numpy as np

from sdk.errors import InputError
from sdk.timing import progress_bar


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def host_info() -> dict:
    """What this host is: CPU, cores, memory, GPU (when nvidia-smi or a Jetson says), library versions."""
    import cv2
    import onnxruntime

    info: dict = {"node": platform.node(), "platform": platform.platform(), "machine": platform.machine(),
                  "python": platform.python_version(), "cpu_count": os.cpu_count(),
                  "numpy": np.__version__, "opencv": cv2.__version__, "onnxruntime": onnxruntime.__version__,
                  "onnxruntime_providers": onnxruntime.get_available_providers()}
    cpuinfo = _read("/proc/cpuinfo") or ""
    m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    info["cpu"] = m.group(1).strip() if m else (platform.processor() or None)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo") or "", re.M)
    info["memory_gib"] = round(int(mem.group(1)) / 2**20, 1) if mem else None
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    model = _read("/proc/device-tree/model")
    if model:
        info["device_model"] = model.strip("\x00\n ")
    gpus = None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            gpus = [line.strip() for line in out.stdout.strip().splitlines()]
    except (OSError, subprocess.SubprocessError):
        pass
    info["gpus"] = gpus
    from sdk.backends.openvino import openvino_host

    ov = openvino_host()  # never raises; version None without the openvino extra
    info["openvino"] = ov.version
    info["cpu_isas"] = list(ov.isas)
    return info


def _stats(values: list[float]) -> dict:
    a = np.asarray(values, np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "mean": round(float(a.mean()), 3), "max": round(float(a.max()), 3)}


def run_bench(bundle, frame_sizes: list[tuple[int, int]], *, backend: str = "auto", frames: int = 30,
              warmup: int = 3, threads: int | None = None, streams: int | None = None,
              scope: str | None = None, color: str = "gray",
              metrics: bool = False, distinct: int = 4, seed: int = 0, progress: bool = False) -> dict:
    """Time the pipeline on frames of each size, given as (height, width) (``sdk.geometry.parse_frame_size``
    reads ``"WIDTHxHEIGHT"``); returns the JSON-ready result (``format_table`` prints it), whose
    ``frame_size`` is [width, height] as cameras state it."""
    from sdk.bundle import Bundle
    from sdk.inspector import Inspector
    from sdk.tools.synthetic import make_frames

    from .metrics import PixelMetrics

    if not frame_sizes:
        raise InputError("give at least one frame size")
    if frames < 1:
        raise InputError("--frames must be at least 1")
    if warmup < 0:
        raise InputError("--warmup must not be negative")
    if color not in ("gray", "bgr"):
        raise InputError(f"color must be 'gray' or 'bgr', got {color!r}")
    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    if scope is None:
        scope = "calibrated" if b.calibration is not None else "rolling"
    insp = Inspector(b, backend=backend, scope=scope, threads=threads, streams=streams)
    desc = insp.describe()
    desc.pop("scope_reason", None)
    results = []
    for h, w in frame_sizes:
        synth = make_frames(max(1, min(distinct, frames)), h, w, defect_rate=0.5, seed=seed)
        imgs = [f.image for f in synth]
        if color == "bgr":
            import cv2

            imgs = [cv2.cvtColor(im, cv2.COLOR_GRAY2BGR) for im in imgs]
        for i in range(warmup):
            insp.inspect(imgs[i % len(imgs)], color)
        rows: list[dict] = []
        metric_ms: list[float] = []
        pm = PixelMetrics()
        wall = 0.0
        for i in progress_bar(range(frames), frames, progress, desc=f"{w}x{h}", unit="frame"):
            t0 = time.perf_counter()
            r = insp.inspect(imgs[i % len(imgs)], color)
            wall += time.perf_counter() - t0
            rows.append(r.timings_ms)
            if metrics:
                t1 = time.perf_counter()
                pm.add(synth[i % len(synth)].mask, r.anomaly_map, r.mask)
                metric_ms.append((time.perf_counter() - t1) * 1000.0)
        stages = {k: _stats([row[k] for row in rows]) for k in rows[0]}
        if metrics:
            stages["evaluate_metrics"] = _stats(metric_ms)
        plan = insp.plan(h, w)
        results.append({"frame_size": [w, h], "megapixels": round(w * h / 1e6, 2), "tiles": plan.num_tiles,
                        "frames": frames, "fps": round(frames / wall, 3), "latency_ms": stages})
    config = {"frames": frames, "warmup": warmup, "threads": threads, "streams": streams, "color": color,
              "scope": scope, "synthetic_frames_per_size": len(imgs)}
    return {"bundle": desc, "config": config,
            "host": host_info(), "results": results,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def format_table(res: dict) -> str:
    """A human-readable table of ``run_bench``'s result."""
    b, h = res["bundle"], res["host"]
    gpu = f", GPU {'; '.join(h['gpus'])}" if h.get("gpus") else ""
    lines = [f"bundle {b['bundle']} ({b['model_sha256']}) on {b['backend']}/{b['provider']}, precision "
             f"{b['precision']} ({b['reason']}), scope {res['config']['scope']}",
             f"host {h['node']}: {h.get('cpu') or h['machine']}, {h['cpu_count']} cores, "
             f"{h.get('memory_gib')} GiB{gpu}; onnxruntime {h['onnxruntime']}"
             + (f"; openvino {h['openvino']} ({', '.join(h['cpu_isas'])})" if h.get("openvino") else "")]
    for r in res["results"]:
        w, hh = r["frame_size"]
        lines.append("")
        lines.append(f"frame {w}x{hh} ({r['megapixels']} MP, {r['tiles']} tiles), {r['frames']} frames: "
                     f"{r['fps']:.2f} frames/s")
        lines.append(f"  {'stage':<18}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
        for k, s in r["latency_ms"].items():
            lines.append(f"  {k:<18}{s['p50']:>10.2f}{s['p99']:>10.2f}{s['mean']:>10.2f}")
    return "\n".join(lines)
