"""The learning-rate schedule of RoBiS training: linear warm-up, then half a cosine."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmCosineSchedule:
    """RoBiS ``WarmCosineScheduler`` as a table: ``warmup`` values evenly from ``start`` to ``base``
    (both ends included, as ``np.linspace``), then ``base → final`` along half a cosine over the
    remaining ``total − warmup`` iterations; ``final`` from ``total`` on. ``lr(i)`` is the rate of
    (0-based) iteration ``i``; the first iteration therefore runs at ``start`` (0) when warming up."""

    base: float
    final: float
    total: int
    warmup: int = 0
    start: float = 0.0

    def lr(self, i: int) -> float:
        if i >= self.total:
            return float(self.final)
        if i < self.warmup:
            if self.warmup == 1:
                return float(self.start)
            return float(self.start + (self.base - self.start) * i / (self.warmup - 1))
        n = self.total - self.warmup
        j = i - self.warmup
        return float(self.final + 0.5 * (self.base - self.final) * (1.0 + math.cos(math.pi * j / n)))
