"""``robis-edge camera`` (simulator), the command definitions, and the streaming demo — on
loopback (127.0.0.1) only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

zmq = pytest.importorskip("zmq")

from edge_runtime import protocol as P  # noqa: E402
from edge_runtime.camera import CameraConfig, CameraSimulator  # noqa: E402
from edge_runtime.config import ServiceConfig  # noqa: E402
from edge_runtime.service import Service  # noqa: E402
from sdk.imageio import write_png  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _collect(sock, n: int, timeout_ms: int = 8000) -> list:
    out = []
    while len(out) < n and sock.poll(timeout_ms):
        out.append(sock.recv_multipart())
    return out


def _serve_camera(cam_cfg: CameraConfig, bundle: Path, n: int, input_mode: str = "sub"):
    """Run a camera simulator into an in-process service; the results and the simulator."""
    cam = CameraSimulator(cam_cfg)
    endpoint = cam.bind()
    svc = Service(ServiceConfig([(None, str(bundle))], input=endpoint, output="tcp://127.0.0.1:*",
                                input_mode=input_mode, backend="ort-cpu", threads=1, queue_size=64)).start()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(svc.endpoints["output"])
    sub.setsockopt(zmq.SUBSCRIBE, b"result.")
    try:
        for _ in range(250):
            if svc.subscribers:
                break
            threading.Event().wait(0.02)
        summary = cam.run()
        got = [P.decode_result(m) for m in _collect(sub, n)]
    finally:
        cam.close()
        svc.stop()
        sub.close(0)
        ctx.term()
    return got, summary


def test_synthetic_camera_into_serve_with_ground_truth(demo_bundle, tmp_path):
    cfg = CameraConfig(output="tcp://127.0.0.1:*", synthetic=True, count=5, pool=3, width=240, height=200,
                       seed=3, defect_rate=0.7, truth=tmp_path / "truth", encoding="png", camera="line1",
                       wait_s=5)
    got, summary = _serve_camera(cfg, demo_bundle, 5)
    assert summary["frames"] == 5
    assert sorted(h["seq"] for h, _ in got) == [0, 1, 2, 3, 4]
    assert all(h["camera"] == "line1" and h["error"] is None for h, _ in got)
    truth = [json.loads(x) for x in (tmp_path / "truth" / "ground_truth.jsonl").read_text().splitlines()]
    assert [t["seq"] for t in truth] == [0, 1, 2, 3, 4]
    assert [t["name"] for t in truth] == ["frame_000", "frame_001", "frame_002", "frame_000", "frame_001"]
    for t in truth:
        assert isinstance(t["defective"], bool) and t["camera"] == "line1"
        assert (tmp_path / "truth" / t["mask"]).is_file()
    assert any(t["defective"] for t in truth)


def test_synthetic_sheet_scene_is_the_product_generator():
    """``scene="sheet"`` yields sdk.tools.synthetic.product's sheet frames (the INP demo bundle's product)
    with their masks; an unknown scene is refused; the CLI offers exactly sdk.tools.synthetic.SCENES."""
    import argparse

    from edge_runtime import commands
    from sdk.tools.synthetic import SCENES
    from sdk.tools.synthetic.product import make_product_frames

    cam = CameraSimulator(CameraConfig(output="x", synthetic=True, scene="sheet", count=3, pool=2,
                                       width=320, height=240, seed=5, defect_rate=0.5))
    got = list(cam.frames())
    want = make_product_frames(2, 240, 320, 0.5, 5, prefix="sheet", style="sheet")
    assert [f.name for f in got] == ["sheet_000", "sheet_001", "sheet_000"]
    for f, w in zip(got, [*want, want[0]]):
        assert f.image.shape == (240, 320) and f.color == "gray"
        assert np.array_equal(f.image, w.image) and np.array_equal(f.mask, w.mask)
        assert f.defective == bool(w.mask.any())
    with pytest.raises(ValueError, match="scene"):
        CameraSimulator(CameraConfig(output="x", synthetic=True, scene="plate"))
    p = argparse.ArgumentParser()
    commands.register(p.add_subparsers(dest="c"))
    assert p.parse_args(["camera", "--synthetic", "--scene", "sheet"]).scene == "sheet"
    camera = next(a for a in p._subparsers._group_actions[0].choices["camera"]._actions
                  if a.dest == "scene")
    assert tuple(camera.choices) == SCENES and camera.default == "surface"


def test_folder_camera_push_pull_and_mvtec_truth(demo_bundle, tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    write_png(src / "good" / "a.png", rng.integers(0, 255, (120, 160), dtype=np.uint8))
    write_png(src / "scratch" / "b.png", rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    (src / "notes.txt").write_text("not an image")
    cfg = CameraConfig(output="tcp://127.0.0.1:*", source=src, count=3, loop=True, mode="push",
                       truth=tmp_path / "truth", encoding="jpeg")
    got, summary = _serve_camera(cfg, demo_bundle, 3, input_mode="pull")
    assert summary["frames"] == 3
    assert sorted(h["seq"] for h, _ in got) == [0, 1, 2] and all(h["error"] is None for h, _ in got)
    truth = [json.loads(x) for x in (tmp_path / "truth" / "ground_truth.jsonl").read_text().splitlines()]
    assert [(t["name"], t["defective"], t["mask"]) for t in truth] == [
        ("good/a", False, None), ("scratch/b", True, None), ("good/a", False, None)]
    with pytest.raises(ValueError):
        CameraSimulator(CameraConfig(output="x", synthetic=True, source=src))


def test_command_definitions_import_only_the_standard_library():
    code = ("import sys, argparse; from edge_runtime import commands; p = argparse.ArgumentParser(); "
            "commands.register(p.add_subparsers(dest='c')); "
            "a = p.parse_args(['serve', '--bundle', 'x', '--bundle', 'p=y', '--input', 'i', "
            "'--output', 'o']); "
            "b = p.parse_args(['camera', '--synthetic', '--output', 'o']); "
            "assert a.bundle == ['x', 'p=y'] and a.overload == 'queue' and b.encoding == 'raw'; "
            "print([m for m in ('zmq', 'numpy', 'cv2', 'onnxruntime') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    helps = subprocess.run([sys.executable, "-m", "edge_runtime.commands", "serve", "--help"], cwd=ROOT,
                           env=ENV, capture_output=True, text=True, timeout=30)
    assert helps.returncode == 0 and "--overload" in helps.stdout and "--max-payload-mb" in helps.stdout


def test_camera_command_publishes_the_protocol(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"frame.")
    sub.connect(f"tcp://127.0.0.1:{port}")
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.commands", "camera", "--synthetic",
                             "--count", "3", "--width", "64", "--height", "48", "--output", f"tcp://127.0.0.1:{port}",
                             "--truth", str(tmp_path), "--product", "p1", "--camera", "c7", "--wait", "8"],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        msgs = _collect(sub, 3, 9000)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close(0)
        ctx.term()
    assert proc.returncode == 0, err
    assert "sent 3 frame(s)" in out
    assert len(msgs) == 3
    for seq, m in enumerate(msgs):
        h = P.parse_frame_header(m)
        assert (h.camera, h.seq, h.product, h.encoding, h.shape) == ("c7", seq, "p1", "raw", (48, 64))
        assert P.decode_pixels(h, m[2]).shape == (48, 64)
    assert len((tmp_path / "ground_truth.jsonl").read_text().splitlines()) == 3


def test_streaming_demo_runs_end_to_end(tmp_path):
    out = subprocess.run([sys.executable, "examples/demo_stream.py", "--frames", "6", "--width", "480",
                          "--height", "360", "--out", str(tmp_path)], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "frames 6/6" in out.stdout and "recall" in out.stdout and "frames/s" in out.stdout
    assert len(list((tmp_path / "overlays").glob("*.png"))) == 6
