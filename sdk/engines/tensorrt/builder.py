"""The TensorRT 10 builder calls: ONNX parser, optimisation profiles, fp32 pins, timing cache.

The only module of ``robis-edge build`` that touches TensorRT's builder; kept small and plain so
that ``robis-edge selftest`` exercises it on the device (it builds its own small model with it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ...backends.tensorrt import trt_logger
from ...errors import EngineError
from .plan import LayerInfo, fp32_layers


def import_tensorrt():
    try:
        import tensorrt as trt
    except Exception as exc:
        raise EngineError(f"building engines needs TensorRT's Python bindings ({exc}); they come with "
                          "JetPack (python3-libnvinfer) or NVIDIA's TensorRT images; check with "
                          "`robis-edge selftest`") from exc
    if int(trt.__version__.split(".")[0]) < 10:
        raise EngineError(f"TensorRT {trt.__version__} is too old: robis-edge build needs TensorRT 10")
    return trt


def network_layers(network) -> list[LayerInfo]:
    return [LayerInfo(network.get_layer(i).name, network.get_layer(i).type.name)
            for i in range(network.num_layers)]


def pin_fp32(trt, network, names: Sequence[str]) -> int:
    """Run the named layers and their floating-point outputs in fp32; returns how many were pinned."""
    wanted, done = set(names), 0
    floats = (trt.float32, trt.float16)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name not in wanted:
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            if layer.get_output(j).dtype in floats:
                layer.set_output_type(j, trt.float32)
        done += 1
    return done


class _Calibrator:
    """INT8 entropy calibration over given input batches (pycuda device memory)."""

    def __new__(cls, trt, batches: list[np.ndarray], cache: Path | None):
        import pycuda.driver as cuda

        class Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self) -> None:
                super().__init__()
                self.batches, self.k = batches, 0
                self.mem = cuda.mem_alloc(max(b.nbytes for b in batches))

            def get_batch_size(self) -> int:
                return int(batches[0].shape[0])

            def get_batch(self, names):
                if self.k >= len(self.batches):
                    return None
                cuda.memcpy_htod(self.mem, np.ascontiguousarray(self.batches[self.k], np.float32))
                self.k += 1
                return [int(self.mem)]

            def read_calibration_cache(self):
                return cache.read_bytes() if cache is not None and cache.is_file() else None

            def write_calibration_cache(self, data) -> None:
                if cache is not None:
                    cache.write_bytes(bytes(data))

        return Calibrator()


def build_engine(onnx_path: str | Path, shapes: dict, step: str, *, profiles: int = 1, workspace_mb: int = 0,
                 timing_cache: str | Path | None = None, int8_batches: list[np.ndarray] | None = None,
                 log: Callable[[str], None] = print) -> tuple[bytes, int]:
    """Build a serialised engine at precision ``step`` (plan.LADDERS); returns it and the number
    of layers pinned to fp32. ``shapes``: input name → (min, opt, max)."""
    trt = import_tensorrt()
    logger = trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from file: external weight data is found
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineError(f"TensorRT cannot parse {onnx_path}:\n  " + "\n  ".join(errors))
    config = builder.create_builder_config()
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for _ in range(profiles):
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    pinned = 0
    if step != "fp32":
        config.set_flag(trt.BuilderFlag.FP16)
        if step == "int8":
            if not int8_batches:
                raise EngineError("int8 needs calibration batches (the bundle's reference tiles)")
            config.set_flag(trt.BuilderFlag.INT8)
            if len(shapes) != 1:
                raise EngineError("int8 calibration is implemented for single-input models only")
            config.int8_calibrator = _Calibrator(trt, int8_batches, None)
            calib = builder.create_optimization_profile()  # exactly the calibration batches' shape
            shape = tuple(int8_batches[0].shape)
            calib.set_shape(next(iter(shapes)), shape, shape, shape)
            config.set_calibration_profile(calib)
        names = fp32_layers(network_layers(network), step)
        if names:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            pinned = pin_fp32(trt, network, names)
    cache_path = Path(timing_cache) if timing_cache else None
    old = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    cache = config.create_timing_cache(old)
    config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.perf_counter()
    log(f"      TensorRT {trt.__version__}: building {Path(onnx_path).name} at {step} "
        f"({pinned} layers pinned to fp32, {profiles} profile(s)); this takes minutes…")
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise EngineError(f"TensorRT failed to build {onnx_path} at {step} (see its log above)")
    log(f"      built in {time.perf_counter() - t0:.0f} s")
    if cache_path is not None:
        tmp = cache_path.with_name(cache_path.name + ".tmp")
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        os.replace(tmp, cache_path)
    return bytes(blob), pinned
