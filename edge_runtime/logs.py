"""Log throttles: a peer or a camera that misbehaves many times a second must not flood the log."""

from __future__ import annotations

import logging
import threading
import time


class RateLimitedLog:
    """At most ``per_s`` log lines per second and key; the rest are counted and reported later."""

    def __init__(self, logger: logging.Logger, per_s: int = 10) -> None:
        self.logger = logger
        self.per_s = per_s
        self._state: dict[str, list] = {}
        self._lock = threading.Lock()

    def __call__(self, level: int, key: str, msg: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            st = self._state.setdefault(key, [now, 0, 0])  # window start, lines in window, suppressed
            if now - st[0] >= 1.0:
                if st[2]:
                    self.logger.log(level, "%d more %s message(s) suppressed in the last second", st[2], key)
                st[:] = [now, 0, 0]
            if st[1] >= self.per_s:
                st[2] += 1
                return
            st[1] += 1
        self.logger.log(level, msg, *args)


class CountedLog:
    """Warns of the first ``first`` events, then of one in ``every``; ``msg`` takes the count so far
    and the event's text."""

    def __init__(self, logger: logging.Logger, msg: str, first: int = 10, every: int = 100) -> None:
        self.logger, self.msg, self.first, self.every = logger, msg, first, every
        self.n = 0
        self._lock = threading.Lock()

    def __call__(self, text: str) -> None:
        with self._lock:
            self.n += 1
            n = self.n
        if n <= self.first or n % self.every == 0:
            self.logger.warning(self.msg, n, text)
