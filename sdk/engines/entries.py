"""Engines listed in a bundle (``bundle.json`` ``engines``, docs/gpu.md).

An engine is tied to the ONNX file it was built from, the TensorRT version that built it and the
GPU (name and compute capability). ``check_engine`` refuses an engine that does not match this
host and says how to rebuild it; ``select_engine`` picks the matching one among several (a bundle
copied between devices may carry one per device).
"""

from __future__ import annotations

from ..bundle import EngineEntry
from ..errors import BackendError, BundleError

__all__ = ["EngineEntry", "onnx_file_of", "engine_entries", "rebuild_command", "engine_mismatches",
           "select_engine", "check_engine", "upsert_engine"]


def onnx_file_of(bundle, model: str) -> str:
    """The bundle-relative ONNX file of ``model`` (anomaly_model, sam_encoder, sam_decoder)."""
    if model == "anomaly_model":
        return bundle.model.file
    sam = bundle.sam
    if sam is None:
        raise BundleError(f"{bundle.root}: no refine.sam section, so no {model} ONNX file")
    return sam.encoder_file if model == "sam_encoder" else sam.decoder_file


def engine_entries(bundle, model: str | None = None) -> list[EngineEntry]:
    """The bundle's engines (of one model when ``model`` is given)."""
    return [e for e in bundle.engines if model is None or e.model == model]


def rebuild_command(bundle, precision: str = "fp16") -> str:
    return f"robis-edge build --bundle {bundle.root} --precision {precision}"


def engine_mismatches(entry: EngineEntry, bundle, tensorrt_version: str | None,
                      gpu_name: str | None, compute_capability: str | None) -> list[str]:
    """Why ``entry`` cannot run here (empty when it can)."""
    why = []
    files = bundle.files
    current = files.get(entry.onnx_file)
    if current != entry.onnx_sha256:
        why.append(f"its ONNX file {entry.onnx_file} changed since the build (sha256 "
                   f"{str(current)[:12]}… now, {entry.onnx_sha256[:12]}… then)")
    if entry.file not in files:
        why.append(f"the engine file {entry.file} is not listed under 'files' with its sha256")
    if tensorrt_version is None:
        why.append("TensorRT is not installed here")
    elif tensorrt_version != entry.tensorrt_version:
        why.append(f"it was built by TensorRT {entry.tensorrt_version}, this host has {tensorrt_version}")
    if gpu_name is None:
        why.append("no CUDA GPU is usable here")
    elif (gpu_name, compute_capability) != (entry.gpu_name, entry.compute_capability):
        why.append(f"it was built for {entry.gpu_name} (compute capability {entry.compute_capability}), "
                   f"this host has {gpu_name} ({compute_capability})")
    return why


def select_engine(bundle, model: str, tensorrt_version: str | None, gpu_name: str | None,
                  compute_capability: str | None) -> tuple[EngineEntry | None, str]:
    """The engine of ``model`` that runs on this host, or None with the reasons every listed engine
    was refused (empty reason when the bundle lists none)."""
    entries = engine_entries(bundle, model)
    reasons = []
    for e in entries:
        why = engine_mismatches(e, bundle, tensorrt_version, gpu_name, compute_capability)
        if not why:
            return e, f"engine {e.file} ({e.precision}, TensorRT {e.tensorrt_version}, {e.gpu_name})"
        reasons.append(f"engine {e.file}: " + "; ".join(why))
    if reasons:
        reasons.append(f"rebuild on this device: {rebuild_command(bundle, entries[0].precision)}")
    return None, " | ".join(reasons)


def check_engine(entry: EngineEntry, bundle, tensorrt_version: str | None, gpu_name: str | None,
                 compute_capability: str | None) -> None:
    """Raise ``BackendError`` when ``entry`` cannot run on this host, with the rebuild command."""
    why = engine_mismatches(entry, bundle, tensorrt_version, gpu_name, compute_capability)
    if why:
        raise BackendError(f"TensorRT engine {entry.file} cannot run here: {'; '.join(why)}. Engines do "
                           "not move between GPUs or TensorRT versions; rebuild it on this device: "
                           f"{rebuild_command(bundle, entry.precision)}")


def upsert_engine(bundle, entry: EngineEntry) -> None:
    """Add ``entry`` to the bundle's ``engines``, replacing one for the same model, GPU and TensorRT."""
    same = (entry.model, entry.gpu_name, entry.compute_capability, entry.tensorrt_version)
    items = [e.to_json() for e in bundle.engines
             if (e.model, e.gpu_name, e.compute_capability, e.tensorrt_version) != same]
    bundle.set_section("engines", [*items, entry.to_json()])
