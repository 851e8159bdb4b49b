"""What every output of ``serve`` shares: the :class:`Update` the publisher hands over, and the
:class:`Output` base with its own thread and a bounded queue that drops the oldest update.

The publisher calls :meth:`Output.offer` once per published result: an append under a lock, never
a wait. When the output's thread (or the broker, client or browser behind it) falls behind, the
oldest waiting update is dropped and counted (``dropped``), so a dead peer costs the frame path
nothing but that counter.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

log = logging.getLogger("robis_edge.outputs")

STALL_S = 5.0  # an output with waiting updates that took none for this long has stalled


@dataclass
class Picture:
    """An inspected frame and its Result, by reference (nothing is copied or encoded on the
    worker); only outputs with ``wants_pictures`` get it, and draw on their own threads."""

    image: np.ndarray  # the decoded frame, as received
    color: str  # its colour layout ("gray", "bgr", "rgb")
    result: object  # sdk.inspector.Result


@dataclass
class Update:
    """One published result: the message exactly as it left on ZeroMQ, and what the worker knew."""

    parts: list  # (topic, header JSON, mask PNG)
    verdict: str
    published: float  # epoch seconds
    product: str | None = None  # the product that judged the frame; None when none was chosen
    min_area_px: int | None = None  # that bundle's verdict rule: regions at least this big count
    picture: Picture | None = None  # inspected frames, for outputs that want pictures
    received: float | None = None  # when serve received the frame (perf_counter): arrival order

    @cached_property
    def header(self) -> dict:
        """The result header (docs/protocol.md), parsed on first use (on an output's thread)."""
        return json.loads(bytes(self.parts[1]))

    @property
    def header_json(self) -> bytes:
        return bytes(self.parts[1])

    @property
    def camera(self) -> str | None:
        return self.header.get("camera")

    def counted_regions(self) -> int:
        """Regions that count for the verdict (area at least the bundle's ``min_area_px``)."""
        regions = self.header.get("regions") or []
        if self.min_area_px is None:
            return len(regions)
        return sum(1 for r in regions if r.get("area_px", 0) >= self.min_area_px)

    def latency_ms(self) -> float:
        """Capture (the frame's ``ts_ns``) → publication, in ms; arrival → result when the frame
        carried no capture time."""
        ts = self.header.get("ts_ns")
        if isinstance(ts, int) and ts > 0:
            return round(self.published * 1000.0 - ts / 1e6, 3)
        return float((self.header.get("timings_ms") or {}).get("total", 0.0))


class NewestPerCamera:
    """Which updates show a camera's newest frame. With several workers, results can be published
    in another order than their frames arrived; an output that holds each camera's latest state
    (OPC UA nodes, the live page) keeps the newest frame's, ordered by arrival at serve (so a
    camera that restarts its seq at 0 is still newer). Used on one output's thread."""

    def __init__(self) -> None:
        self._newest: dict[str, float] = {}

    def take(self, camera: str, update: Update) -> bool:
        """True if ``update`` is not older than the newest taken for ``camera`` (it becomes that)."""
        if update.received is None:
            return True
        newest = self._newest.get(camera)
        if newest is not None and update.received < newest:
            return False
        self._newest[camera] = update.received
        return True


@dataclass
class _Counts:
    offered: int = 0
    sent: int = 0
    dropped: int = 0
    failed: int = 0
    last_progress: float = field(default_factory=time.monotonic)


class Output:
    """An output with its own daemon thread and a bounded drop-oldest queue of updates.

    Subclasses implement :meth:`handle` (one update, on the output's thread), and may override
    :meth:`connected`, :meth:`open`, :meth:`close` and :meth:`idle` (called about every 0.2 s
    when no update is waiting)."""

    name = "output"
    wants_pictures = False  # True: offered updates carry the frame and its Result (``picture``)

    def __init__(self, queue_size: int = 64) -> None:
        if queue_size < 1:
            raise ValueError("an output queue holds at least one update")
        self._q: collections.deque[Update] = collections.deque()
        self._size = queue_size
        self._cv = threading.Condition()
        self._counts = _Counts()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.endpoint: str | None = None

    # -- the publisher's side: never blocks -------------------------------------------------------
    def offer(self, update: Update) -> None:
        with self._cv:
            c = self._counts
            c.offered += 1
            if len(self._q) >= self._size:
                self._q.popleft()
                c.dropped += 1
            self._q.append(update)
            self._cv.notify()

    # -- counters ---------------------------------------------------------------------------------
    def count(self, what: str, n: int = 1) -> None:
        """Add to ``sent``, ``dropped`` or ``failed`` (from the output's own threads)."""
        with self._cv:
            setattr(self._counts, what, getattr(self._counts, what) + n)

    def connected(self) -> bool:
        """True while the output can deliver (broker connected, server listening)."""
        return self._thread is not None and self._thread.is_alive()

    def stalled(self) -> bool:
        with self._cv:
            waiting = bool(self._q)
            last = self._counts.last_progress
        return waiting and time.monotonic() - last > STALL_S

    def stats(self) -> dict:
        """``stats.outputs.<name>``: connected, queued, offered, sent, dropped, failed, stalled."""
        with self._cv:
            c = self._counts
            d = {"connected": False, "endpoint": self.endpoint, "queued": len(self._q),
                 "capacity": self._size, "offered": c.offered, "sent": c.sent, "dropped": c.dropped,
                 "failed": c.failed}
        d["connected"] = bool(self.connected())
        d["stalled"] = self.stalled()
        d.update(self.extra_stats())
        return d

    def extra_stats(self) -> dict:
        return {}

    # -- the output's thread ----------------------------------------------------------------------
    def start(self) -> Output:
        """Open the output (errors surface here, in ``serve``'s start) and start its thread."""
        self.open()
        self._thread = threading.Thread(target=self._run, name=f"serve-output-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._q and not self._stop.is_set():
                    self._cv.wait(0.2)
                item = self._q.popleft() if self._q else None
                self._counts.last_progress = time.monotonic()
            if item is None:
                if self._stop.is_set():
                    return
                self._guard(self.idle)
                continue
            self._guard(self.handle, item)

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # an output must never die on one update
            self.count("failed")
            log.exception("output %s failed", self.name)

    def stop(self, timeout: float = 2.0) -> None:
        """Deliver what is waiting (within ``timeout``), then close."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cv:
                if not self._q:
                    break
            time.sleep(0.02)
        self._stop.set()
        with self._cv:
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))
        self.close()

    def open(self) -> None:
        pass

    def handle(self, update: Update) -> None:
        raise NotImplementedError

    def idle(self) -> None:
        pass

    def close(self) -> None:
        pass
