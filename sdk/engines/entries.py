"""Engines listed in a bundle (``bundle.json`` ``engines``, docs/gpu.md, docs/openvino.md).

An engine is tied to the ONNX file it was built from and to its target's runtime and hardware:
TensorRT engines to the TensorRT version and the GPU (name and compute capability), OpenVINO
engines to the OpenVINO version and the CPU instruction set they rely on. ``check_engine`` refuses
an engine that does not match this host and says how to rebuild it; ``select_engine`` /
``select_openvino_engine`` pick the matching one among several (a bundle copied between devices
may carry one per device).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..bundle import EngineEntry
from ..errors import BackendError, BundleError
from ..vocabulary import CPU_ISAS

__all__ = ["EngineEntry", "onnx_file_of", "engine_entries", "rebuild_command", "engine_mismatches",
           "select_engine", "check_engine", "upsert_engine", "OpenvinoHost", "openvino_mismatches",
           "select_openvino_engine", "check_openvino_engine"]


def onnx_file_of(bundle, model: str) -> str:
    """The bundle-relative ONNX file of ``model`` (anomaly_model, sam_encoder, sam_decoder)."""
    if model == "anomaly_model":
        return bundle.model.file
    sam = bundle.sam
    if sam is None:
        raise BundleError(f"{bundle.root}: no refine.sam section, so no {model} ONNX file")
    return sam.encoder_file if model == "sam_encoder" else sam.decoder_file


def engine_entries(bundle, model: str | None = None, target: str | None = None) -> list[EngineEntry]:
    """The bundle's engines (of one model / one target when given)."""
    return [e for e in bundle.engines
            if (model is None or e.model == model) and (target is None or e.target == target)]


def rebuild_command(bundle, precision: str = "fp16", target: str = "tensorrt") -> str:
    if target == "openvino":
        return f"robis-edge build --bundle {bundle.root} --target openvino --precision {precision}"
    return f"robis-edge build --bundle {bundle.root} --precision {precision}"


def _onnx_changed(entry: EngineEntry, files: dict[str, str]) -> list[str]:
    """The refusal of an engine whose ONNX file changed since it was built (empty when unchanged)."""
    current = files.get(entry.onnx_file)
    if current == entry.onnx_sha256:
        return []
    return [f"its ONNX file {entry.onnx_file} changed since the build (sha256 {str(current)[:12]}… now, "
            f"{entry.onnx_sha256[:12]}… then)"]


def engine_mismatches(entry: EngineEntry, bundle, tensorrt_version: str | None,
                      gpu_name: str | None, compute_capability: str | None) -> list[str]:
    """Why ``entry`` cannot run here (empty when it can)."""
    files = bundle.files
    why = _onnx_changed(entry, files)
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
    entries = engine_entries(bundle, model, "tensorrt")
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


def _identity(e: EngineEntry) -> tuple:
    if e.target == "openvino":
        return (e.model, e.target, e.openvino_version, e.cpu_name, e.isa, e.device)
    return (e.model, e.target, e.gpu_name, e.compute_capability, e.tensorrt_version)


def upsert_engine(bundle, entry: EngineEntry) -> None:
    """Add ``entry`` to the bundle's ``engines``, replacing one for the same model, target and
    hardware (GPU and TensorRT; CPU, ISA, device and OpenVINO)."""
    items = [e.to_json() for e in bundle.engines if _identity(e) != _identity(entry)]
    bundle.set_section("engines", [*items, entry.to_json()])


# -- OpenVINO ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpenvinoHost:
    """What an OpenVINO engine is matched against: the runtime's version (None: not installed),
    the CPU's name and the instruction sets it has (sdk.vocabulary.CPU_ISAS), the devices."""

    version: str | None
    cpu_name: str
    isas: tuple[str, ...]
    devices: tuple[str, ...] = ("CPU",)
    detail: str = ""  # why OpenVINO is absent


def openvino_mismatches(entry: EngineEntry, bundle, host: OpenvinoHost) -> list[str]:
    """Why the OpenVINO engine ``entry`` cannot run on ``host`` (empty when it can)."""
    files = bundle.files
    why = _onnx_changed(entry, files)
    for rel in (entry.file, entry.weights_file):
        if rel and rel not in files:
            why.append(f"the engine file {rel} is not listed under 'files' with its sha256")
    if host.version is None:
        why.append("OpenVINO is not installed here" + (f" ({host.detail})" if host.detail else ""))
    elif host.version != entry.openvino_version:
        why.append(f"it was built by OpenVINO {entry.openvino_version}, this host has {host.version}")
    if entry.isa not in host.isas:
        why.append(f"it relies on {entry.isa} ({entry.cpu_name}), which this CPU ({host.cpu_name}) lacks "
                   f"(it has {', '.join(host.isas) or 'none of ' + ', '.join(CPU_ISAS)})")
    if host.version is not None and entry.device not in host.devices:
        why.append(f"it was compiled for OpenVINO device {entry.device}, this host has "
                   f"{', '.join(host.devices)}")
    return why


def select_openvino_engine(bundle, model: str, host: OpenvinoHost) -> tuple[EngineEntry | None, str]:
    """The OpenVINO engine of ``model`` that runs on ``host`` (fastest precision first), or None
    with the reasons every listed one was refused (empty when the bundle lists none)."""
    entries = sorted(engine_entries(bundle, model, "openvino"), key=lambda e: _SPEED.get(e.precision, 9))
    reasons = []
    for e in entries:
        why = openvino_mismatches(e, bundle, host)
        if not why:
            return e, (f"OpenVINO engine {e.precision} (OpenVINO {e.openvino_version}, {e.device}, "
                       f"relies on {e.isa}; built on {e.cpu_name})")
        reasons.append(f"OpenVINO engine {e.precision} ({e.file or 'compiled from ' + e.onnx_file}): "
                       + "; ".join(why))
    if reasons:
        reasons.append("rebuild on this device: "
                       + rebuild_command(bundle, "auto", "openvino"))
    return None, " | ".join(reasons)


def check_openvino_engine(entry: EngineEntry, bundle, host: OpenvinoHost) -> None:
    """Raise ``BackendError`` when the OpenVINO engine cannot run on ``host``, with the rebuild command."""
    why = openvino_mismatches(entry, bundle, host)
    if why:
        raise BackendError(f"OpenVINO engine {entry.precision} cannot run here: {'; '.join(why)}. Rebuild "
                           f"it on this device: {rebuild_command(bundle, entry.precision, 'openvino')}")


_SPEED = {"int8": 0, "bf16": 1, "f32": 2}
