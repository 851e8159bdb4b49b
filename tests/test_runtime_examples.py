"""The integration examples against the demo bundle: ``examples/line_pc_inspector.py`` (the SDK in
a line PC's own loop) and ``examples/plc_bridge.py`` (verdicts → PLC bits, with a real service on
loopback, a publisher restart and a watchdog timeout)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

zmq = pytest.importorskip("zmq")

from edge_runtime import protocol as P  # noqa: E402
from edge_runtime.config import ServiceConfig  # noqa: E402
from edge_runtime.service import Service  # noqa: E402
from sdk.tools.synthetic import make_frames  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _wait(cond, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _wait_file(path, cond, timeout: float = 5.0, what: str = "condition") -> dict:
    """Wait until the bridge's state FILE satisfies ``cond`` (the bridge updates its in-memory
    state first and writes the file just after), and return that state."""
    box: dict = {}

    def check() -> bool:
        try:
            box["s"] = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return bool(cond(box["s"]))

    _wait(check, timeout, what)
    return box["s"]


# -- line PC ------------------------------------------------------------------------------------
def test_line_pc_inspector_runs_and_survives_bad_frames():
    out = subprocess.run([sys.executable, "examples/line_pc_inspector.py", "--count", "6", "--bad-every", "3",
                          "--backend", "ort-cpu", "--threads", "1"], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    frames = [ln for ln in lines if ln.startswith("seq=")]
    assert [ln.split()[0] for ln in frames] == [f"seq={i}" for i in range(6)]
    errors = [ln for ln in frames if "verdict=error" in ln]
    assert len(errors) == 2 and all("uint8 or uint16" in ln for ln in errors)  # frames 2 and 5
    assert "seq=2 " in errors[0] and "seq=5 " in errors[1]
    summary = json.loads(lines[-1].removeprefix("summary "))
    assert summary["frames"] == 6 and summary["error"] == 2 and summary["pass"] + summary["fail"] == 4


def test_line_pc_inspector_folder_matches_the_sdk(tmp_path, demo_bundle):
    from sdk import Inspector
    from sdk.imageio import write_png

    mod = _load("line_pc_inspector")
    frames = make_frames(3, 240, 320, defect_rate=0.5, seed=3)
    folder = tmp_path / "frames"  # not tmp_path itself: the bundle copy there holds PNGs too
    for f in frames:
        write_png(folder / f"{f.name}.png", f.image)
    (folder / "zz_broken.png").write_bytes(b"not a png")
    insp = Inspector(demo_bundle, backend="ort-cpu", threads=1)
    buf = io.StringIO()
    counts = mod.run(insp, mod.acquire_folder(folder), out=buf)
    lines = buf.getvalue().splitlines()
    assert counts["error"] == 1 and sum(counts.values()) == 4
    assert "zz_broken.png verdict=error" in lines[-1] and "not a readable image" in lines[-1]
    for f, line in zip(frames, lines):
        ref = Inspector(demo_bundle, backend="ort-cpu", threads=1).inspect(f.image)
        assert f"frame={f.name}.png verdict={ref.verdict} " in line


# -- PLC bridge --------------------------------------------------------------------------------
class Line:
    """A camera PUB bound here and a service connected to it, on loopback."""

    def __init__(self, bundle: Path) -> None:
        self.bundle = bundle
        self.ctx = zmq.Context()
        self.cam = self.ctx.socket(zmq.PUB)
        self.cam.setsockopt(zmq.LINGER, 0)
        self.cam.bind("tcp://127.0.0.1:*")
        self.frames = [f.image for f in make_frames(2, 160, 200, defect_rate=0.5, seed=5)]
        self.svc = None

    def start(self, output: str = "tcp://127.0.0.1:*") -> str:
        self.svc = Service(ServiceConfig(bundles=[(None, str(self.bundle))],
                                         input=self.cam.getsockopt_string(zmq.LAST_ENDPOINT), output=output,
                                         backend="ort-cpu", threads=1, workers=1)).start()
        return self.svc.endpoints["output"]

    def stop(self) -> None:
        if self.svc is not None:
            self.svc.stop(timeout=5)
            self.svc = None

    def close(self) -> None:
        self.stop()
        self.cam.close(0)
        self.ctx.term()


@pytest.fixture
def line(demo_bundle):
    ln = Line(demo_bundle)
    yield ln
    ln.close()


def _probe_until(line: Line, bridge, n_before: int) -> None:
    """Send malformed probes until the bridge has seen a result (both subscriptions are live)."""
    deadline = time.monotonic() + 8
    while bridge.state["results"] <= n_before:
        assert time.monotonic() < deadline, f"no result reached the bridge: {bridge.events}"
        line.cam.send_multipart([b"frame.probe", b"probe", b""])
        time.sleep(0.1)
    time.sleep(0.3)  # let the other probes' results arrive


def test_plc_bridge_maps_verdicts_survives_a_restart_and_raises_the_watchdog(tmp_path, line):
    mod = _load("plc_bridge")
    endpoint = line.start()
    state_file = tmp_path / "plc" / "state.json"
    bridge = mod.PlcBridge(endpoint, watchdog_s=1.0, state_file=state_file, out=io.StringIO())
    stop = threading.Event()
    t = threading.Thread(target=bridge.run, args=(stop,), daemon=True)
    t.start()
    try:
        _probe_until(line, bridge, 0)
        s = _wait_file(state_file, lambda s: s["results"] >= 1, what="the first result in the file")
        assert (s["ERR"], s["OK"], s["NG"], s["error_code"], s["camera"]) == (1, 0, 0, "bad_header", "probe")
        assert s["link"] == "up"

        # Verdicts → exactly one of OK/NG, TOGGLE flips per result.
        from sdk import Inspector

        insp = Inspector(line.bundle, backend="ort-cpu", threads=1)
        for seq, img in enumerate(line.frames):
            n, toggle = bridge.state["results"], bridge.state["TOGGLE"]
            line.cam.send_multipart(P.encode_frame("cam0", 100 + seq, img))
            s = _wait_file(state_file, lambda s, n=n: s["results"] > n, what="a result")
            want = insp.inspect(img).verdict
            assert s["seq"] == 100 + seq and s["verdict"] == want and s["camera"] == "cam0"
            assert (s["OK"], s["NG"], s["ERR"], s["ALARM"]) == ((1, 0) if want == "pass" else (0, 1)) + (0, 0)
            assert s["TOGGLE"] == toggle ^ 1

        # The publisher goes away: the watchdog raises ALARM and clears OK/NG/ERR.
        line.stop()
        s = _wait_file(state_file, lambda s: s["ALARM"] == 1, 4.0, "the watchdog alarm")
        assert (s["ALARM"], s["OK"], s["NG"], s["ERR"]) == (1, 0, 0, 0) and s["alarms"] == 1
        assert any(e.startswith("alarm watchdog") for e in bridge.events)

        # ... and comes back on the same address: results flow again, ALARM clears.
        line.start(endpoint)
        n = bridge.state["results"]
        _probe_until(line, bridge, n)
        line.cam.send_multipart(P.encode_frame("cam0", 200, line.frames[0]))
        s = _wait_file(state_file, lambda s: s["seq"] == 200, what="a result after the restart")
        assert s["ALARM"] == 0 and s["seq"] == 200 and s["OK"] + s["NG"] == 1
        assert "alarm cleared: results flow again" in bridge.events
        assert any(e.startswith("link down") for e in bridge.events)
        assert not list(state_file.parent.glob(".*.tmp"))  # atomic writes leave no temporaries
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive()


def test_plc_bridge_command_alarms_without_a_publisher(tmp_path):
    """The script on its own: nothing publishes, so the watchdog fires and the state says ALARM."""
    with zmq.Context() as ctx, ctx.socket(zmq.PUB) as pub:  # a bound port nobody publishes on
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        state = tmp_path / "state.json"
        out = subprocess.run([sys.executable, "examples/plc_bridge.py", "--results", f"tcp://127.0.0.1:{port}",
                              "--watchdog", "0.5", "--duration", "1.3", "--state", str(state)], cwd=ROOT,
                             env=ENV, capture_output=True, text=True, timeout=30)
        pub.setsockopt(zmq.LINGER, 0)
    assert out.returncode == 0, out.stdout + out.stderr
    s = json.loads(state.read_text())
    assert s["ALARM"] == 1 and s["OK"] == 0 and s["results"] == 0 and s["reconnects"] >= 1
    assert "alarm watchdog: no result for" in out.stdout
    summary = json.loads(out.stdout.splitlines()[-1].removeprefix("summary "))
    assert summary["alarms"] == 1 and summary["results"] == 0
