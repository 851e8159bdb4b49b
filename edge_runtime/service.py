"""``robis-edge serve``: camera frames in, one result per frame out (docs/protocol.md).

Threads and queues (every queue is bounded)::

    camera ──SUB/PULL──▶ receiver ──▶ WorkQueue (policy latest|queue, --queue-size) ──▶ N workers
                              │ dropped frames: an `overloaded` result                    │ decode,
                              ▼                                                           │ Inspector.inspect,
                         out queue ◀──────────────────────────────────────────────────────┘ mask PNG
                              │
                              ▼
                          publisher ──XPUB (PUB-compatible)──▶ subscribers
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
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.errors import InputError, RobisError
from sdk.vocabulary import parse_product_bundle

from . import protocol as P

log = logging.getLogger("robis_edge.serve")

POLICIES = ("latest", "queue")
_CLOSED = object()


class ServiceError(RobisError):
    """The service cannot start as configured (address in use, bad bundle list...)."""

    code = "service"


# -- bounded work queue with an overload policy ------------------------------------------------
class WorkQueue:
    """Frames waiting for a worker. Bounded; ``put`` never blocks and returns what it dropped.

    - ``queue``: FIFO of at most ``maxsize`` frames; when full, the oldest waiting frame is dropped.
    - ``latest``: as ``queue``, and a new frame from a camera (same ``key``) replaces that camera's
      frame still waiting: workers always get the newest picture of each camera.
    """

    def __init__(self, maxsize: int, policy: str) -> None:
        if policy not in POLICIES:
            raise ValueError(f"overload policy must be one of {POLICIES}, got {policy!r}")
        if maxsize < 1:
            raise ValueError("queue size must be at least 1")
        self.maxsize, self.policy = int(maxsize), policy
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any, key: Any = None) -> list:
        dropped = []
        with self._cond:
            if self._closed:
                return [item]
            if self.policy == "latest":
                stale = [(k, it) for k, it in self._items if k == key]
                for entry in stale:
                    self._items.remove(entry)
                    dropped.append(entry[1])
            while len(self._items) >= self.maxsize:
                dropped.append(self._items.popleft()[1])
            self._items.append((key, item))
            self._cond.notify()
        return dropped

    def get(self, timeout: float | None = None) -> Any:
        """The oldest waiting item; None on timeout; ``_CLOSED`` once closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._items:
                return self._items.popleft()[1]
            return _CLOSED if self._closed else None

    def close(self) -> None:
        """No more puts; getters drain what is left, then see ``_CLOSED``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


# -- statistics -----------------------------------------------------------------------------------
class Stats:
    """Counters and latency windows, thread-safe. Percentiles over the last ``window`` frames."""

    STAGES = ("queue_wait", "decode", "preprocess", "infer", "merge", "binarize", "refine", "regions",
              "pipeline", "encode", "total", "end_to_end")

    def __init__(self, window: int = 2048) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.frames_in = 0
        self.frames_out = 0
        self.results = {v: 0 for v in P.VERDICTS}
        self.errors = {c: 0 for c in P.ERROR_CODES}
        self.dropped = 0  # frames dropped by the overload policy (each got an `overloaded` result)
        self.results_lost = 0  # results that could not even be queued for publishing
        self.in_flight = 0
        self.last_result = 0.0
        self._lat = {s: collections.deque(maxlen=window) for s in self.STAGES}
        self._lat_sum = {s: 0.0 for s in self.STAGES}  # since start (Prometheus summaries)
        self._lat_count = {s: 0 for s in self.STAGES}
        self.auth_refused = 0  # CURVE peers refused by the authenticator
        self._out_times: collections.deque = collections.deque(maxlen=256)

    def incr(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def error(self, code: str) -> None:
        with self._lock:
            self.errors[code] += 1

    def published(self, verdict: str, timings: dict | None) -> None:
        now = time.time()
        with self._lock:
            self.frames_out += 1
            self.results[verdict] += 1
            self.last_result = now
            self._out_times.append(now)
            if timings and verdict != "error":
                for k, v in timings.items():
                    if k in self._lat:
                        self._lat[k].append(v)
                        self._lat_sum[k] += v
                        self._lat_count[k] += 1

    def latency_summary(self, quantiles=(0.5, 0.9, 0.99)) -> dict:
        """Per stage: ({quantile: ms over the window}, sum of ms since start, count since start)."""
        import numpy as np

        with self._lock:
            lat = {k: list(v) for k, v in self._lat.items() if v}
            sums, counts = dict(self._lat_sum), dict(self._lat_count)
        return {k: ({q: float(np.quantile(v, q)) for q in quantiles}, sums[k], counts[k])
                for k, v in lat.items()}

    def snapshot(self) -> dict:
        import numpy as np

        with self._lock:
            lat = {k: list(v) for k, v in self._lat.items() if v}
            times = list(self._out_times)
            d = {"uptime_s": round(time.time() - self.started, 3), "frames_in": self.frames_in,
                 "frames_out": self.frames_out, "results": dict(self.results), "errors": dict(self.errors),
                 "dropped": self.dropped, "results_lost": self.results_lost, "in_flight": self.in_flight,
                 "auth_refused": self.auth_refused}
        d["latency_ms"] = {k: {"p50": round(float(np.percentile(v, 50)), 3),
                               "p99": round(float(np.percentile(v, 99)), 3), "n": len(v)}
                           for k, v in lat.items()}
        d["results_per_s"] = (round((len(times) - 1) / (times[-1] - times[0]), 3)
                              if len(times) > 1 and times[-1] > times[0] else None)
        return d


class _RateLimitedLog:
    """At most ``per_s`` log lines per second and key; the rest are counted and reported later."""

    def __init__(self, per_s: int = 10) -> None:
        self.per_s = per_s
        self._state: dict[str, list] = {}
        self._lock = threading.Lock()

    def __call__(self, level: int, key: str, msg: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            st = self._state.setdefault(key, [now, 0, 0])  # window start, lines in window, suppressed
            if now - st[0] >= 1.0:
                if st[2]:
                    log.log(level, "%d more %s message(s) suppressed in the last second", st[2], key)
                st[:] = [now, 0, 0]
            if st[1] >= self.per_s:
                st[2] += 1
                return
            st[1] += 1
        log.log(level, msg, *args)


# -- configuration and bundles ------------------------------------------------------------------
@dataclass
class ServiceConfig:
    bundles: list[tuple[str | None, str]]  # (product name or None: the bundle's own name, path)
    input: str
    output: str
    control: str | None = None
    input_mode: str = "sub"
    workers: int = 2
    queue_size: int = 8
    policy: str = "queue"
    max_payload_mb: float = 128.0
    backend: str = "auto"
    threads: int | None = None
    mask_scale: float | None = None
    drain_timeout_s: float = 30.0
    rcvhwm: int = 64
    record_dir: str | None = None  # --record: frames/masks/results of chosen verdicts (recorder.py)
    record_quota_mb: float = 1024.0
    record_what: str = "fail"
    record_queue: int = 32
    metrics_port: int | None = None  # --metrics-port: Prometheus /metrics over HTTP (metrics.py)
    metrics_host: str = "127.0.0.1"
    allow_remote: bool = False  # bind non-loopback addresses only when this is set
    curve_secret: str | None = None  # --curve-secret: the server key pair (security.py)
    curve_allow: str | None = None  # --curve-allow: folder of allowed client public keys (*.key)
    extra: dict = field(default_factory=dict)


def is_loopback_endpoint(addr: str) -> bool:
    """True for ``tcp://127.x.y.z:port``, ``tcp://localhost:port``, ``tcp://[::1]:port``, ``ipc://``
    and ``inproc://`` endpoints: nothing outside this host can reach them."""
    import ipaddress

    if addr.startswith(("ipc://", "inproc://")):
        return True
    if not addr.startswith("tcp://"):
        return False
    host = addr[len("tcp://"):].rsplit(":", 1)[0]
    if ";" in host:  # tcp://source;dest: the bound side is the destination
        host = host.split(";", 1)[1]
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # an interface name or '*'
        return False


def check_bind_addresses(cfg: ServiceConfig) -> None:
    """Refuse to bind anything but loopback unless ``allow_remote`` (``--allow-remote``)."""
    if cfg.allow_remote:
        return
    bound = [("--output", cfg.output), ("--control", cfg.control)]
    if cfg.metrics_port is not None:
        bound.append(("--metrics-host", f"tcp://{cfg.metrics_host}:{cfg.metrics_port}"))
    for opt, addr in bound:
        if addr and not is_loopback_endpoint(addr):
            raise ServiceError(f"{opt} {addr} is not a loopback address: serve binds to 127.0.0.1 by "
                               "default; pass --allow-remote to accept connections from other hosts "
                               "(and consider --curve-secret/--curve-allow)")


def parse_bundle_spec(spec: str) -> tuple[str | None, str]:
    """``PATH`` or ``PRODUCT=PATH`` (``sdk.vocabulary.parse_product_bundle``)."""
    try:
        return parse_product_bundle(spec, path_exists=lambda s: Path(s).exists())
    except ValueError as exc:
        raise ServiceError(str(exc)) from None


@dataclass
class _Entry:
    product: str
    root: Path
    inspector: Any
    model: dict
    sha256: str


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


class Service:
    """The serve loop. ``start()`` loads bundles, binds sockets and starts the threads; ``stop()``
    drains: frames already received are processed and their results published."""

    def __init__(self, config: ServiceConfig) -> None:
        cfg = config
        if cfg.input_mode not in ("sub", "pull"):
            raise ServiceError(f"--input-mode must be sub or pull, got {cfg.input_mode!r}")
        if cfg.policy not in POLICIES:
            raise ServiceError(f"--overload must be one of {', '.join(POLICIES)}, got {cfg.policy!r}")
        if cfg.workers < 1 or cfg.queue_size < 1:
            raise ServiceError("--workers and --queue-size must be at least 1")
        if not cfg.bundles:
            raise ServiceError("give at least one --bundle")
        self.config = cfg
        self.max_payload = int(cfg.max_payload_mb * 1024 * 1024)
        self.stats = Stats()
        self.entries: dict[str, _Entry] = {}
        self.default: str | None = None
        self.work = WorkQueue(cfg.queue_size, cfg.policy)
        self.out: queue.Queue = queue.Queue(maxsize=cfg.queue_size + 2 * cfg.workers + 64)
        self.endpoints: dict[str, str | None] = {}
        self.subscribers = 0
        self._ratelog = _RateLimitedLog()
        self._stop_input = threading.Event()
        self._stop_publisher = threading.Event()
        self._stop_control = threading.Event()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []
        self._ctx = None
        self._reload_lock = threading.Lock()
        self.recorder = None
        self.metrics = None
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
            from .security import RefusalLog, start_authenticator

            refused_log = RefusalLog()

            def refused(text: str) -> None:
                self.stats.incr("auth_refused")
                refused_log(text)

            self._auth = start_authenticator(ctx, cfg.curve_allow, refused)
        socks = []
        try:
            inp = ctx.socket(zmq.SUB if cfg.input_mode == "sub" else zmq.PULL)
            socks.append(inp)
            self._secure(inp, keypair)
            inp.setsockopt(zmq.RCVHWM, cfg.rcvhwm)
            inp.setsockopt(zmq.LINGER, 0)
            if cfg.input_mode == "sub":
                inp.setsockopt(zmq.SUBSCRIBE, P.FRAME_PREFIX)
            inp.connect(cfg.input)
            self.endpoints["input"] = cfg.input
            out = ctx.socket(zmq.XPUB)
            socks.append(out)
            self._secure(out, keypair)
            out.setsockopt(zmq.XPUB_VERBOSER, 1)
            out.setsockopt(zmq.SNDHWM, 1000)
            out.setsockopt(zmq.LINGER, 2000)
            out.bind(cfg.output)
            self.endpoints["output"] = out.getsockopt_string(zmq.LAST_ENDPOINT)
            ctl = None
            if cfg.control:
                ctl = ctx.socket(zmq.REP)
                socks.append(ctl)
                self._secure(ctl, keypair)
                ctl.setsockopt(zmq.LINGER, 0)
                ctl.bind(cfg.control)
                self.endpoints["control"] = ctl.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            for s in socks:
                s.close(0)
            self._stop_auth()
            ctx.term()
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
        if cfg.metrics_port is not None:
            from .metrics import MetricsServer

            try:
                self.metrics = MetricsServer(self, cfg.metrics_host, cfg.metrics_port).start()
            except OSError as exc:
                for s in socks:
                    s.close(0)
                self._stop_auth()
                ctx.term()
                raise ServiceError(f"cannot serve metrics on {cfg.metrics_host}:{cfg.metrics_port}: {exc}") \
                    from exc
            self.endpoints["metrics"] = self.metrics.url
        for t in self._workers + self._threads:
            t.start()
        log.info("serving %s: input %s (%s), output %s, control %s; %d worker(s), overload policy %s, "
                 "queue %d", ", ".join(self.entries), cfg.input, cfg.input_mode, self.endpoints["output"],
                 self.endpoints.get("control"), cfg.workers, cfg.policy, cfg.queue_size)
        return self

    def _curve_keys(self) -> tuple[bytes, bytes] | None:
        cfg = self.config
        if not cfg.curve_secret:
            if cfg.curve_allow:
                raise ServiceError("--curve-allow needs --curve-secret (the server key pair)")
            return None
        import zmq

        from .security import CurveKeyError, count_public_keys, load_keypair

        if not zmq.has("curve"):
            raise ServiceError("this libzmq has no CURVE support")
        try:
            keypair = load_keypair(cfg.curve_secret)
            if cfg.curve_allow and count_public_keys(cfg.curve_allow) == 0:
                raise CurveKeyError(f"--curve-allow {cfg.curve_allow}: no public key files (*.key) in it")
        except CurveKeyError as exc:
            raise ServiceError(str(exc)) from exc
        if not cfg.curve_allow:
            log.warning("CURVE without --curve-allow: traffic is encrypted, but any client key is accepted")
        return keypair

    @staticmethod
    def _secure(sock, keypair) -> None:
        if keypair is not None:
            from .security import apply_server

            apply_server(sock, keypair)

    def _stop_auth(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def _load_bundles(self) -> None:
        from sdk import Bundle, Inspector

        for product, path in self.config.bundles:
            bundle = Bundle.load(path)
            name = product or bundle.name
            if name in self.entries:
                raise ServiceError(f"two bundles answer to product {name!r}; name them with "
                                   "--bundle PRODUCT=PATH")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                insp = Inspector(bundle, backend=self.config.backend, threads=self.config.threads,
                                 mask_scale=self.config.mask_scale)
            for w in caught:
                log.warning("bundle %s: %s", name, w.message)
            d = insp.describe()
            log.info("bundle %s (%s, model %s) on %s/%s %s (%s); scope %s", name, bundle.name,
                     d["model_sha256"], d["backend"], d["provider"], d["precision"], d["reason"], d["scope"])
            model = {"bundle": bundle.name, "hash": d["model_sha256"]}
            self.entries[name] = _Entry(name, bundle.root, insp, model, bundle.model_sha256)
            self.default = self.default or name

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
        if self.metrics is not None:
            self.metrics.stop()
        s = self.stats.snapshot()
        log.info("stopped: %d frame(s) in, %d result(s) out, %d dropped, errors %s", s["frames_in"],
                 s["frames_out"], s["dropped"], {k: v for k, v in s["errors"].items() if v} or "none")
        return drained

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- threads ------------------------------------------------------------------------------
    def _receiver(self, sock) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop_input.is_set():
                if not poller.poll(100):
                    continue
                for _ in range(256):  # drain what is there, then look at the stop flag again
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    t_recv = time.perf_counter()
                    parts = [f.buffer for f in frames]
                    self.stats.incr("frames_in")
                    key = bytes(parts[0]) if parts else b""
                    for job in self.work.put(_Job(parts, t_recv), key=key):
                        self._overloaded(job)
        except Exception:  # pragma: no cover - a bug here must not kill the service silently
            log.exception("receiver failed")
        finally:
            sock.close(0)

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
            if job is _CLOSED:
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
            self._put_out(_Out(parts, res.verdict, timings, job.t_recv))
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

    def _select(self, header: P.FrameHeader) -> _Entry:
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
        except Exception:  # pragma: no cover
            log.exception("publisher failed")
        finally:
            sock.close()  # LINGER lets queued results leave

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

        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop_control.is_set():
                if not poller.poll(100):
                    continue
                try:
                    raw = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                try:
                    reply = self.handle_control(raw)
                except Exception as exc:  # a REP socket must always answer
                    log.exception("control request failed")
                    reply = {"ok": False, "error": f"internal: {type(exc).__name__}: {exc}"}
                sock.send(json.dumps(reply).encode("utf-8"))
        except Exception:  # pragma: no cover
            log.exception("control failed")
        finally:
            sock.close(0)

    # -- control commands -----------------------------------------------------------------------
    def handle_control(self, raw: bytes) -> dict:
        try:
            req = json.loads(bytes(raw).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return {"ok": False, "error": "request must be a UTF-8 JSON object like {\"cmd\": \"health\"}"}
        cmd = req.get("cmd") if isinstance(req, dict) else None
        if cmd == "health":
            return self.health()
        if cmd == "stats":
            return self.stats_report()
        if cmd == "reload":
            product = req.get("product")
            return self.reload(product if isinstance(product, str) else None)
        return {"ok": False, "error": f"unknown cmd {cmd!r}; use health, stats or reload"}

    def health(self) -> dict:
        s = self.stats
        return {"ok": True, "status": "stopping" if self._stopping else "running",
                "uptime_s": round(time.time() - s.started, 3), "bundles": list(self.entries),
                "default": self.default, "frames_in": s.frames_in, "frames_out": s.frames_out,
                "queue_depth": len(self.work), "subscribers": self.subscribers,
                "last_result_age_s": round(time.time() - s.last_result, 3) if s.last_result else None}

    def stats_report(self) -> dict:
        d = {"ok": True, **self.stats.snapshot()}
        d["queue"] = {"depth": len(self.work), "capacity": self.config.queue_size,
                      "policy": self.config.policy, "publish_depth": self.out.qsize(),
                      "workers": self.config.workers}
        d["subscribers"] = self.subscribers
        d["endpoints"] = dict(self.endpoints)
        if self.recorder is not None:
            d["recording"] = self.recorder.stats()
        bundles = {}
        for name, e in self.entries.items():
            info = e.inspector.describe()
            cal = e.inspector.calibration
            info["default"] = name == self.default
            info["calibration"] = None if cal is None else {"created": cal.created, "n_images": cal.n_images,
                                                            "source": cal.source}
            bundles[name] = info
        d["bundles"] = bundles
        return d

    def reload(self, product: str | None = None) -> dict:
        """Re-read each bundle's calibration from its bundle.json and use it from the next frame on."""
        from sdk import Bundle

        names = list(self.entries) if product is None else [product]
        out, ok = {}, True
        with self._reload_lock:
            for name in names:
                e = self.entries.get(name)
                if e is None:
                    out[name] = {"ok": False, "message": f"no bundle {name!r} is loaded"}
                    ok = False
                    continue
                try:
                    b = Bundle.load(e.root)
                    if b.model_sha256 != e.sha256:
                        raise ServiceError("the model file changed on disk; its calibration belongs to the "
                                           "new model: restart the service to load both")
                    if e.inspector.scope != "calibrated":
                        raise ServiceError(f"this bundle runs the {e.inspector.scope!r} scope (it was not "
                                           "calibrated at start); restart the service to use a calibration")
                    cal = b.calibration
                    if cal is None or cal.norm is None:
                        raise ServiceError("bundle.json has no (complete) calibration")
                    changed = cal != e.inspector.calibration
                    e.inspector.set_calibration(cal)
                    out[name] = {"ok": True, "changed": changed, "calibration": {
                        "created": cal.created, "n_images": cal.n_images, "source": cal.source}}
                    log.info("reload %s: calibration %s (%s)", name, "updated" if changed else "unchanged",
                             cal.created)
                except RobisError as exc:
                    ok = False
                    out[name] = {"ok": False, "message": str(exc)}
                    log.error("reload %s failed: %s", name, exc)
        return {"ok": ok, "bundles": out}
