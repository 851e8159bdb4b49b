"""The background threads of a streaming evaluation: reading ahead (``prefetch``) and running the
metric accumulation behind the inference (``Worker``). numpy and OpenCV release the GIL, so the
three overlap."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()


def prefetch(fn: Callable[[T], R], items: Iterable[T], depth: int = 2) -> Iterator[R]:
    """``fn(item)`` for each item, computed ``depth`` items ahead in a thread, in order."""
    it = iter(items)
    with ThreadPoolExecutor(1, thread_name_prefix="eval-read") as ex:
        pending = deque(ex.submit(fn, x) for x in itertools.islice(it, depth))
        while pending:
            fut = pending.popleft()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append(ex.submit(fn, nxt))
            yield fut.result()


class Worker:
    """One background thread that runs submitted calls in order, at most ``depth`` queued."""

    def __init__(self, depth: int = 2) -> None:
        self.ex = ThreadPoolExecutor(1, thread_name_prefix="eval-metrics")
        self.pending: deque[Future] = deque()
        self.depth = depth

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; waits for the oldest calls while more than ``depth`` are queued."""
        self.pending.append(self.ex.submit(fn, *args))
        while len(self.pending) > self.depth:
            self.pending.popleft().result()

    def join(self) -> None:
        """Wait for every queued call (re-raising the first error) and stop the thread."""
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.ex.shutdown(wait=True)
