"""Model backends behind one small interface: bind a model file, run a batch of tiles,
report what runs it. ``create_backend`` chooses one and says which and why; it never falls
back to a slower backend silently (an explicit request that cannot be met is an error)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import BackendError

BACKENDS: tuple[str, ...] = ("auto", "onnxruntime", "ort-cpu", "ort-cuda", "ort-tensorrt")


class Backend(Protocol):
    """What the pipeline needs from a model runner."""

    name: str  # e.g. "onnxruntime"
    provider: str  # e.g. "CPUExecutionProvider"
    precision: str  # "fp32", "fp16", ...
    reason: str  # why this backend and provider were chosen

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 → (N, M, M) float32 raw anomaly maps."""
        ...


def create_backend(model_path: str, *, input_size: int, map_size: int, backend: str = "auto",
                   threads: int | None = None, max_batch: int | None = None) -> Backend:
    """Create the backend asked for. ``auto`` takes the fastest ONNX Runtime provider present
    (TensorRT EP, then CUDA EP, then CPU) and records the reason."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    from .onnxruntime import OrtBackend, choose_providers

    providers, reason = choose_providers(backend)
    return OrtBackend(model_path, providers, reason, input_size=input_size, map_size=map_size,
                      threads=threads, max_batch=max_batch)
