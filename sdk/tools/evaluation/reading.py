"""Reading a product's images and ground truth for the evaluation, timed: one sample at a time
(``read_sample``, for streaming) or lazily while a batch is inspected (``LazyImages``)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from sdk.errors import InputError
from sdk.imageio import read_image

from .datasets import Sample, read_ground_truth

SampleRead = tuple[Sample, np.ndarray | None, str | None, np.ndarray | None, InputError | None, float]


def read_sample(sample: Sample) -> SampleRead:
    """(sample, image, colour, ground truth, error, seconds): the image and its ground truth, or
    the ``InputError`` that prevented reading them (image, colour and ground truth then None)."""
    t0 = time.perf_counter()
    try:
        image, color = read_image(sample.image)
        gt = read_ground_truth(sample, image.shape[:2])
    except InputError as exc:
        return sample, None, None, None, exc, time.perf_counter() - t0
    return sample, image, color, gt, None, time.perf_counter() - t0


class LazyImages:
    """The images of a product, read when iterated (for ``inspect_batch``); ``read_s`` sums the
    reading time."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples
        self.read_s = 0.0

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[np.ndarray]:
        for s in self.samples:
            t0 = time.perf_counter()
            img, _ = read_image(s.image)
            self.read_s += time.perf_counter() - t0
            yield img
