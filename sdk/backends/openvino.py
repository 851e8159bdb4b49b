"""OpenVINO backend (docs/openvino.md): the bundle's ONNX, or an int8 engine built on the device,
compiled for an OpenVINO device (``CPU`` by default) with its precision set explicitly.

On CPUs with AMX or AVX-512 bf16, OpenVINO runs f32 models in bf16 unless told otherwise; this
backend always passes ``INFERENCE_PRECISION_HINT`` (and ``EXECUTION_MODE_HINT ACCURACY`` for f32),
reads back what the compiled model actually runs and refuses a mismatch. Infer requests come from a
pool (one per concurrent caller, up to ``requests``), so ``serve``'s workers run in parallel; the
compiled model is cached on disk (OpenVINO's ``CACHE_DIR``) so a restart does not recompile.

This module and sdk/engines/openvino/ are the only places that import openvino, lazily.
"""

from __future__ import annotations

import os
import platform
import queue
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..engines.entries import OpenvinoHost
from ..errors import BackendError
from ..vocabulary import CPU_ISAS, OPENVINO_DEVICES

# Our precision names → OpenVINO's element type names (INFERENCE_PRECISION_HINT).
HINTS = {"f32": "f32", "bf16": "bf16", "int8": "f32"}  # int8 engines keep their float parts in f32
INSTALL_HINT = "install the 'openvino' extra (pip install 'robis-edge[openvino]')"


def import_openvino():
    try:
        import openvino as ov
    except Exception as exc:  # ImportError, or a broken native library
        raise BackendError(f"the OpenVINO backend needs openvino ({exc}); {INSTALL_HINT}") from exc
    return ov


def short_version(full: str) -> str:
    """``2026.4.1-22982-e213a147257-releases/2026/4`` → ``2026.4.1``."""
    return full.split("-")[0]


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def isas_of(flags: set[str], capabilities: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The instruction sets of ``CPU_ISAS`` this CPU has, fastest first. ``capabilities``:
    OpenVINO's OPTIMIZATION_CAPABILITIES (its BF16 says native bf16 when the flags are unknown)."""
    has = set()
    if {"amx_bf16", "amx_int8", "amx_tile"} <= flags:
        has.add("amx")
    if {"avx512f", "avx512bw", "avx512_bf16"} <= flags:
        has.add("avx512_bf16")
    if {"avx512f", "avx512bw"} <= flags:
        has.add("avx512")
    if {"avx2", "fma"} <= flags:
        has.add("avx2")
    if "sse4_2" in flags:
        has.add("sse4.2")
    if not flags and "BF16" in capabilities:
        has.add("avx512_bf16")
    return tuple(i for i in CPU_ISAS if i in has)


def bf16_native(isas: tuple[str, ...]) -> bool:
    """bf16 runs in hardware (AMX, AVX-512 bf16); elsewhere OpenVINO would run bf16 as f32."""
    return "amx" in isas or "avx512_bf16" in isas


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def openvino_host() -> OpenvinoHost:
    """This host as OpenVINO engines are matched against it (never raises; cached)."""
    flags = cpu_flags()
    try:
        ov = import_openvino()
        core = ov.Core()
        caps = tuple(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        devices = tuple(d.split(".")[0] for d in core.available_devices)
    except Exception as exc:  # BackendError, or an OpenVINO runtime error
        return OpenvinoHost(None, cpu_name(), isas_of(flags), (), str(exc))
    return OpenvinoHost(short_version(ov.get_version()), cpu_name(), isas_of(flags, caps), devices)


def default_cache_dir() -> Path:
    """Where compiled models are cached: ``$ROBIS_OPENVINO_CACHE``, else
    ``~/.cache/robis-edge/openvino`` (OpenVINO keys each blob by the model, the device, the
    properties and its own version, so bundles never collide and a stale blob is never used)."""
    env = os.environ.get("ROBIS_OPENVINO_CACHE")
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    root = Path(env) if env else base / "robis-edge" / "openvino"
    root.mkdir(parents=True, exist_ok=True)
    return root


def compile_config(precision: str, device: str, threads: int | None, streams: int | None) -> dict:
    """The properties every compile passes: the precision is always explicit."""
    if precision not in HINTS:
        raise BackendError(f"OpenVINO precision {precision!r}: choose one of {', '.join(HINTS)}")
    cfg = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
    if precision == "f32":
        cfg["EXECUTION_MODE_HINT"] = "ACCURACY"
    if device == "CPU" and threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    if streams:
        cfg["NUM_STREAMS"] = int(streams)
    return cfg


def last_line(exc: BaseException) -> str:
    """OpenVINO's message without its chain of ``Exception from …`` lines."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith("Exception from")]
    return " ".join(useful) or (lines[-1] if lines else type(exc).__name__)


def _type_name(t) -> str:
    name = str(getattr(t, "get_type_name", lambda: t)())
    return {"float32": "f32", "f32": "f32", "bf16": "bf16", "f16": "f16"}.get(name, name)


class OvBackend:
    """Runs an anomaly-map model (ONNX, or an OpenVINO IR .xml) with OpenVINO."""

    name = "openvino"

    def __init__(self, model_path: str | Path, *, input_size: int, map_size: int, precision: str = "f32",
                 reason: str = "", device: str = "CPU", threads: int | None = None,
                 streams: int | None = None, requests: int | None = None, max_batch: int | None = None,
                 cache_dir: str | Path | None = None) -> None:
        ov = import_openvino()
        if device.split(".")[0] not in OPENVINO_DEVICES:
            raise BackendError(f"OpenVINO device {device!r}: choose one of {', '.join(OPENVINO_DEVICES)}")
        core = ov.Core()
        if device not in core.available_devices:
            raise BackendError(f"OpenVINO device {device} is not present here (available: "
                               f"{', '.join(core.available_devices)})")
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        core.set_property({"CACHE_DIR": str(cache)})
        try:
            self.compiled = core.compile_model(str(model_path), device,
                                               compile_config(precision, device, threads, streams))
        except Exception as exc:  # OpenVINO raises RuntimeError with its own text
            raise BackendError(f"OpenVINO cannot compile {model_path} for {device} at {precision}: "
                               f"{last_line(exc)}") from exc
        runs = _type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if runs != HINTS[precision]:
            raise BackendError(f"OpenVINO compiled {model_path} to run in {runs}, not {HINTS[precision]} as "
                               f"asked (this {device} has no native {HINTS[precision]}); refusing a silent "
                               "precision change: choose f32")
        self.from_cache = bool(self.compiled.get_property("LOADED_FROM_CACHE"))
        host = openvino_host()
        self.version = short_version(ov.get_version())
        self.device, self.precision, self.reason = device, precision, reason
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        where = f"{host.cpu_name}, {host.isas[0] if host.isas else 'no known ISA'}" if device == "CPU" \
            else core.get_property(device, "FULL_DEVICE_NAME")
        self.provider = f"OpenVINO {self.version} {device} ({where}; {self.streams} stream(s))"
        self.input_size, self.map_size = int(input_size), int(map_size)
        self._check_contract()
        n = requests or max(2, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._free: queue.Queue = queue.Queue()
        for _ in range(n):
            self._free.put(self.compiled.create_infer_request())
        self.requests = n
        self.max_batch = max_batch

    def _check_contract(self) -> None:
        ins = [i.get_any_name() for i in self.compiled.inputs]
        outs = {o.get_any_name(): o for o in self.compiled.outputs}
        if ins != ["image"] or "anomaly_map" not in outs:
            raise BackendError(f"the model must have input 'image' and output 'anomaly_map' (bundle.md); it "
                               f"has inputs {ins} and outputs {list(outs)}")
        self._output = outs["anomaly_map"]
        shape = self.compiled.inputs[0].get_partial_shape()
        s = self.input_size
        dims = [d.get_length() if d.is_static else None for d in shape]
        if len(dims) != 4 or any(d is not None and d != e for d, e in zip(dims[1:], (3, s, s))):
            raise BackendError(f"model input 'image' is {shape}, the bundle says N×3×{s}×{s}")

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        step = self.max_batch or len(batch)
        req = self._free.get()  # blocks while every request is busy
        try:
            outs = []
            for k in range(0, len(batch), step):
                req.infer({0: batch[k:k + step]})
                outs.append(np.array(req.get_tensor(self._output).data, dtype=np.float32))
        except Exception as exc:  # OpenVINO runtime errors
            raise BackendError(f"OpenVINO inference failed: {exc}") from exc
        finally:
            self._free.put(req)
        out = outs[0] if len(outs) == 1 else np.concatenate(outs)
        if out.shape != (len(batch), 1, self.map_size, self.map_size):
            raise BackendError(f"model returned {out.shape}, expected ({len(batch)}, 1, "
                               f"{self.map_size}, {self.map_size})")
        if not np.isfinite(out).all():
            raise BackendError("the model produced NaN or Inf scores for this frame")
        return out[:, 0]
