"""What GPU stack this host has: TensorRT, pycuda, the CUDA driver and the GPU itself.

Every probe is lazy and never raises: a missing package or driver is a finding with its reason
(the import error's text), which backend selection and ``robis-edge selftest`` report as is.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class GpuInfo:
    """The CUDA device a TensorRT engine is built for and checked against."""

    name: str  # e.g. "NVIDIA H100 80GB HBM3", "Orin (nvgpu)"
    compute_capability: str  # "9.0", "8.7"
    total_memory_mb: int
    driver_version: str  # CUDA driver API version, e.g. "12.4"
    index: int = 0


@dataclass(frozen=True)
class Probe:
    """One component: present with a version, or absent with why."""

    name: str
    version: str | None
    detail: str = ""

    @property
    def present(self) -> bool:
        return self.version is not None


def _module_probe(name: str, module: str, version_attr: str = "__version__") -> Probe:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken native library (OSError, RuntimeError)
        return Probe(name, None, f"cannot import {module}: {exc}".strip())
    return Probe(name, str(getattr(mod, version_attr, "unknown")))


def tensorrt_probe() -> Probe:
    """The TensorRT Python bindings (``import tensorrt``)."""
    return _module_probe("TensorRT", "tensorrt")


def pycuda_probe() -> Probe:
    """pycuda (``import pycuda.driver``), which the TensorRT backend uses for memory and streams."""
    p = _module_probe("pycuda", "pycuda")
    if not p.present:
        return p
    try:
        importlib.import_module("pycuda.driver")
    except Exception as exc:
        return Probe("pycuda", None, f"pycuda {p.version} is installed but pycuda.driver fails: {exc}")
    return p


@lru_cache(maxsize=1)
def cuda_device(index: int = 0) -> tuple[GpuInfo | None, str]:
    """The CUDA device ``index`` through pycuda, or None and the reason. Cached: one probe per process."""
    p = pycuda_probe()
    if not p.present:
        return None, p.detail
    import pycuda.driver as cuda

    try:
        cuda.init()
        count = cuda.Device.count()
        if count <= index:
            return None, f"the CUDA driver reports {count} GPU(s); device {index} does not exist"
        dev = cuda.Device(index)
        major, minor = dev.compute_capability()
        drv = cuda.get_driver_version()  # e.g. 12040
        return GpuInfo(dev.name(), f"{major}.{minor}", int(dev.total_memory() // 2**20),
                       f"{drv // 1000}.{(drv % 1000) // 10}", index), ""
    except Exception as exc:  # pycuda.driver.Error and friends: no driver, no device
        return None, f"CUDA is not usable: {exc}"


def onnxruntime_providers() -> list[str]:
    """Execution providers of the installed onnxruntime (empty when it cannot be imported)."""
    try:
        import onnxruntime as ort
    except Exception:
        return []
    return list(ort.get_available_providers())
