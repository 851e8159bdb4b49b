"""Operations of ``robis-edge serve``: recording (``--record``), Prometheus metrics
(``--metrics-port``) and loopback-only binding (``--allow-remote``). Everything on 127.0.0.1."""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

zmq = pytest.importorskip("zmq")

from edge_runtime import protocol as P  # noqa: E402
from edge_runtime.bind_policy import is_loopback_endpoint  # noqa: E402
from edge_runtime.config import ServiceConfig, ServiceError  # noqa: E402
from edge_runtime.recorder import Recorder, wanted  # noqa: E402
from edge_runtime.service import Service  # noqa: E402
from sdk.tools.synthetic import make_frames  # noqa: E402

FRAMES = [f.image for f in make_frames(2, 160, 200, defect_rate=0.5, seed=5)]


class Rig:
    """Camera PUB (bound here) → service → result SUB, on loopback ephemeral ports."""

    def __init__(self, bundle: Path, **cfg) -> None:
        self.ctx = zmq.Context()
        self.cam = self.ctx.socket(zmq.PUB)
        self.cam.setsockopt(zmq.LINGER, 0)
        self.cam.bind("tcp://127.0.0.1:*")
        self.svc = Service(ServiceConfig(bundles=[(None, str(bundle))],
                                         input=self.cam.getsockopt_string(zmq.LAST_ENDPOINT),
                                         output="tcp://127.0.0.1:*", backend="ort-cpu", threads=1,
                                         **cfg)).start()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(self.svc.endpoints["output"])
        self.sub.setsockopt(zmq.SUBSCRIBE, b"result.")
        deadline = time.monotonic() + 5
        while not self.sub.poll(100):  # probes until both subscriptions are live
            assert time.monotonic() < deadline, "no result from the service"
            self.cam.send_multipart([b"frame.probe", b"probe", b""])
        while self.sub.poll(300):
            self.sub.recv_multipart()

    def results(self, n: int, timeout: float = 8.0) -> list:
        out, deadline = [], time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            if self.sub.poll(100):
                out.append(P.decode_result(self.sub.recv_multipart()))
        assert len(out) == n, f"{len(out)} of {n} results"
        return out

    def close(self) -> None:
        self.svc.stop(timeout=5)
        self.cam.close(0)
        self.sub.close(0)
        self.ctx.term()


@pytest.fixture
def rig(demo_bundle):
    made = []

    def make(**cfg):
        r = Rig(demo_bundle, **cfg)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


# -- recording ---------------------------------------------------------------------------------
def test_record_all_writes_frame_mask_and_header_atomically(rig, tmp_path):
    rec_dir = tmp_path / "rec"
    r = rig(record_dir=str(rec_dir), record_what="all")
    r.cam.send_multipart(P.encode_frame("cam0", 1, FRAMES[0]))
    r.cam.send_multipart(P.encode_frame("cam0", 2, FRAMES[1], encoding="png"))
    bad = P.encode_frame("cam0", 3, FRAMES[0])
    r.cam.send_multipart([bad[0], bad[1], bad[2][:100]])  # size_mismatch
    got = {h["seq"]: h for h, _ in r.results(3)}
    r.svc.stop(timeout=5)  # flushes the recorder
    docs = {}
    for p in rec_dir.glob("*.json"):
        doc = json.loads(p.read_text())
        if doc["result"]["camera"] == "cam0":  # not the handshake's probes
            docs[doc["result"]["seq"]] = (p, doc)
    assert set(docs) == {1, 2, 3}
    for seq in (1, 2):
        path, doc = docs[seq]
        assert doc["result"] == got[seq] and doc["frame_header"]["seq"] == seq
        stem = path.name[:-len(".json")]
        assert stem.endswith(f"_cam0_{seq}_{got[seq]['verdict']}")
        assert doc["files"] == [f"{stem}.frame.png", f"{stem}.mask.png"]
        frame = cv2.imread(str(rec_dir / doc["files"][0]), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(frame, FRAMES[seq - 1])
        mask = cv2.imread(str(rec_dir / doc["files"][1]), cv2.IMREAD_UNCHANGED)
        assert list(mask.shape) == got[seq]["mask"]["shape"]
    path, doc = docs[3]
    assert doc["result"]["error"]["code"] == "size_mismatch" and doc["frame_header"]["seq"] == 3
    assert [f.rsplit(".", 2)[-2:] for f in doc["files"]] == [["frame", "bin"]]
    assert (rec_dir / doc["files"][0]).read_bytes() == bytes(bad[2][:100])
    assert not list(rec_dir.glob(".*"))  # no temporaries left
    stats = r.svc.recorder.stats()
    assert stats["recorded"] >= 4 and stats["dropped"] == 0 and stats["failed"] == 0
    assert stats["bytes"] == sum(p.stat().st_size for p in rec_dir.iterdir())


def test_record_fail_skips_passes(rig, tmp_path):
    r = rig(record_dir=str(tmp_path / "rec"), record_what="error")
    r.cam.send_multipart(P.encode_frame("cam0", 7, FRAMES[0]))
    r.results(1)
    r.svc.stop(timeout=5)  # flushes the recorder
    verdicts = {json.loads(p.read_text())["result"]["verdict"] for p in (tmp_path / "rec").glob("*.json")}
    assert verdicts <= {"error"}  # only the handshake's probes
    assert wanted("fail", "fail") and wanted("fail", "error") and not wanted("fail", "pass")
    assert wanted("error", "error") and not wanted("error", "fail") and wanted("all", "pass")


def _result(seq: int, verdict: str = "fail", mask: bytes = b"") -> list:
    h = P.result_header({"camera": "cam0", "seq": seq, "ts_ns": 0}, verdict=verdict)
    return P.encode_result(h, mask)


def test_record_quota_deletes_the_oldest_records(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "20000101T000000000000_old_1_fail.json").write_bytes(b"{}" * 5000)  # 10 kB, counted
    (tmp_path / ".rec-x.json.tmp").write_bytes(b"partial")  # a crash's leftover: removed
    rec = Recorder(tmp_path, quota_mb=0.1, what="all")
    assert rec.stats()["bytes"] == 10000 and not (tmp_path / ".rec-x.json.tmp").exists()
    for seq in range(12):
        img = rng.integers(0, 255, (100, 100), dtype=np.uint8)  # ~10 kB as PNG, incompressible
        assert rec.offer("fail", _result(seq), image=img, color="gray")
        time.sleep(0.01)  # keep the queue short: this test is about the quota
    rec.close()
    s = rec.stats()
    on_disk = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert on_disk == s["bytes"] <= 0.1 * 1024 * 1024 and s["deleted"] >= 3 and s["recorded"] == 12
    seqs = sorted(json.loads(p.read_text())["result"]["seq"] for p in tmp_path.glob("*.json"))
    assert seqs == list(range(12 - len(seqs), 12))  # the newest survive
    assert not (tmp_path / "20000101T000000000000_old_1_fail.json").exists()


def test_record_offer_never_blocks_and_counts_drops(tmp_path, monkeypatch):
    gate = threading.Event()
    rec = Recorder(tmp_path, what="all", queue_size=2)
    monkeypatch.setattr(rec, "_save", lambda _rec: gate.wait(5))  # a stalled disk
    img = np.zeros((50, 50), np.uint8)
    t0 = time.perf_counter()
    accepted = [rec.offer("fail", _result(i), image=img) for i in range(50)]
    assert time.perf_counter() - t0 < 0.5
    assert sum(accepted) <= 3 and rec.stats()["dropped"] == 50 - sum(accepted)
    gate.set()
    rec.close()


def test_record_bad_options_are_service_errors(demo_bundle, tmp_path):
    (tmp_path / "file").write_text("x")
    for kw in ({"record_dir": str(tmp_path / "file")}, {"record_dir": str(tmp_path), "record_what": "x"}):
        with pytest.raises(ServiceError, match="--record"):
            Service(ServiceConfig(bundles=[(None, str(demo_bundle))], input="tcp://127.0.0.1:1",
                                  output="tcp://127.0.0.1:*", backend="ort-cpu", **kw)).start()


# -- metrics -----------------------------------------------------------------------------------
def _scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.headers["Content-Type"], resp.read().decode("utf-8")


def _metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in metrics")


def test_metrics_endpoint_serves_prometheus_text(rig):
    r = rig(metrics_port=0)
    url = r.svc.endpoints["metrics"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    for seq in range(3):
        r.cam.send_multipart(P.encode_frame("cam0", seq, FRAMES[seq % 2]))
    r.cam.send_multipart([b"frame.cam0", b"{}", b"x"])
    r.results(4)
    ctype, text = _scrape(url)
    assert ctype.startswith("text/plain; version=0.0.4")
    s = r.svc.stats.snapshot()
    assert _metric(text, "robis_edge_frames_in_total") == s["frames_in"]
    assert _metric(text, "robis_edge_frames_out_total") == s["frames_out"] >= 4
    assert _metric(text, 'robis_edge_errors_total{code="bad_header"}') == s["errors"]["bad_header"] >= 2
    assert _metric(text, 'robis_edge_errors_total{code="overloaded"}') == 0
    passes, fails = (_metric(text, f'robis_edge_results_total{{verdict="{v}"}}') for v in ("pass", "fail"))
    assert passes + fails == 3
    assert _metric(text, "robis_edge_dropped_total") == 0 and _metric(text, "robis_edge_queue_depth") == 0
    assert "# TYPE robis_edge_latency_seconds summary" in text
    assert _metric(text, 'robis_edge_latency_seconds_count{stage="total"}') == 3
    p50 = _metric(text, 'robis_edge_latency_seconds{stage="total",quantile="0.5"}')
    p99 = _metric(text, 'robis_edge_latency_seconds{stage="total",quantile="0.99"}')
    total = _metric(text, 'robis_edge_latency_seconds_sum{stage="total"}')
    assert 0 < p50 <= p99 < 10 and p50 < total
    assert 'robis_edge_bundle_info{product="demo-surface"' in text
    for line in text.splitlines():  # every sample line: name{labels} value
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])
            assert line.startswith("robis_edge_")
    with pytest.raises(urllib.error.HTTPError) as exc:
        _scrape(url.replace("/metrics", "/other"))
    assert exc.value.code == 404
    r.svc.stop(timeout=5)
    with pytest.raises(urllib.error.URLError):
        _scrape(url)


# -- loopback by default -----------------------------------------------------------------------
def test_loopback_endpoints():
    for a in ("tcp://127.0.0.1:5556", "tcp://127.0.0.1:*", "tcp://localhost:1", "tcp://[::1]:5",
              "tcp://127.1.2.3:9", "ipc:///tmp/x", "inproc://x"):
        assert is_loopback_endpoint(a), a
    for a in ("tcp://0.0.0.0:5556", "tcp://*:5556", "tcp://192.168.1.10:1", "tcp://eth0:5", "tcp://[::]:5",
              "udp://127.0.0.1:1"):
        assert not is_loopback_endpoint(a), a


@pytest.mark.parametrize("kw", [{"output": "tcp://0.0.0.0:0"}, {"control": "tcp://*:0"},
                                {"metrics_port": 0, "metrics_host": "0.0.0.0"}])
def test_non_loopback_bind_is_refused_without_allow_remote(kw, demo_bundle):
    cfg = {"output": "tcp://127.0.0.1:*", **kw}
    with pytest.raises(ServiceError, match="--allow-remote"):  # refused before anything is bound
        Service(ServiceConfig(bundles=[(None, str(demo_bundle))], input="tcp://127.0.0.1:1",
                              backend="ort-cpu", **cfg)).start()


def test_serve_defaults_are_loopback():
    from edge_runtime import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--bundle", "b"])
    assert args.input == "tcp://127.0.0.1:5555" and args.output == "tcp://127.0.0.1:5556"
    assert args.metrics_host == "127.0.0.1" and not args.allow_remote and args.metrics_port is None
    assert parser.parse_args(["camera", "--synthetic"]).output == "tcp://127.0.0.1:5555"
