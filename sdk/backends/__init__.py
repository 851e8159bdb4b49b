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

    if bundle is None or not engine_entries(bundle, model, "tensorrt"):
        return None, "the bundle has no TensorRT engine (`robis-edge build` makes one on the device)"
    trt = tensorrt_probe()
    gpu, gpu_why = cuda_device()
    entry, why = select_engine(bundle, model, trt.version, gpu.name if gpu else None,
                               gpu.compute_capability if gpu else None)
    if entry is None:
        details = [d for d in (trt.detail, gpu_why) if d]
        return None, why + (f" ({'; '.join(details)})" if details else "")
    return entry, why


def openvino_engine_for(bundle, model: str):
    """The bundle's OpenVINO engine of ``model`` that runs on this host, or (None, why not)."""
    from ..engines import engine_entries, select_openvino_engine
    from .openvino import openvino_host

    if bundle is None or not engine_entries(bundle, model, "openvino"):
        return None, ("the bundle has no OpenVINO engine (`robis-edge build --target openvino` makes one "
                      "on the device)")
    return select_openvino_engine(bundle, model, openvino_host())


def _openvino_backend(model_path: str, backend: str, entry, why: str, *, input_size: int, map_size: int,
                      threads: int | None, streams: int | None, max_batch: int | None, bundle):
    from .openvino import OvBackend

    if entry is None:  # explicit --backend openvino without an engine for this host
        return OvBackend(model_path, input_size=input_size, map_size=map_size, precision="f32",
                         reason=f"{backend}: no OpenVINO engine for this host ({why}); running the ONNX in "
                         "f32, accuracy mode", threads=threads, streams=streams, max_batch=max_batch)
    path = bundle.resolve(entry.file) if entry.file else model_path
    return OvBackend(path, input_size=input_size, map_size=map_size, precision=entry.precision,
                     reason=f"{backend}: {why}", device=entry.device or "CPU", threads=threads,
                     streams=streams, max_batch=max_batch)


def create_backend(model_path: str, *, input_size: int, map_size: int, backend: str = "auto",
                   threads: int | None = None, max_batch: int | None = None, bundle=None,
                   streams: int | None = None) -> Backend:
    """Create the backend asked for.

    ``auto``: the bundle's TensorRT engine when one matches this GPU and TensorRT version, else
    ONNX Runtime's TensorRT or CUDA execution provider when present, else the bundle's OpenVINO
    engine when one matches this CPU and OpenVINO version, else ONNX Runtime on the CPU; ``reason``
    says which and why the faster ones were not taken. ``tensorrt`` requires a matching engine
    (error otherwise); ``openvino`` takes the matching OpenVINO engine, else runs the ONNX in f32
    accuracy mode and says so. ``streams``: OpenVINO CPU streams (default: its latency hint's)."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if max_batch is None and bundle is not None:
        max_batch = bundle.model.max_batch  # a fixed-batch model runs that many tiles at a time
    ov_kw = dict(input_size=input_size, map_size=map_size, threads=threads, streams=streams,
                 max_batch=max_batch, bundle=bundle)
    if backend == "openvino":
        entry, why = openvino_engine_for(bundle, "anomaly_model")
        return _openvino_backend(model_path, backend, entry, why, **ov_kw)
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
    if backend == "auto" and providers[0] == "CPUExecutionProvider":
        entry, why = openvino_engine_for(bundle, "anomaly_model")
        if entry is not None:
            cpu_only = reason.removeprefix(f"{backend}: ")
            return _openvino_backend(model_path, backend, entry, f"{why}; {cpu_only}{not_trt}", **ov_kw)
        not_trt += f"; OpenVINO engine not used: {why}"
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
