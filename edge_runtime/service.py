"""``robis-edge serve``: camera frames in, one result per frame out (docs/protocol.md).

Threads and queues (every queue is bounded)::

    camera ──SUB/PULL──▶ receiver ──▶ WorkQueue (policy latest|queue, --queue-size) ──▶ N workers
                              │ dropped frames: an `overloaded` result                    │ decode,
                              ▼                                                           │ Inspector.inspect,
                         out queue ◀──────────────────────────────────────────────────────┘ mask PNG
                              │
                              ▼
                          publisher ──XPUB (PUB-compatible)──▶ subscribers
                              │ Output.offer (never blocks; each output drops its oldest update)
                              ▼
                          outputs: OPC UA, MQTT, HTTP (edge_runtime/outputs/, a thread each)
    control (REP): health / stats / reload

- The receiver only reads the socket, stamps the arrival time and queues the message: it never
  blocks on the pipeline, so the camera socket is always drained.
- Workers do everything CPU-heavy (JSON validation, PNG/JPEG decoding, tiling, post-processing)
  and call the one shared ``Inspector`` of the frame's bundle; ONNX Runtime releases the GIL, so
  decoding and post-processing of one frame overlap inference of another.
- The publisher owns the output socket. Results may leave out of order when several workers run;
  every result carries its ``camera``/``seq``.
- Each socket is created, bound and connected in :meth:`Service.start` (so that errors surface
  there) and then used by exactly one thread.

This module holds the sockets and threads; the rest has its own module: ``config`` (options),
``bind_policy``, ``bundles`` (load, reload), ``work_queue``, ``stats``, ``state`` (the one snapshot
that ``control``'s replies and ``metrics`` read) and ``logs``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from sdk.errors import InputError

from . import protocol as P
from .bind_policy import check_bind_addresses
from .bundles import LoadedBundle, calibration_json, load_bundles, reload_calibrations
from .config import ServiceConfig, ServiceError
from .control import handle_control
from .logs import RateLimitedLog
from .outputs.base import STALL_S, Picture, Update
from .security import CurveKeyError, apply_server, refusal_log, server_keypair, start_authenticator
from .state import BundleState, ServiceState
from .stats import Stats
from .work_queue import CLOSED, WorkQueue

log = logging.getLogger("robis_edge.serve")


# -- the service ---------------------------------------------------------------------------------
@dataclass
class _Job:
    parts: list
    t_recv: float  # perf_counter at arrival


@dataclass
class _Out:
    parts: list
    verdict: str
    timings: dict | None
    t_recv: float | None
    product: str | None = None  # for the outputs: the product, its verdict rule, the picture
    min_area_px: int | None = None
    picture: Picture | None = None  # references only


class Service:
    """The serve loop. ``start()`` loads bundles, binds sockets and starts the threads; ``stop()``
    drains: frames already received are processed and their results published."""

    def __init__(self, config: ServiceConfig) -> None:
        cfg = config
        cfg.check()
        self.config = cfg
        self.max_payload = int(cfg.max_payload_mb * 1024 * 1024)
        self.stats = Stats()
        self.entries: dict[str, LoadedBundle] = {}
        self.default: str | None = None
        self.work = WorkQueue(cfg.queue_size, cfg.policy)
        self.out: queue.Queue = queue.Queue(maxsize=cfg.queue_size + 2 * cfg.workers + 64)
        self.endpoints: dict[str, str | None] = {}
        self.subscribers = 0
        self._ratelog = RateLimitedLog(log)
        self._stop_input = threading.Event()
        self._stop_publisher = threading.Event()
        self._stop_control = threading.Event()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []
        self._ctx = None
        self._reload_lock = threading.Lock()
        self.recorder = None
        self.outputs: list = []
        self._pictures = False  # an output draws the frames (the HTTP page)
        self._auth = None

    # -- start / stop ----------------------------------------------------------------------
    def start(self) -> Service:
        cfg = self.config
        check_bind_addresses(cfg)
        keypair = self._curve_keys()
        self._load_bundles()
        import zmq

        if cfg.record_dir:
            from .recorder import Recorder

            try:
                self.recorder = Recorder(cfg.record_dir, cfg.record_quota_mb, cfg.record_what,
                                         queue_size=cfg.record_queue, max_payload=self.max_payload)
            except (ValueError, OSError) as exc:
                raise ServiceError(f"--record {cfg.record_dir}: {exc}") from exc
        self._ctx = ctx = zmq.Context()
        if keypair is not None:
            refused_log = refusal_log()

            def refused(text: str) -> None:
                self.stats.incr("auth_refused")
                refused_log(text)

            self._auth = start_authenticator(ctx, cfg.curve_allow, refused)
        socks: list = []
        try:
            inp, out, ctl = self._open_sockets(ctx, keypair, socks)
        except zmq.ZMQError as exc:
            self._abort_start(ctx, socks)
            raise ServiceError(f"cannot open the sockets (input {cfg.input}, output {cfg.output}, "
                               f"control {cfg.control}): {exc}") from exc
        self._threads = [threading.Thread(target=self._receiver, args=(inp,), name="serve-receiver",
                                          daemon=True),
                         threading.Thread(target=self._publisher, args=(out,), name="serve-publisher",
                                          daemon=True)]
        if ctl is not None:
            self._threads.append(threading.Thread(target=self._control, args=(ctl,), name="serve-control",
                                                  daemon=True))
        self._workers = [threading.Thread(target=self._worker, name=f"serve-worker-{i}", daemon=True)
                         for i in range(cfg.workers)]
        try:
            self._start_outputs()
        except ServiceError:
            self._stop_outputs()
            self._abort_start(ctx, socks)
            raise
        for t in self._workers + self._threads:
            t.start()
        log.info("serving %s: input %s (%s), output %s, control %s; %d worker(s), overload policy %s, "
                 "queue %d", ", ".join(self.entries), cfg.input, cfg.input_mode, self.endpoints["output"],
                 self.endpoints.get("control"), cfg.workers, cfg.policy, cfg.queue_size)
        return self

    def _open_sockets(self, ctx, keypair: tuple[bytes, bytes] | None, opened: list) -> tuple:
        """(input, output, control or None), each secured, connected or bound; appended to ``opened``
        as they are created, so that the caller can close them when one fails."""
        import zmq

        cfg = self.config

        def new(kind: int):
            sock = ctx.socket(kind)
            opened.append(sock)
            if keypair is not None:
                apply_server(sock, keypair)
            return sock

        inp = new(zmq.SUB if cfg.input_mode == "sub" else zmq.PULL)
        inp.setsockopt(zmq.RCVHWM, cfg.rcvhwm)
        inp.setsockopt(zmq.LINGER, 0)
        if cfg.input_mode == "sub":
            inp.setsockopt(zmq.SUBSCRIBE, P.FRAME_PREFIX)
        inp.connect(cfg.input)
        self.endpoints["input"] = cfg.input
        out = new(zmq.XPUB)
        out.setsockopt(zmq.XPUB_VERBOSER, 1)
        out.setsockopt(zmq.SNDHWM, 1000)
        out.setsockopt(zmq.LINGER, 2000)
        out.bind(cfg.output)
        self.endpoints["output"] = out.getsockopt_string(zmq.LAST_ENDPOINT)
        ctl = None
        if cfg.control:
            ctl = new(zmq.REP)
            ctl.setsockopt(zmq.LINGER, 0)
            ctl.bind(cfg.control)
            self.endpoints["control"] = ctl.getsockopt_string(zmq.LAST_ENDPOINT)
        return inp, out, ctl

    def _start_outputs(self) -> None:
        """Open and start the outputs asked for (docs/integration.md); their addresses go to
        ``endpoints``."""
        if not (self.config.http_address() or self.config.mqtt or self.config.opcua):
            return
        from .outputs import open_outputs

        for out in open_outputs(self):
            self.outputs.append(out)
            self._pictures |= out.wants_pictures
            out.start()
            self.endpoints[out.name] = out.endpoint
            if out.name == "http":
                self.endpoints["metrics"] = out.url + "metrics"

    def _stop_outputs(self, timeout: float = 2.0) -> None:
        for out in self.outputs:
            try:
                out.stop(timeout)
            except Exception:  # pragma: no cover - stopping the others matters more
                log.exception("output %s did not stop cleanly", out.name)

    def _abort_start(self, ctx, socks: list) -> None:
        """Undo a start that failed half-way: close the sockets, the authenticator and the context."""
        for sock in socks:
            sock.close(0)
        self._stop_auth()
        ctx.term()

    def _curve_keys(self) -> tuple[bytes, bytes] | None:
        cfg = self.config
        try:
            keypair = server_keypair(cfg.curve_secret, cfg.curve_allow)
        except CurveKeyError as exc:
            raise ServiceError(str(exc)) from exc
        if keypair is not None and not cfg.curve_allow:
            log.warning("CURVE without --curve-allow: traffic is encrypted, but any client key is accepted")
        return keypair

    def _stop_auth(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def _load_bundles(self) -> None:
        cfg = self.config
        self.entries = load_bundles(cfg.bundles, cfg.backend, cfg.threads, cfg.mask_scale, cfg.refine,
                                    cfg.streams)
        self.default = next(iter(self.entries))

    def stop(self, timeout: float | None = None) -> bool:
        """Stop reading, finish and publish every frame already received, close. True when drained."""
        if self._stopping:
            return True
        self._stopping = True
        timeout = self.config.drain_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        log.info("stopping: draining %d queued and %d in-flight frame(s)", len(self.work),
                 self.stats.in_flight)
        self._stop_input.set()
        for t in self._threads[:1]:
            t.join(max(0.1, deadline - time.monotonic()))
        self.work.close()
        drained = True
        for t in self._workers:
            t.join(max(0.1, deadline - time.monotonic()))
            drained &= not t.is_alive()
        self._stop_publisher.set()
        self._stop_control.set()
        for t in self._threads[1:]:
            t.join(max(0.5, deadline - time.monotonic()))
            drained &= not t.is_alive()
        if self._ctx is not None and drained:
            self._stop_auth()
            self._ctx.term()
        if self.recorder is not None:
            self.recorder.close(max(1.0, deadline - time.monotonic()))
        self._stop_outputs(max(1.0, deadline - time.monotonic()))
        s = self.stats.snapshot()
        log.info("stopped: %d frame(s) in, %d result(s) out, %d dropped, errors %s", s["frames_in"],
                 s["frames_out"], s["dropped"], {k: v for k, v in s["errors"].items() if v} or "none")
        return drained

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- threads ------------------------------------------------------------------------------
    def _poll_loop(self, sock, stop: threading.Event, on_readable: Callable[[], None], name: str) -> None:
        """Call ``on_readable`` whenever ``sock`` has a message, until ``stop``; then close it."""
        import zmq

        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not stop.is_set():
                if poller.poll(100):
                    on_readable()
        except Exception:  # pragma: no cover - a bug here must not kill the service silently
            log.exception("%s failed", name)
        finally:
            sock.close(0)

    def _receiver(self, sock) -> None:
        import zmq

        def receive() -> None:
            for _ in range(256):  # drain what is there, then look at the stop flag again
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    return
                t_recv = time.perf_counter()
                parts = [f.buffer for f in frames]
                self.stats.incr("frames_in")
                key = bytes(parts[0]) if parts else b""
                for job in self.work.put(_Job(parts, t_recv), key=key):
                    self._overloaded(job)

        self._poll_loop(sock, self._stop_input, receive, "receiver")

    def _overloaded(self, job: _Job) -> None:
        ident = P.peek_ident(job.parts)
        self.stats.incr("dropped")
        wait = (time.perf_counter() - job.t_recv) * 1000.0
        msg = (f"dropped by the overload policy {self.config.policy!r} after {wait:.1f} ms in the queue "
               f"(queue size {self.config.queue_size}, {self.config.workers} worker(s))")
        self._error(ident, "overloaded", msg, None, {"queue_wait": wait}, job.t_recv, block=False, job=job)

    def _worker(self) -> None:
        while True:
            job = self.work.get(timeout=0.5)
            if job is CLOSED:
                return
            if job is None:
                continue
            self.stats.incr("in_flight")
            try:
                self._process(job)
            except Exception:  # pragma: no cover - _process catches everything itself
                log.exception("worker failed on a frame")
            finally:
                self.stats.incr("in_flight", -1)

    def _process(self, job: _Job) -> None:
        t0 = time.perf_counter()
        timings = {"queue_wait": (t0 - job.t_recv) * 1000.0}
        ident: dict | None = None  # read again from the message only when something goes wrong
        model = None
        try:
            header = P.parse_frame_header(job.parts, self.max_payload)
            ident = header.ident()
            entry = self._select(header)
            model = entry.model
            t1 = time.perf_counter()
            image = P.decode_pixels(header, job.parts[2], self.max_payload)
            t2 = time.perf_counter()
            timings["decode"] = (t2 - t1) * 1000.0
            res = entry.inspector.inspect(image, P.pipeline_color(header))
            for k, v in res.timings_ms.items():
                timings["pipeline" if k == "total" else k] = v
            t3 = time.perf_counter()
            mask_png = P.encode_mask_png(res.mask)
            t4 = time.perf_counter()
            timings["encode"] = (t4 - t3) * 1000.0
            timings["total"] = (t4 - job.t_recv) * 1000.0
            h = P.result_header(ident, verdict=res.verdict, score=res.score,
                                regions=[r.to_json() for r in res.regions],
                                mask={"shape": list(res.mask.shape), "encoding": "png",
                                      "scale": res.mask_scale},
                                timings_ms=timings, model=model)
            parts = P.encode_result(h, mask_png)
            out = _Out(parts, res.verdict, timings, job.t_recv)
            if self.outputs:
                out.product, out.min_area_px = entry.product, entry.inspector.verdict_spec.min_area_px
                if self._pictures:
                    out.picture = Picture(image, P.pipeline_color(header), res)
            self._put_out(out)
            if self.recorder is not None:
                self.recorder.offer(res.verdict, parts, image=image, color=P.pipeline_color(header),
                                    frame_parts=job.parts)
        except P.ProtocolError as exc:
            self._error(exc.ident or ident or P.peek_ident(job.parts), exc.code, exc.message, model, timings,
                        job.t_recv, job=job)
        except InputError as exc:
            ident = ident or P.peek_ident(job.parts)
            self._error(ident, "bad_header", f"the pipeline cannot take this frame: {exc}", model, timings,
                        job.t_recv, job=job)
        except Exception as exc:
            ident = ident or P.peek_ident(job.parts)
            log.exception("internal error on camera=%s seq=%s", ident.get("camera"), ident.get("seq"))
            self._error(ident, "internal", f"{type(exc).__name__}: {exc}", model, timings, job.t_recv,
                        job=job)

    def _select(self, header: P.FrameHeader) -> LoadedBundle:
        if header.product is None:
            return self.entries[self.default]
        entry = self.entries.get(header.product)
        if entry is None:
            raise P.ProtocolError("unknown_product", f"product {header.product!r} names no loaded bundle "
                                  f"(loaded: {', '.join(self.entries)})", header.ident())
        return entry

    def _error(self, ident: dict, code: str, message: str, model: dict | None, timings: dict | None,
               t_recv: float | None, block: bool = True, job: _Job | None = None) -> None:
        self.stats.error(code)
        self._ratelog(logging.WARNING, code, "error %s: camera=%s seq=%s: %s", code, ident.get("camera"),
                      ident.get("seq"), message)
        if timings is not None and t_recv is not None:
            timings["total"] = (time.perf_counter() - t_recv) * 1000.0
        parts = P.error_result(ident, code, message, timings_ms=timings, model=model)
        self._put_out(_Out(parts, "error", timings, t_recv), block=block)
        if self.recorder is not None:
            self.recorder.offer("error", parts, frame_parts=job.parts if job is not None else None)

    def _put_out(self, item: _Out, block: bool = True) -> None:
        try:
            if block:
                while True:
                    try:
                        self.out.put(item, timeout=0.5)
                        return
                    except queue.Full:
                        if self._stop_publisher.is_set():
                            raise
            else:
                self.out.put_nowait(item)
        except queue.Full:
            self.stats.incr("results_lost")
            self._ratelog(logging.ERROR, "results_lost", "result of camera=%s lost: the publish queue is "
                          "full", P.peek_ident(item.parts[:1]).get("camera"))

    def _publisher(self, sock) -> None:
        import zmq

        try:
            while True:
                self._read_subscriptions(sock, zmq)
                try:
                    item = self.out.get(timeout=0.05)
                except queue.Empty:
                    if self._stop_publisher.is_set():
                        return
                    continue
                if item.t_recv is not None and item.timings is not None:
                    item.timings["end_to_end"] = (time.perf_counter() - item.t_recv) * 1000.0
                # Counted before sending: a subscriber that got the result sees it in `stats`.
                self.stats.published(item.verdict, item.timings)
                try:
                    sock.send_multipart(item.parts, copy=False)
                except zmq.ZMQError as exc:  # pragma: no cover - XPUB does not block; report anyway
                    log.error("cannot publish a result: %s", exc)
                    self.stats.incr("results_lost")
                if self.outputs:  # after ZeroMQ, never waiting: each output drops its oldest
                    self._offer(item)
        except Exception:  # pragma: no cover
            log.exception("publisher failed")
        finally:
            sock.close()  # LINGER lets queued results leave

    def _offer(self, item: _Out) -> None:
        """Hand a published result to every output; only those that draw get the picture (so a
        stalled MQTT or OPC UA queue never holds frames)."""
        plain = Update(item.parts, item.verdict, time.time(), item.product, item.min_area_px,
                       received=item.t_recv)
        pictured = plain if item.picture is None else replace(plain, picture=item.picture)
        for out in self.outputs:
            out.offer(pictured if out.wants_pictures else plain)

    def _read_subscriptions(self, sock, zmq) -> None:
        while True:
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.subscribers += 1
            elif msg[:1] == b"\x00":
                self.subscribers = max(0, self.subscribers - 1)

    def _control(self, sock) -> None:
        import zmq

        def answer() -> None:
            try:
                raw = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                reply = handle_control(self, raw)
            except Exception as exc:  # a REP socket must always answer
                log.exception("control request failed")
                reply = {"ok": False, "error": f"internal: {type(exc).__name__}: {exc}"}
            sock.send(json.dumps(reply).encode("utf-8"))

        self._poll_loop(sock, self._stop_control, answer, "control")

    # -- state and commands ---------------------------------------------------------------------
    def snapshot(self) -> ServiceState:
        """One copy of the service's state: what ``health``, ``stats`` and ``/metrics`` report."""
        cfg = self.config
        bundles = tuple(BundleState(name, dict(e.model), e.inspector.describe(),
                                    calibration_json(e.inspector.calibration), name == self.default)
                        for name, e in self.entries.items())
        counters = self.stats.counters()
        outputs = {o.name: o.stats() for o in self.outputs}
        return ServiceState(
            status="stopping" if self._stopping else "running", counters=counters,
            queue_depth=len(self.work), queue_capacity=cfg.queue_size, policy=cfg.policy,
            publish_depth=self.out.qsize(), workers=cfg.workers, subscribers=self.subscribers,
            endpoints=dict(self.endpoints), bundles=bundles, default=self.default,
            recording=None if self.recorder is None else self.recorder.stats(), outputs=outputs,
            health=self._health(counters, outputs))

    def _health(self, c, outputs: dict[str, dict]) -> str:
        """``stopping``; ``degraded`` when an output is down or stalled, or frames wait while no
        result came out for STALL_S seconds (a worker stalled); else ``ok``."""
        if self._stopping:
            return "stopping"
        if any(o["stalled"] or not o["connected"] for o in outputs.values()):
            return "degraded"
        waiting = len(self.work) > 0 or c.in_flight > 0
        if waiting and c.taken - (c.last_result or c.started) > STALL_S:
            return "degraded"
        return "ok"

    def reload(self, product: str | None = None) -> dict:
        """Re-read each bundle's calibration (or ``product``'s) and use it from the next frame on."""
        names = list(self.entries) if product is None else [product]
        with self._reload_lock:
            return reload_calibrations(self.entries, names)
