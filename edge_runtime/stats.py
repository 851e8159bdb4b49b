"""serve's counters and latency windows (:class:`Stats`) and one consistent copy of them
(:class:`Counters`), which the ``stats``/``health`` replies and ``/metrics`` read."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

from . import protocol as P

STAGES = ("queue_wait", "decode", "preprocess", "infer", "merge", "binarize", "refine", "regions",
          "pipeline", "encode", "total", "end_to_end")


@dataclass(frozen=True)
class Counters:
    """What :class:`Stats` held at ``taken`` (epoch seconds), copied under its lock."""

    taken: float
    started: float
    frames_in: int
    frames_out: int
    results: dict[str, int]
    errors: dict[str, int]
    dropped: int
    results_lost: int
    in_flight: int
    auth_refused: int
    last_result: float  # epoch seconds of the last published result; 0.0 before the first
    windows: dict[str, list[float]]  # ms over the last frames, stages with at least one value only
    sums: dict[str, float]  # ms since start, per stage
    counts: dict[str, int]  # values since start, per stage
    out_times: list[float]  # epoch seconds of the last published results

    @property
    def uptime_s(self) -> float:
        return round(self.taken - self.started, 3)

    @property
    def last_result_age_s(self) -> float | None:
        return round(self.taken - self.last_result, 3) if self.last_result else None

    @property
    def results_per_s(self) -> float | None:
        t = self.out_times
        return round((len(t) - 1) / (t[-1] - t[0]), 3) if len(t) > 1 and t[-1] > t[0] else None

    def latency_ms(self) -> dict[str, dict]:
        """Per stage: p50 and p99 (ms) over the window, and the window's length."""
        import numpy as np

        return {k: {"p50": round(float(np.percentile(v, 50)), 3),
                    "p99": round(float(np.percentile(v, 99)), 3), "n": len(v)}
                for k, v in self.windows.items()}

    def latency_summary(self, quantiles: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[str, tuple]:
        """Per stage: ({quantile: ms over the window}, sum of ms since start, count since start)."""
        import numpy as np

        return {k: ({q: float(np.quantile(v, q)) for q in quantiles}, self.sums[k], self.counts[k])
                for k, v in self.windows.items()}

    def to_json(self) -> dict:
        """The counters as the ``stats`` control reply starts."""
        return {"uptime_s": self.uptime_s, "frames_in": self.frames_in, "frames_out": self.frames_out,
                "results": dict(self.results), "errors": dict(self.errors), "dropped": self.dropped,
                "results_lost": self.results_lost, "in_flight": self.in_flight,
                "auth_refused": self.auth_refused, "latency_ms": self.latency_ms(),
                "results_per_s": self.results_per_s}


class Stats:
    """Counters and latency windows, thread-safe. Percentiles over the last ``window`` frames."""

    STAGES = STAGES

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
        self._lat = {s: collections.deque(maxlen=window) for s in STAGES}
        self._lat_sum = {s: 0.0 for s in STAGES}  # since start (Prometheus summaries)
        self._lat_count = {s: 0 for s in STAGES}
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

    def counters(self) -> Counters:
        """One consistent copy of everything counted so far."""
        with self._lock:
            return Counters(
                taken=time.time(), started=self.started, frames_in=self.frames_in, frames_out=self.frames_out,
                results=dict(self.results), errors=dict(self.errors), dropped=self.dropped,
                results_lost=self.results_lost, in_flight=self.in_flight, auth_refused=self.auth_refused,
                last_result=self.last_result, windows={k: list(v) for k, v in self._lat.items() if v},
                sums=dict(self._lat_sum), counts=dict(self._lat_count), out_times=list(self._out_times))

    def snapshot(self) -> dict:
        """The counters as JSON (:meth:`Counters.to_json`)."""
        return self.counters().to_json()
