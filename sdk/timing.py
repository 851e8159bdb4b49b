"""Small helpers for what every stage reports: elapsed milliseconds and progress bars."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def ms_since(t0: float) -> float:
    """Milliseconds elapsed since ``t0`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - t0) * 1000.0


def progress_bar(items: Iterable[T], total: int | None, enabled: bool, *, desc: str | None = None,
             unit: str = "frame") -> Iterable[T] | Iterator[T]:
    """``items`` with a tqdm progress bar on stderr when ``enabled``, else ``items`` unchanged."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit=unit, file=sys.stderr)
