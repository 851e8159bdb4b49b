"""``robis-edge serve`` against a running service on loopback (127.0.0.1, ephemeral ports):
results, products, bad input, overload, control, memory, signals."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

zmq = pytest.importorskip("zmq")

from edge_runtime import protocol as P  # noqa: E402
from edge_runtime.config import ServiceConfig, ServiceError, parse_bundle_spec  # noqa: E402
from edge_runtime.service import Service  # noqa: E402
from sdk.tools.synthetic import make_frames  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "tcp://127.0.0.1:*"
FRAMES = [f.image for f in make_frames(2, 160, 200, defect_rate=0.5, seed=5)]


class Harness:
    """A camera PUB socket (bound here), the service (connected to it), a result subscriber and a
    control client. ``handshake()`` proves both subscriptions are live before a test sends."""

    def __init__(self, bundles, **cfg) -> None:
        self.ctx = zmq.Context()
        self.cam = self.ctx.socket(zmq.PUB)
        self.cam.setsockopt(zmq.LINGER, 0)
        self.cam.bind(LOOPBACK)
        mode = cfg.pop("input_mode", "sub")
        if mode == "pull":
            self.cam.close(0)
            self.cam = self.ctx.socket(zmq.PUSH)
            self.cam.setsockopt(zmq.LINGER, 0)
            self.cam.bind(LOOPBACK)
        endpoint = self.cam.getsockopt_string(zmq.LAST_ENDPOINT)
        cfg.setdefault("threads", 1)
        self.svc = Service(ServiceConfig(bundles=bundles, input=endpoint, output=LOOPBACK, control=LOOPBACK,
                                         input_mode=mode, backend="ort-cpu", **cfg)).start()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 100000)
        self.sub.connect(self.svc.endpoints["output"])
        self.sub.setsockopt(zmq.SUBSCRIBE, b"result.")
        self.req = self.ctx.socket(zmq.REQ)
        self.req.setsockopt(zmq.LINGER, 0)
        self.req.setsockopt(zmq.RCVTIMEO, 5000)
        self.req.connect(self.svc.endpoints["control"])
        self.handshake()

    def handshake(self) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            self.send([b"frame.probe", b"probe", b""])  # answered with a bad_header result
            if self.sub.poll(100):
                break
        else:
            raise AssertionError("no result from the service within 5 s")
        while self.sub.poll(300):  # swallow the other probes' results
            self.sub.recv_multipart()

    def send(self, parts) -> None:
        self.cam.send_multipart(parts)

    def recv(self, timeout: float = 5.0):
        assert self.sub.poll(int(timeout * 1000)), "no result in time"
        return P.decode_result(self.sub.recv_multipart())

    def recv_n(self, n: int, timeout: float = 8.0) -> list:
        out, deadline = [], time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            if self.sub.poll(100):
                out.append(P.decode_result(self.sub.recv_multipart()))
        return out

    def control(self, req) -> dict:
        self.req.send(req if isinstance(req, bytes) else json.dumps(req).encode())
        return json.loads(self.req.recv())

    def frame(self, seq: int, i: int = 0, camera: str = "cam0", **kw):
        return P.encode_frame(camera, seq, FRAMES[i % len(FRAMES)], **kw)

    def close(self) -> None:
        self.svc.stop()
        for s in (self.cam, self.sub, self.req):
            s.close(0)
        self.ctx.term()


@pytest.fixture
def harness(demo_bundle):
    made = []

    def make(bundles=None, **cfg):
        h = Harness(bundles or [(None, str(demo_bundle))], **cfg)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_frames_get_results_with_mask_timings_and_model(harness):
    h = harness()
    encs = ["raw", "png", "jpeg"]
    for seq, enc in enumerate(encs):
        h.send(h.frame(seq, seq, encoding=enc))
    results = sorted(h.recv_n(3), key=lambda r: r[0]["seq"])
    assert [r[0]["seq"] for r in results] == [0, 1, 2]
    for head, mask in results:
        assert head["error"] is None and head["verdict"] in ("pass", "fail")
        assert head["camera"] == "cam0" and isinstance(head["ts_ns"], int)
        assert head["mask"]["encoding"] == "png" and head["mask"]["scale"] == 0.25
        assert list(mask.shape) == head["mask"]["shape"] == [40, 50]
        assert set(np.unique(mask)) <= {0, 255}
        stages = {"decode", "queue_wait", "preprocess", "infer", "merge", "binarize", "total"}
        assert stages <= set(head["timings_ms"])
        assert head["model"] == {"bundle": "demo-surface", "hash": "7b2433e65525"}
        assert isinstance(head["score"], float)
        for r in head["regions"]:
            assert set(r) == {"bbox", "area_px", "max", "mean"}
    # The same frame, raw or PNG, gives the same answer as the SDK would.
    from sdk import Inspector

    ref = Inspector(h.svc.entries["demo-surface"].root, backend="ort-cpu").inspect(FRAMES[1], "gray")
    assert results[1][0]["verdict"] == ref.verdict
    np.testing.assert_array_equal(results[1][1], ref.mask)


def test_products_choose_the_bundle(harness, demo_bundle, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(demo_bundle, other)
    h = harness([("top", str(demo_bundle)), ("bottom", str(other))])
    h.send(h.frame(0))  # no product: the first bundle
    h.send(h.frame(1, product="bottom"))
    h.send(h.frame(2, product="top"))
    h.send(h.frame(3, product="nope"))
    res = {r[0]["seq"]: r[0] for r in h.recv_n(4)}
    assert res[0]["error"] is None and res[1]["error"] is None and res[2]["error"] is None
    assert res[3]["verdict"] == "error" and res[3]["error"]["code"] == "unknown_product"
    assert "top" in res[3]["error"]["message"] and res[3]["camera"] == "cam0" and res[3]["seq"] == 3
    stats = h.control({"cmd": "stats"})
    assert set(stats["bundles"]) == {"top", "bottom"} and stats["bundles"]["top"]["default"]
    assert stats["bundles"]["bottom"]["provider"] == "CPUExecutionProvider"


def test_unknown_product_with_one_bundle_and_duplicate_names(harness, demo_bundle):
    h = harness()
    h.send(h.frame(0, product="demo-surface"))
    h.send(h.frame(1, product="other"))
    res = {r[0]["seq"]: r[0] for r in h.recv_n(2)}
    assert res[0]["error"] is None
    assert res[1]["error"]["code"] == "unknown_product"
    with pytest.raises(ServiceError, match="two bundles"):
        Service(ServiceConfig([(None, str(demo_bundle)), (None, str(demo_bundle))], input="tcp://127.0.0.1:1",
                              output=LOOPBACK, backend="ort-cpu")).start()
    assert parse_bundle_spec("a=b/c") == ("a", "b/c") and parse_bundle_spec("b/c") == (None, "b/c")
    with pytest.raises(ServiceError):
        parse_bundle_spec("bad name=x")


def _bad_messages():
    """(message, code, readable seq) for every kind of bad input."""
    good = P.encode_frame("cam0", 11, FRAMES[0], ts_ns=5)
    hdr = json.loads(good[1])
    png = P.encode_frame("cam0", 17, FRAMES[0], encoding="png")

    def with_header(seq, **kw):
        d = dict(hdr, seq=seq, **kw)
        return json.dumps({k: v for k, v in d.items() if v is not None}).encode()

    big = dict(hdr, seq=16, shape=[4000, 4000])
    return [
        ([b"frame.cam0", with_header(10)], "bad_header", 10),  # 2 parts
        ([b"frame.cam0", with_header(11), good[2], b"extra"], "bad_header", 11),  # 4 parts
        ([b"frame.cam0", b"not json", good[2]], "bad_header", None),
        ([b"frame.cam0", with_header("12"), good[2]], "bad_header", None),
        ([b"frame.cam0", with_header(13, encoding="bmp"), good[2]], "unsupported_encoding", 13),
        ([b"frame.cam0", with_header(14), good[2][:-1]], "size_mismatch", 14),  # truncated
        ([b"frame.cam0", with_header(15), good[2] + b"\0"], "size_mismatch", 15),  # too long
        ([b"frame.cam0", json.dumps(big).encode(), b"\0" * (4000 * 4000)], "size_mismatch", 16),  # > limit
        ([b"frame.cam0", with_header(17, encoding="png"), png[2][:100]], "decode_failed", 17),
        ([b"frame.cam0", with_header(18, encoding="jpeg"), b"\xff\xd8\xff" + b"\0" * 50], "decode_failed",
         18),
        ([b"frame.cam0", with_header(19, shape=[160, 199]), good[2]], "size_mismatch", 19),
        ([b"frame.cam0", with_header(20, dtype="uint16"), good[2]], "size_mismatch", 20),
        ([b"frame.cam0", with_header(21, product="ghost"), good[2]], "unknown_product", 21),
    ]


def test_each_bad_input_yields_an_error_result_and_the_service_goes_on(harness, caplog):
    caplog.set_level(logging.WARNING, logger="robis_edge.serve")
    h = harness(max_payload_mb=8)
    before = h.control({"cmd": "stats"})["errors"]
    cases = _bad_messages()
    expected: dict[str, int] = {}
    for parts, code, seq in cases:
        h.send(parts)
        head, mask = h.recv()
        assert head["verdict"] == "error" and mask is None, (code, head)
        assert head["error"]["code"] == code, (code, head["error"])
        assert head["camera"] == "cam0" and head["seq"] == seq
        assert head["score"] is None and head["mask"] is None and head["regions"] == []
        expected[code] = expected.get(code, 0) + 1
        # the service goes on: a good frame right after is inspected
        h.send(h.frame(1000))
        ok, _ = h.recv()
        assert ok["error"] is None and ok["seq"] == 1000
    after = h.control({"cmd": "stats"})["errors"]
    assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == expected
    logged = " ".join(r.getMessage() for r in caplog.records)
    for code in expected:
        assert f"error {code}" in logged
    assert h.control({"cmd": "health"})["ok"]


def test_memory_stays_flat_over_300_bad_messages(harness):
    h = harness()
    cases = [c[0] for c in _bad_messages() if c[1] != "size_mismatch" or len(c[0][2]) < 1000]

    def burst(n):
        for i in range(n):
            h.send(cases[i % len(cases)])
            h.recv()

    burst(60)  # warm up caches, log rate limiter, zmq buffers
    tracemalloc.start(1)
    try:
        burst(20)
        snap0 = tracemalloc.take_snapshot()
        burst(300)
        snap1 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    filt = [tracemalloc.Filter(True, "*edge_runtime*"), tracemalloc.Filter(True, "*sdk*"),
            tracemalloc.Filter(True, "*zmq*")]
    diff = snap1.filter_traces(filt).compare_to(snap0.filter_traces(filt), "filename")
    grown = sum(s.size_diff for s in diff)
    assert grown < 256 * 1024, grown
    stats = h.control({"cmd": "stats"})
    assert stats["queue"]["depth"] == 0 and stats["queue"]["publish_depth"] == 0


@pytest.mark.parametrize("policy", ["queue", "latest"])
def test_overload_drops_are_answered_counted_and_logged(harness, caplog, policy):
    caplog.set_level(logging.WARNING, logger="robis_edge.serve")
    h = harness(workers=1, queue_size=2, policy=policy)
    big = make_frames(1, 972, 1432, defect_rate=0.0, seed=1)[0].image  # ~10 ms+ per frame
    n = 12
    for seq in range(n):
        h.send(P.encode_frame("cam0", seq, big))
    res = {r[0]["seq"]: r[0] for r in h.recv_n(n, timeout=9)}
    assert sorted(res) == list(range(n)), "every frame gets exactly one result"
    over = [s for s, r in res.items() if r["error"] and r["error"]["code"] == "overloaded"]
    assert over, "a burst of 12 full frames into a queue of 2 must drop some"
    assert res[n - 1]["error"] is None  # the newest frame is never the one dropped
    assert all(res[s]["timings_ms"]["queue_wait"] >= 0 for s in over)
    stats = h.control({"cmd": "stats"})
    assert stats["dropped"] == len(over) == stats["errors"]["overloaded"]
    assert stats["frames_in"] >= n and stats["queue"]["policy"] == policy
    assert any("overloaded" in r.getMessage() for r in caplog.records)


def test_pipeline_failures_are_internal_or_bad_header_and_the_service_goes_on(harness, caplog):
    from sdk.errors import InputError

    h = harness()
    insp = h.svc.entries["demo-surface"].inspector
    real = insp.inspect
    faults = [RuntimeError("boom"), InputError("frame too odd")]

    def flaky(image, color=None):
        if faults:
            raise faults.pop(0)
        return real(image, color)

    insp.inspect = flaky
    for seq in range(3):
        h.send(h.frame(seq))
        head, _ = h.recv()
        assert head["seq"] == seq
        if seq == 0:
            assert head["error"]["code"] == "internal" and "boom" in head["error"]["message"]
            assert head["model"]["bundle"] == "demo-surface"
        elif seq == 1:
            assert head["error"]["code"] == "bad_header" and "too odd" in head["error"]["message"]
        else:
            assert head["error"] is None
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)


def test_pull_mode(harness):
    h = harness(input_mode="pull")
    for seq in range(3):
        h.send(h.frame(seq, seq))
    assert sorted(r[0]["seq"] for r in h.recv_n(3) if r[0]["error"] is None) == [0, 1, 2]


def test_control_health_stats_and_bad_requests(harness):
    h = harness()
    for seq in range(4):
        h.send(h.frame(seq, seq))
    h.recv_n(4)
    health = h.control({"cmd": "health"})
    assert health["ok"] and health["status"] == "running" and health["bundles"] == ["demo-surface"]
    assert health["subscribers"] >= 1
    s = h.control({"cmd": "stats"})
    assert s["frames_out"] >= 4 and s["results"]["pass"] + s["results"]["fail"] == 4
    for stage in ("queue_wait", "decode", "infer", "total", "end_to_end"):
        lat = s["latency_ms"][stage]
        assert lat["n"] == 4 and lat["p99"] >= lat["p50"]
    b = s["bundles"]["demo-surface"]
    assert (b["backend"], b["provider"], b["precision"]) == ("onnxruntime", "CPUExecutionProvider", "fp32")
    assert s["queue"]["capacity"] == 8 and s["in_flight"] == 0
    assert not h.control(b"not json")["ok"]
    assert "unknown cmd" in h.control({"cmd": "dance"})["error"]
    assert not h.control([1, 2])["ok"]
    assert h.control({"cmd": "health"})["ok"]  # REP still in step after bad requests


def test_reload_applies_a_new_calibration(harness, demo_bundle):
    h = harness()
    h.send(h.frame(0, 1))
    first, _ = h.recv()
    meta = demo_bundle / "bundle.json"
    raw = json.loads(meta.read_text())
    raw["calibration"]["ms_mean"] = 0.0  # everything above a tiny mean+3std threshold: huge masks
    raw["calibration"]["ms_std"] = 0.0
    raw["calibration"]["mebin_min_th"] = 0.0
    raw["calibration"]["created"] = "reloaded"
    meta.write_text(json.dumps(raw))
    r = h.control({"cmd": "reload"})
    assert r["ok"] and r["bundles"]["demo-surface"]["changed"]
    assert h.control({"cmd": "stats"})["bundles"]["demo-surface"]["calibration"]["created"] == "reloaded"
    h.send(h.frame(1, 1))
    second, mask = h.recv()
    assert second["error"] is None
    assert (mask > 0).mean() > 0.5 and sum(x["area_px"] for x in second["regions"]) > sum(
        x["area_px"] for x in first["regions"])
    assert not h.control({"cmd": "reload", "product": "ghost"})["ok"]
    (demo_bundle / "model.onnx").write_bytes(b"changed")  # model changed: refuse, keep running
    r = h.control({"cmd": "reload"})
    assert not r["ok"] and "model" in r["bundles"]["demo-surface"]["message"]
    h.send(h.frame(2, 1))
    assert h.recv()[0]["error"] is None


def test_bind_errors_are_service_errors(demo_bundle):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        port = s.getsockname()[1]
        with pytest.raises(ServiceError, match="cannot open"):
            Service(ServiceConfig([(None, str(demo_bundle))], input="tcp://127.0.0.1:1",
                                  output=f"tcp://127.0.0.1:{port}", backend="ort-cpu")).start()
    finally:
        s.close()


# -- signals: the real command in a subprocess -------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_in_flight_frames_and_exits_0(demo_bundle, sig):
    ctx = zmq.Context()
    cam = ctx.socket(zmq.XPUB)
    cam.setsockopt(zmq.LINGER, 0)
    cam.bind(LOOPBACK)
    out_port, ctl_port = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "edge_runtime.commands", "serve", "--bundle", str(demo_bundle),
           "--input", cam.getsockopt_string(zmq.LAST_ENDPOINT), "--output", f"tcp://127.0.0.1:{out_port}",
           "--control", f"tcp://127.0.0.1:{ctl_port}", "--backend", "ort-cpu", "--threads", "1",
           "--workers", "1", "--queue-size", "16"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    sub = ctx.socket(zmq.SUB)
    req = ctx.socket(zmq.REQ)
    try:
        if not cam.poll(9000):
            proc.kill()
            raise AssertionError("serve did not subscribe: " + proc.communicate()[1].decode())
        cam.recv()
        sub.connect(f"tcp://127.0.0.1:{out_port}")
        sub.setsockopt(zmq.SUBSCRIBE, b"result.")
        req.connect(f"tcp://127.0.0.1:{ctl_port}")
        req.setsockopt(zmq.RCVTIMEO, 3000)
        for _ in range(100):  # wait until our result subscription reached serve
            req.send(b'{"cmd": "health"}')
            if json.loads(req.recv())["subscribers"] >= 1:
                break
            time.sleep(0.02)
        big = make_frames(1, 972, 1432, defect_rate=0.0, seed=2)[0].image
        n = 6
        for seq in range(n):
            cam.send_multipart(P.encode_frame("cam0", seq, big))
        for _ in range(200):  # every frame received by serve, most still queued or in flight
            req.send(b'{"cmd": "stats"}')
            if json.loads(req.recv())["frames_in"] >= n:
                break
            time.sleep(0.01)
        proc.send_signal(sig)
        got = []
        while len(got) < n and sub.poll(8000):
            got.append(P.decode_result(sub.recv_multipart())[0])
        rc = proc.wait(10)
        err = proc.stderr.read().decode()
        assert rc == 0, err
        assert sorted(g["seq"] for g in got) == list(range(n)), err
        assert all(g["error"] is None for g in got)
        assert "stopped: 6 frame(s) in, 6 result(s) out" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for s in (cam, sub, req):
            s.close(0)
        ctx.term()
