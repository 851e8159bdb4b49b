"""ONNX Runtime backend (CPU, CUDA or TensorRT execution provider)."""

from __future__ import annotations

import functools

import numpy as np

from ..errors import BackendError

_PROVIDERS = {
    "ort-cpu": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
INPUT_NAME = "image"
OUTPUT_NAME = "anomaly_map"


def provider_library_problem(provider: str) -> str:
    """Why ONNX Runtime's shared library for ``provider`` cannot be loaded here ('' when it loads or
    cannot be checked). onnxruntime-gpu lists TensorrtExecutionProvider whether TensorRT is installed
    or not; its library needs libnvinfer, so loading it tells (cheaply, without building an engine)."""
    lib = {"TensorrtExecutionProvider": "libonnxruntime_providers_tensorrt.so"}.get(provider)
    return _library_problem(lib) if lib else ""


@functools.cache
def _library_problem(lib: str) -> str:
    import ctypes
    import os

    import onnxruntime as ort

    capi = os.path.join(os.path.dirname(ort.__file__), "capi")
    path = os.path.join(capi, lib)
    if not os.path.exists(path):  # not the pip layout on Linux: the session will tell
        return ""
    try:
        shared = os.path.join(capi, "libonnxruntime_providers_shared.so")
        if os.path.exists(shared):
            ctypes.CDLL(shared, mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(path)
    except OSError as exc:
        return str(exc)
    return ""


def choose_providers(backend: str) -> tuple[list[str], str]:
    """Execution providers for a backend name, with the reason for the choice."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if backend in _PROVIDERS:
        wanted = _PROVIDERS[backend]
        if wanted[0] not in available:
            raise BackendError(f"backend {backend!r} needs {wanted[0]}, which this onnxruntime "
                               f"does not have (available: {', '.join(available)}); install the "
                               "'gpu' extra (onnxruntime-gpu) on a CUDA host, or choose ort-cpu")
        return wanted, f"requested {backend}"
    skipped = []
    for first in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
        if first in available:
            problem = provider_library_problem(first)
            if problem:
                skipped.append(f"{first} is listed but cannot load: {problem}")
                continue
            chain = _PROVIDERS["ort-tensorrt" if first.startswith("Tensorrt") else "ort-cuda"]
            return chain, f"{backend}: {first} is available" + "".join(f"; {s}" for s in skipped)
    return ["CPUExecutionProvider"], (f"{backend}: no GPU execution provider in this onnxruntime "
                                      f"(available: {', '.join(available)}), running on CPU"
                                      + "".join(f"; {s}" for s in skipped))


def open_session(model_path, providers: list[str], threads: int | None = None):
    """An ONNX Runtime session on exactly the first of ``providers``: a session that ONNX Runtime
    quietly started on another provider is refused (never a silent fallback)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(str(model_path), sess_options=opts, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise BackendError(f"onnxruntime cannot load {model_path}: {exc}") from exc
    got = session.get_providers()
    if got[0] != providers[0]:
        raise BackendError(f"onnxruntime could not start {providers[0]} for {model_path} (session runs "
                           f"on {got[0]}); refusing to fall back silently — check the CUDA/TensorRT "
                           "libraries or choose the backend explicitly")
    return session


class OrtBackend:
    """Runs an anomaly-map ONNX model (bundle.md contract) with ONNX Runtime."""

    name = "onnxruntime"
    precision = "fp32"

    def __init__(self, model_path: str, providers: list[str], reason: str, *, input_size: int,
                 map_size: int, threads: int | None = None, max_batch: int | None = None,
                 features: str | None = None) -> None:
        self.session = open_session(model_path, providers, threads)
        self.provider = self.session.get_providers()[0]
        self.reason = reason
        self.input_size, self.map_size = int(input_size), int(map_size)
        self.features = features  # name of the optional patch-feature output (TTT), or None
        self._check_contract()
        # A model exported with a fixed batch runs in chunks of exactly that size.
        self.max_batch = self._fixed_batch or max_batch
        if self._fixed_batch:
            self.reason += (f"; the model has a fixed batch of {self._fixed_batch}: tiles run "
                            f"{self._fixed_batch} at a time")

    def _check_contract(self) -> None:
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = {o.name: o for o in self.session.get_outputs()}
        if INPUT_NAME not in ins or OUTPUT_NAME not in outs:
            raise BackendError(f"the model must have input '{INPUT_NAME}' and output '{OUTPUT_NAME}' "
                               f"(bundle.md); it has inputs {list(ins)} and outputs {list(outs)}")
        i, o = ins[INPUT_NAME], outs[OUTPUT_NAME]
        if i.type != "tensor(float)" or o.type != "tensor(float)":
            raise BackendError(f"input/output must be float32 tensors, got {i.type} / {o.type}")
        s, m = self.input_size, self.map_size
        if len(i.shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(i.shape[1:], (3, s, s))):
            raise BackendError(f"model input 'image' is {i.shape}, the bundle says N×3×{s}×{s}")
        if len(o.shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(o.shape[1:], (1, m, m))):
            raise BackendError(f"model output 'anomaly_map' is {o.shape}, the bundle says N×1×{m}×{m}")
        self._fixed_batch = i.shape[0] if isinstance(i.shape[0], int) else None
        if self.features is not None:
            f = outs.get(self.features)
            if f is None or f.type != "tensor(float)" or len(f.shape) != 4:
                raise BackendError(f"the bundle declares a float32 N×C×g×g output {self.features!r}; the "
                                   f"model has outputs {list(outs)}")

    def _run(self, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        n = len(batch)
        step = self.max_batch or n
        parts: list[list[np.ndarray]] = [[] for _ in names]
        for k in range(0, n, step):
            chunk = batch[k:k + step]
            real = len(chunk)
            if self._fixed_batch and real < self._fixed_batch:
                pad = np.zeros((self._fixed_batch - real, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            for acc, out in zip(parts, self.session.run(names, {INPUT_NAME: chunk})):
                acc.append(out[:real])
        return [p[0] if len(p) == 1 else np.concatenate(p) for p in parts]

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._check_maps(self._run(batch, [OUTPUT_NAME])[0], len(batch))

    def run_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Maps (N, M, M) and the patch features (N, C, g, g) of one batch, from one model run."""
        if self.features is None:
            raise BackendError("this model has no features output (export it with `robis-edge export "
                               "inpformer --features`)")
        maps, feats = self._run(batch, [OUTPUT_NAME, self.features])
        if feats.ndim != 4 or feats.shape[0] != len(batch) or feats.shape[2] != feats.shape[3]:
            raise BackendError(f"the features output is {feats.shape}, expected ({len(batch)}, C, g, g)")
        return self._check_maps(maps, len(batch)), feats

    def _check_maps(self, out: np.ndarray, n: int) -> np.ndarray:
        if out.shape != (n, 1, self.map_size, self.map_size):
            raise BackendError(f"model returned {out.shape}, expected ({n}, 1, "
                               f"{self.map_size}, {self.map_size})")
        if not np.isfinite(out).all():
            raise BackendError("the model produced NaN or Inf scores for this frame")
        return out[:, 0]
