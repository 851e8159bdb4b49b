"""Model backends behind one small interface: bind a model file, run a batch of tiles,
report what runs it. ``create_backend`` chooses one and says which and why; it never falls
back to a slower backend silently (an explicit request that cannot be met is an error)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import BackendError
from ..vocabulary import BACKEND_HELP, BACKENDS  # noqa: F401 - re-exported


class Backend(Protocol):
    """What the pipeline needs from a model runner."""

    name: str  # e.g. "onnxruntime"
    provider: str  # e.g. "CPUExecutionProvider"
    precision: str  # "fp32", "fp16", ...
    reason: str  # why this backend and provider were chosen

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 → (N, M, M) float32 raw anomaly maps."""
        ...


def tensorrt_engine_for(bundle, model: str):
    """The bundle's TensorRT engine of ``model`` that can run on this host, or (None, why not)."""
    from ..engines import engine_entries, select_engine
    from .gpu import cuda_device, tensorrt_probe

    if bundle is None or not engine_entries(bundle, model):
        return None, "the bundle has no TensorRT engine (`robis-edge build` makes one on the device)"
    trt = tensorrt_probe()
    gpu, gpu_why = cuda_device()
    entry, why = select_engine(bundle, model, trt.version, gpu.name if gpu else None,
                               gpu.compute_capability if gpu else None)
    if entry is None:
        details = [d for d in (trt.detail, gpu_why) if d]
        return None, why + (f" ({'; '.join(details)})" if details else "")
    return entry, why


def create_backend(model_path: str, *, input_size: int, map_size: int, backend: str = "auto",
                   threads: int | None = None, max_batch: int | None = None, bundle=None) -> Backend:
    """Create the backend asked for.

    ``auto``: the bundle's TensorRT engine when one matches this GPU and TensorRT version, else the
    fastest ONNX Runtime provider present (TensorRT EP, CUDA EP, CPU); ``reason`` says which and why
    the faster ones were not taken. ``tensorrt`` requires a matching engine (error otherwise)."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if max_batch is None and bundle is not None:
        max_batch = bundle.model.max_batch  # a fixed-batch model runs that many tiles at a time
    not_trt = ""
    if backend in ("auto", "tensorrt"):
        entry, why = tensorrt_engine_for(bundle, "anomaly_model")
        if entry is not None:
            from .gpu import cuda_device
            from .tensorrt import TrtBackend

            gpu, _ = cuda_device()
            return TrtBackend(bundle.resolve(entry.file), input_size=input_size, map_size=map_size,
                              precision=entry.precision, reason=f"{backend}: {why}",
                              device=gpu.name if gpu else "", max_batch=max_batch)
        if backend == "tensorrt":
            raise BackendError(f"backend 'tensorrt' needs a TensorRT engine for this GPU: {why}")
        not_trt = f"; TensorRT engine not used: {why}"
    from .onnxruntime import OrtBackend, choose_providers

    providers, reason = choose_providers(backend)
    features = None if bundle is None else bundle.model.features
    while True:
        try:
            return OrtBackend(model_path, providers, reason + not_trt, input_size=input_size,
                              map_size=map_size, threads=threads, max_batch=max_batch, features=features)
        except BackendError as exc:
            # auto/onnxruntime: a GPU provider that ONNX Runtime lists but cannot start (its CUDA or
            # TensorRT libraries missing) steps down to the next one, and the reason says so.
            if backend not in ("auto", "onnxruntime") or len(providers) == 1:
                raise
            reason = f"{reason}; {providers[0]} could not start ({exc}), using {providers[1]}"
            providers = providers[1:]
