"""HTTP output of ``serve`` (``--http HOST:PORT``; ``--metrics-port`` is an alias): the operators'
page ``/``, ``/api/stats``, ``/api/cameras``, ``/api/cameras/<camera>/latest.jpg`` and ``/metrics``.

The standard library's threading HTTP server answers requests on threads of this output. The
output's own thread only keeps the latest update of each camera; the overlay JPEG of a camera is
rendered from it when a browser first asks for that result (once per result, cached by ``seq``),
never on a worker. A slow browser holds one request thread, nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from ..config import ServiceError
from .base import NewestPerCamera, Output, Update

log = logging.getLogger("robis_edge.http")

JPEG_QUALITY = 85


def parse_http_address(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; port 0: any free port) → (host, port)."""
    host, sep, port = addr.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ServiceError(f"--http {addr!r}: expected HOST:PORT (for example 127.0.0.1:8080)")
    return host, int(port)


class _Latest:
    """The latest update of one camera and, once asked for, its overlay JPEG."""

    def __init__(self) -> None:
        self.update: Update | None = None  # latest result of any verdict
        self.pictured: Update | None = None  # latest result with a picture (not an error)
        self.jpeg: tuple[int, bytes] | None = None  # (seq, JPEG) rendered from ``pictured``
        self.lock = threading.Lock()


def overlay_jpeg(update: Update) -> bytes:
    """The overlay of an inspected frame (sdk.overlay.render_overlay) as JPEG."""
    import cv2
    import numpy as np

    from sdk.overlay import render_overlay
    from sdk.preprocess import prepare_frame

    d = update.picture
    frame = prepare_frame(d.image, d.color)
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    ok, buf = cv2.imencode(".jpg", render_overlay(frame, d.result), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover - OpenCV always encodes a BGR uint8 image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


class HttpOutput(Output):
    """The HTTP server; ``stats()`` is the control socket's ``stats`` reply, ``metrics()`` the
    Prometheus text."""

    name = "http"
    wants_pictures = True

    def __init__(self, host: str, port: int, stats: Callable[[], dict], metrics: Callable[[], str],
                 queue_size: int = 64) -> None:
        super().__init__(queue_size)
        self._stats_reply, self._metrics_text = stats, metrics
        self._cameras: dict[str, _Latest] = {}
        self._newest = NewestPerCamera()  # the page never steps back to an older frame
        self._lock = threading.Lock()
        self.renders = 0
        handler = self._handler_class()
        server_cls = ThreadingHTTPServer
        if ":" in host:  # an IPv6 address such as ::1
            server_cls = type("ThreadingHTTPServerV6", (ThreadingHTTPServer,),
                              {"address_family": socket.AF_INET6})
        try:
            self._httpd = server_cls((host, port), handler)
        except OSError as exc:
            raise ServiceError(f"cannot serve HTTP on {host}:{port}: {exc}") from exc
        self._httpd.daemon_threads = True
        h, p = self._httpd.server_address[:2]
        self.url = f"http://{h if ':' not in h else f'[{h}]'}:{p}/"
        self.endpoint = self.url
        self._server_thread = threading.Thread(target=self._httpd.serve_forever,
                                               kwargs={"poll_interval": 0.2}, name="serve-output-http-server",
                                               daemon=True)

    def open(self) -> None:
        self._server_thread.start()
        log.info("HTTP on %s (page /, /api/stats, /metrics)", self.url)

    def close(self) -> None:
        if self._server_thread.is_alive():  # shutdown() waits for serve_forever: only when it runs
            self._httpd.shutdown()
            self._server_thread.join(2)
        self._httpd.server_close()

    def connected(self) -> bool:
        return self._server_thread.is_alive()

    def extra_stats(self) -> dict:
        return {"cameras": len(self._cameras), "overlays_rendered": self.renders}

    # -- the output's thread: keep the latest ----------------------------------------------------
    def handle(self, update: Update) -> None:
        camera = update.camera
        if not camera or not self._newest.take(camera, update):
            self.count("sent")
            return
        with self._lock:
            latest = self._cameras.setdefault(camera, _Latest())
        with latest.lock:
            latest.update = update
            if update.picture is not None:
                latest.pictured = update
        self.count("sent")

    # -- what the request threads read -------------------------------------------------------------
    def cameras(self) -> dict[str, dict]:
        """``/api/cameras``: per camera the latest result's verdict, score, seq, product, error code,
        counted regions and latency, and the seq of the overlay ``latest.jpg`` shows."""
        with self._lock:
            items = list(self._cameras.items())
        out = {}
        for cam, latest in items:
            with latest.lock:
                u, pic = latest.update, latest.pictured
            h = u.header
            out[cam] = {"verdict": u.verdict, "score": h.get("score"), "seq": h.get("seq"),
                        "product": u.product, "error_code": (h.get("error") or {}).get("code"),
                        "regions": u.counted_regions(), "latency_ms": round(u.latency_ms(), 3),
                        "published": u.published,
                        "overlay_seq": None if pic is None else pic.header.get("seq")}
        return out

    def jpeg(self, camera: str) -> bytes | None:
        with self._lock:
            latest = self._cameras.get(camera)
        if latest is None:
            return None
        with latest.lock:  # one render per result, whatever the number of browsers
            pic = latest.pictured
            if pic is None:
                return None
            seq = pic.header.get("seq")
            if latest.jpeg is None or latest.jpeg[0] != seq:
                latest.jpeg = (seq, overlay_jpeg(pic))
                self.renders += 1
            return latest.jpeg[1]

    def _handler_class(self):
        output = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "robis-edge"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                url = urlsplit(self.path)
                path = url.path
                try:
                    if path == "/":
                        from .page import render_body, render_page

                        stats, cams = output._stats_reply(), output.cameras()
                        render = render_body if url.query == "part=body" else render_page
                        body = render(stats, cams)
                        self._send(200, "text/html; charset=utf-8", body.encode("utf-8"))
                    elif path == "/api/stats":
                        self._json(output._stats_reply())
                    elif path == "/api/cameras":
                        self._json(output.cameras())
                    elif path == "/metrics":
                        from ..metrics import CONTENT_TYPE

                        self._send(200, CONTENT_TYPE, output._metrics_text().encode("utf-8"))
                    elif path.startswith("/api/cameras/") and path.endswith("/latest.jpg"):
                        camera = unquote(path[len("/api/cameras/"):-len("/latest.jpg")])
                        data = output.jpeg(camera)
                        if data is None:
                            self.send_error(404, f"no overlay of camera {camera!r} yet")
                        else:
                            self._send(200, "image/jpeg", data)
                    else:
                        self.send_error(404, "served here: /, /api/stats, /api/cameras, "
                                        "/api/cameras/<camera>/latest.jpg, /metrics")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the browser went away
                except Exception as exc:  # a request must not kill the server
                    log.exception("HTTP %s failed", path)
                    with contextlib.suppress(OSError):
                        self.send_error(500, f"{type(exc).__name__}: {exc}")

            def _json(self, obj) -> None:
                self._send(200, "application/json", json.dumps(obj).encode("utf-8"))

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args) -> None:
                log.debug("%s %s", self.address_string(), fmt % args)

        return Handler
