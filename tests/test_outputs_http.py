"""serve --http on loopback: /api/stats (the control socket's stats), /api/cameras, the overlay
JPEG, /metrics with the outputs' counters, a stalled browser that does not delay ZeroMQ, and the
operators' page in headless Chromium (screenshot checked, values on the page equal the JSON)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest

pytest.importorskip("zmq")

from outputs_peers import wait_for  # noqa: E402
from test_runtime_service import FRAMES, Harness  # noqa: E402

from edge_runtime.outputs.base import Output, Update  # noqa: E402
from edge_runtime.outputs.http import HttpOutput  # noqa: E402


@pytest.fixture
def rig(demo_bundle):
    made = []

    def make(**cfg):
        h = Harness([(None, str(demo_bundle))], **cfg)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def get(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.headers["Content-Type"], r.read()


def _stream(h, n: int = 6) -> dict:
    """Send n frames of cam0 and cam1; the last ZeroMQ result per camera."""
    for seq in range(n):
        for cam in ("cam0", "cam1"):
            h.send(h.frame(seq, seq, camera=cam))
    got = h.recv_n(2 * n)
    assert len(got) == 2 * n
    last = {}
    for head, _ in got:  # in ZeroMQ order: with 2 workers results may leave out of seq order
        last[head["camera"]] = head
    return last


def test_api_jpeg_and_metrics(rig):
    h = rig(http="127.0.0.1:0", queue_size=32)
    base = h.svc.endpoints["http"]
    assert base.startswith("http://127.0.0.1:") and h.svc.endpoints["metrics"] == base + "metrics"
    last = _stream(h)
    def cam1_seq():
        return json.loads(get(base + "api/cameras")[1]).get("cam1", {}).get("seq")

    wait_for(lambda: cam1_seq() == last["cam1"]["seq"], what="latest results on /api/cameras")
    ctype, body = get(base + "api/stats")
    assert ctype == "application/json"
    api = json.loads(body)
    ctl = h.control({"cmd": "stats"})
    for k in ("frames_in", "frames_out", "results", "errors", "dropped", "bundles", "health"):
        assert api[k] == ctl[k], k
    assert api["outputs"]["http"]["connected"] is True and api["outputs"]["http"]["dropped"] == 0
    cams = json.loads(get(base + "api/cameras")[1])
    for cam in ("cam0", "cam1"):
        c, head = cams[cam], last[cam]
        assert (c["verdict"], c["score"], c["seq"], c["product"]) == (head["verdict"], head["score"],
                                                                    head["seq"], "demo-surface")
        assert c["overlay_seq"] == head["seq"]
    ctype, jpg = get(base + "api/cameras/cam0/latest.jpg")
    assert ctype == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (*FRAMES[0].shape[:2], 3) and img.std() > 5
    get(base + "api/cameras/cam0/latest.jpg")  # asked again: the same result is not rendered again
    assert h.control({"cmd": "stats"})["outputs"]["http"]["overlays_rendered"] == 1
    for bad in ("api/cameras/nope/latest.jpg", "other"):
        with pytest.raises(urllib.error.HTTPError) as exc:
            get(base + bad)
        assert exc.value.code == 404
    ctype, text = get(base + "metrics")
    text = text.decode()
    assert ctype.startswith("text/plain; version=0.0.4")
    assert 'robis_edge_output_connected{output="http"} 1' in text
    assert 'robis_edge_output_dropped_total{output="http"} 0' in text
    assert "robis_edge_health 1" in text


def test_a_stalled_browser_does_not_delay_zeromq(rig):
    h = rig(http="127.0.0.1:0", queue_size=32)
    host, port = h.svc.endpoints["http"][len("http://"):].rstrip("/").rsplit(":", 1)
    stalled = []
    for _ in range(4):  # browsers that open a request and never finish it, nor read
        s = socket.create_connection((host, int(port)))
        s.sendall(b"GET /api/cameras/cam0/latest.jpg HTTP/1.1\r\nHost: x\r\n")
        stalled.append(s)
    try:
        for seq in range(8):
            h.send(h.frame(seq, seq))
        assert sorted(r[0]["seq"] for r in h.recv_n(8)) == list(range(8))
        assert json.loads(get(h.svc.endpoints["http"] + "api/stats")[1])["frames_out"] >= 8
    finally:
        for s in stalled:
            s.close()


def test_an_older_frame_published_after_a_newer_one_does_not_replace_it():
    """Results of several workers can leave out of order; the page (and the OPC UA nodes, same
    rule) keep each camera's newest frame by arrival, so a camera restarting its seq is newer."""
    out = HttpOutput("127.0.0.1", 0, dict, str)

    def update(seq, received, camera="c"):
        head = json.dumps({"camera": camera, "seq": seq}).encode()
        return Update([b"result." + camera.encode(), head, b""], "pass", 0.0, received=received)

    for u in (update(5, 10.0), update(4, 9.0), update(7, 11.0, "d"), update(0, 12.0), update(3, 11.5)):
        out.handle(u)
    cams = out.cameras()
    assert cams["c"]["seq"] == 0 and cams["d"]["seq"] == 7  # 4 and 3 came late; 0 is a restart
    assert out.stats()["sent"] == 5


def test_a_full_output_queue_drops_the_oldest_and_counts():
    import threading

    gate, entered = threading.Event(), threading.Event()
    seen = []

    class Blocked(Output):  # an output whose peer does not take anything until `gate`
        name = "blocked"

        def handle(self, update):
            entered.set()
            gate.wait(10)
            seen.append(update.header["seq"])

    out = Blocked(queue_size=3).start()
    try:
        def update(seq):
            return Update([b"result.c", json.dumps({"camera": "c", "seq": seq}).encode(), b""], "pass", 0.0)

        out.offer(update(0))
        assert entered.wait(5)
        for seq in range(1, 10):
            out.offer(update(seq))
        s = out.stats()
        # The first update is in handle(); of the nine after it, the three newest wait.
        assert s["offered"] == 10 and s["queued"] == 3 and s["dropped"] == 6
        gate.set()
        wait_for(lambda: len(seen) == 4, what="delivered")
        assert seen == [0, 7, 8, 9]
    finally:
        gate.set()
        out.stop()


class _Values(HTMLParser):
    """data-key → text of the page's values; every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.links: list[str] = []
        self._key = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "data-key" in a:
            self._key = a["data-key"]
        for name in ("src", "href"):
            if name in a:
                self.links.append(a[name])

    def handle_data(self, data):
        if self._key is not None:
            self.values[self._key] = self.values.get(self._key, "") + data

    def handle_endtag(self, tag):
        self._key = None


def _lookup(stats: dict, cams: dict, key: str):
    obj: object = {"cameras": cams, **stats}
    for part in key.split("."):
        obj = obj[part]
    return obj


def _equal(shown: str, value) -> bool:
    if value is None:
        return shown == "–"
    if isinstance(value, bool):
        return shown == str(value)
    if isinstance(value, (int, float)):
        return abs(float(shown) - value) <= 0.5 + 1e-9  # the page rounds scores, latencies, uptime
    return shown == str(value)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium (apt-get install chromium; .ci/run installs it)")


def test_page_in_headless_chromium(rig, tmp_path):
    chromium = _chromium()
    h = rig(http="127.0.0.1:0", queue_size=32)
    base = h.svc.endpoints["http"]
    last = _stream(h)
    h.send([b"frame.cam1", b"{not json", b""])
    h.recv()
    wait_for(lambda: json.loads(get(base + "api/stats")[1])["errors"]["bad_header"] >= 2,
             what="error counted")
    wait_for(lambda: json.loads(get(base + "api/cameras")[1])["cam1"]["verdict"] != "", what="cameras")
    html = get(base)[1].decode()
    page = _Values()
    page.feed(html)
    assert page.links and all(link.startswith("/") for link in page.links)  # nothing external
    assert not re.search(r"(?i)(src|href)\s*=\s*['\"]?(https?:)?//", html) and "@import" not in html
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,900",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=4000"]
    shot = tmp_path / "page.png"  # (docs/operators-page.png is made the same way)
    run = subprocess.run([chromium, *flags, f"--screenshot={shot}", base], capture_output=True, timeout=120)
    assert shot.exists(), run.stderr.decode()[-2000:]
    dom = subprocess.run([chromium, *flags, "--dump-dom", base], capture_output=True, timeout=120)
    stats = json.loads(get(base + "api/stats")[1])
    cams = json.loads(get(base + "api/cameras")[1])
    shown = _Values()
    shown.feed(dom.stdout.decode())
    keys = set(shown.values)
    for must in ("results.pass", "results.fail", "results.error", "errors.bad_header", "latency_ms.total.p50",
                 "latency_ms.total.p99", "bundles.demo-surface.backend", "bundles.demo-surface.precision",
                 "cameras.cam0.verdict", "cameras.cam0.score", "cameras.cam0.seq", "cameras.cam1.verdict",
                 "outputs.http.dropped", "outputs.http.connected", "health"):
        assert must in keys, must
    for key, text in shown.values.items():
        if key.startswith(("uptime_s", "results_per_s", "latency_ms")) or key.endswith(".latency_ms"):
            continue  # change between the page's and this request
        assert _equal(text, _lookup(stats, cams, key)), (key, text, _lookup(stats, cams, key))
    assert shown.values["cameras.cam0.seq"] == str(last["cam0"]["seq"])
    assert shown.values["cameras.cam1.verdict"] == "error"  # the unreadable frame came last on cam1
    png = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert png.shape[:2] == (900, 1280)
    assert png.reshape(-1, 3).std(axis=0).max() > 10  # not a blank page
    dark = np.array([0x1c, 0x18, 0x15])  # the page's background (BGR)
    assert (np.abs(png.astype(int) - dark).sum(axis=2) < 12).mean() > 0.05
    # The overlay of cam0 is drawn: pixels of the heat map's colours are on the screenshot.
    hsv = cv2.cvtColor(png, cv2.COLOR_BGR2HSV)
    assert ((hsv[..., 1] > 120) & (hsv[..., 2] > 120)).mean() > 0.01


def test_a_failing_output_leaves_nothing_bound(demo_bundle):
    """--http is bound first; when --mqtt then fails, serve does not start and the port is free again."""
    from outputs_peers import free_port

    from edge_runtime.config import ServiceConfig, ServiceError
    from edge_runtime.service import Service

    port = free_port()
    cfg = ServiceConfig(bundles=[(None, str(demo_bundle))], input="tcp://127.0.0.1:1",
                        output="tcp://127.0.0.1:*", backend="ort-cpu", http=f"127.0.0.1:{port}",
                        mqtt="mqtt://127.0.0.1:1883", mqtt_prefix="bad/#")
    with pytest.raises(ServiceError, match="--mqtt-prefix"):
        Service(cfg).start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free again
