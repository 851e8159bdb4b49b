"""The bounded queue between serve's receiver and its workers, with its overload policies."""

from __future__ import annotations

import collections
import threading
from typing import Any

POLICIES = ("latest", "queue")
CLOSED = object()  # what ``WorkQueue.get`` returns once the queue is closed and empty


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
        """The oldest waiting item; None on timeout; ``CLOSED`` once closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._items:
                return self._items.popleft()[1]
            return CLOSED if self._closed else None

    def close(self) -> None:
        """No more puts; getters drain what is left, then see ``CLOSED``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
