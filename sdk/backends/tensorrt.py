"""TensorRT backend on pycuda (docs/gpu.md).

The engine is deserialised once; each of its optimisation profiles backs one execution context
with its own CUDA stream, page-locked host buffers and device buffers sized for the profile's
largest shapes. A frame takes a free context from the pool (so worker threads run concurrently,
one stream each), sets the input shapes of this batch, enqueues copy → ``execute_async_v3`` →
copy on its stream, and waits for that stream only.

This module is the only place of the SDK that imports tensorrt and pycuda, lazily. It is checked
where TensorRT exists (``robis-edge selftest``, the GPU tests); the CPU tests cover what surrounds it.
"""

from __future__ import annotations

import math
import queue
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BackendError
from .onnxruntime import INPUT_NAME, OUTPUT_NAME


def _import_stack():
    try:
        import pycuda.driver as cuda
        import tensorrt as trt
    except Exception as exc:
        raise BackendError(f"the TensorRT backend needs tensorrt and pycuda ({exc}); install the 'gpu' "
                           "extra on a CUDA host with TensorRT (JetPack, NVIDIA's TensorRT images)") from exc
    return trt, cuda


_LOGGER = None


def trt_logger():
    """One TensorRT logger per process (TensorRT wants a single one)."""
    global _LOGGER
    if _LOGGER is None:
        import tensorrt as trt

        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


@dataclass(frozen=True)
class TensorIO:
    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]  # as the engine declares it, -1 for dynamic dimensions


class _Slot:
    """One execution context bound to one optimisation profile, with its stream and buffers."""

    def __init__(self, engine, profile: int, tensors: list[TensorIO], trt, cuda) -> None:
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = cuda.Stream()
        if not self.context.set_optimization_profile_async(profile, self.stream.handle):
            raise BackendError(f"TensorRT refused optimisation profile {profile}")
        self.profile = profile
        self.max_shapes: dict[str, tuple[int, ...]] = {}
        for t in tensors:
            if t.is_input:
                self.max_shapes[t.name] = tuple(engine.get_tensor_profile_shape(t.name, profile)[2])
                self.context.set_input_shape(t.name, self.max_shapes[t.name])
        for t in tensors:
            if not t.is_input:
                self.max_shapes[t.name] = tuple(self.context.get_tensor_shape(t.name))
        self.host, self.device = {}, {}
        for t in tensors:
            n = max(1, math.prod(self.max_shapes[t.name]))
            self.host[t.name] = cuda.pagelocked_empty(n, t.dtype)
            self.device[t.name] = cuda.mem_alloc(n * t.dtype.itemsize)
            self.context.set_tensor_address(t.name, int(self.device[t.name]))


class TrtRunner:
    """A TensorRT engine file, runnable from several threads: ``run({input: array}) -> {output: array}``."""

    def __init__(self, engine_path: str | Path, contexts: int | None = None, device_index: int = 0) -> None:
        trt, cuda = _import_stack()
        self._trt, self._cuda = trt, cuda
        cuda.init()
        self._ctx = cuda.Device(device_index).retain_primary_context()
        self._ctx.push()
        try:
            data = Path(engine_path).read_bytes()
            self.engine = trt.Runtime(trt_logger()).deserialize_cuda_engine(data)
            if self.engine is None:
                raise BackendError(f"TensorRT could not deserialise {engine_path} (built by another "
                                   "TensorRT version, or damaged); rebuild it with `robis-edge build`")
            self.tensors = []
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                self.tensors.append(TensorIO(
                    name, self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                    np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))),
                    tuple(self.engine.get_tensor_shape(name))))
            n = self.engine.num_optimization_profiles
            n = n if contexts is None else max(1, min(int(contexts), n))
            self._free: queue.Queue[_Slot] = queue.Queue()
            slots = [_Slot(self.engine, p, self.tensors, trt, cuda) for p in range(n)]
            for slot in slots:
                self._free.put(slot)
            self.contexts = n
            self.max_shapes = slots[0].max_shapes  # of profile 0 (robis-edge build makes them equal)
        finally:
            self._ctx.pop()
        self.inputs = [t for t in self.tensors if t.is_input]
        self.outputs = [t for t in self.tensors if not t.is_input]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda = self._cuda
        slot = self._free.get()  # blocks while every context is busy
        self._ctx.push()
        try:
            for t in self.inputs:
                if t.name not in feeds:
                    raise BackendError(f"the engine needs input {t.name!r}")
                arr = np.ascontiguousarray(feeds[t.name], dtype=t.dtype)
                top = slot.max_shapes[t.name]
                if arr.ndim != len(top) or any(a > b for a, b in zip(arr.shape, top)):
                    raise BackendError(f"input {t.name!r} of shape {arr.shape} exceeds the engine's "
                                       f"profile (largest {top}); rebuild with a larger profile")
                if not slot.context.set_input_shape(t.name, arr.shape):
                    raise BackendError(f"TensorRT refused shape {arr.shape} for input {t.name!r}")
                host = slot.host[t.name][:arr.size]
                host[:] = arr.ravel()
                cuda.memcpy_htod_async(slot.device[t.name], host, slot.stream)
            if not slot.context.execute_async_v3(slot.stream.handle):
                raise BackendError("TensorRT failed to enqueue the engine (see the TensorRT log above)")
            shapes = {}
            for t in self.outputs:
                shapes[t.name] = tuple(slot.context.get_tensor_shape(t.name))
                cuda.memcpy_dtoh_async(slot.host[t.name][:math.prod(shapes[t.name])],
                                       slot.device[t.name], slot.stream)
            slot.stream.synchronize()
            return {t.name: np.array(slot.host[t.name][:math.prod(shapes[t.name])]).reshape(shapes[t.name])
                    for t in self.outputs}
        except BackendError:
            raise
        except Exception as exc:  # pycuda / TensorRT runtime errors
            raise BackendError(f"TensorRT execution failed: {exc}") from exc
        finally:
            self._ctx.pop()
            self._free.put(slot)


class TrtBackend:
    """The anomaly-map model as a TensorRT engine, behind the same interface as ``OrtBackend``."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, *, input_size: int, map_size: int, precision: str,
                 reason: str, device: str = "", max_batch: int | None = None) -> None:
        self.runner = TrtRunner(engine_path)
        self.provider = f"TensorRT {self.runner._trt.__version__}" + (f" on {device}" if device else "")
        self.precision, self.reason = precision, reason
        self.input_size, self.map_size = int(input_size), int(map_size)
        names_in = [t.name for t in self.runner.inputs]
        names_out = [t.name for t in self.runner.outputs]
        if names_in != [INPUT_NAME] or OUTPUT_NAME not in names_out:
            raise BackendError(f"the engine must have input '{INPUT_NAME}' and output '{OUTPUT_NAME}'; "
                               f"it has {names_in} / {names_out}")
        top = self.runner.max_shapes[INPUT_NAME]
        if tuple(top[1:]) != (3, self.input_size, self.input_size):
            raise BackendError(f"engine input is {top}, the bundle says N×3×{input_size}×{input_size}")
        self.max_batch = min(int(top[0]), max_batch or int(top[0]))

    def run(self, batch: np.ndarray) -> np.ndarray:
        outs = []
        for k in range(0, len(batch), self.max_batch):
            outs.append(self.runner.run({INPUT_NAME: batch[k:k + self.max_batch]})[OUTPUT_NAME])
        out = outs[0] if len(outs) == 1 else np.concatenate(outs)
        if out.shape != (len(batch), 1, self.map_size, self.map_size):
            raise BackendError(f"engine returned {out.shape}, expected ({len(batch)}, 1, "
                               f"{self.map_size}, {self.map_size})")
        out = out.astype(np.float32, copy=False)
        if not np.isfinite(out).all():
            raise BackendError("the engine produced NaN or Inf scores for this frame")
        return out[:, 0]


class TrtSession:
    """ONNX Runtime's session interface (``run(names, feeds)``, ``get_inputs()``...) over a
    ``TrtRunner``, so that the SAM refiner takes an engine like a session."""

    @dataclass(frozen=True)
    class _Arg:
        name: str

    def __init__(self, engine_path: str | Path, label: str = "TensorRT") -> None:
        self.runner = TrtRunner(engine_path)
        self.label = label

    def get_inputs(self) -> list[_Arg]:
        return [self._Arg(t.name) for t in self.runner.inputs]

    def get_outputs(self) -> list[_Arg]:
        return [self._Arg(t.name) for t in self.runner.outputs]

    def get_providers(self) -> list[str]:
        return [self.label]

    def run(self, names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = self.runner.run(feeds)
        return [out[n] for n in (names or [t.name for t in self.runner.outputs])]
