"""TensorRT engines listed in a bundle (``bundle.json`` ``engines``, docs/gpu.md).

An engine is tied to the ONNX file it was built from, the TensorRT version that built it and the
GPU (name and compute capability). ``check_engine`` refuses an engine that does not match this
host and says how to rebuild it; ``select_engine`` picks the matching one among several (a bundle
copied between devices may carry one per device).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import BackendError, BundleError

MODELS = ("anomaly_model", "sam_encoder", "sam_decoder")


@dataclass(frozen=True)
class EngineEntry:
    """One ``engines`` item of bundle.json."""

    model: str  # anomaly_model | sam_encoder | sam_decoder
    file: str  # the engine, relative to the bundle
    onnx_file: str  # the ONNX file it was built from
    onnx_sha256: str
    precision: str  # the step that passed the parity gate (export/tensorrt/plan.py LADDERS)
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    profiles: int = 1  # optimisation profiles = concurrent execution contexts
    max_batch: int = 1  # the profile's largest first dimension (tiles, or SAM boxes)
    fp32_layers: int = 0  # layers pinned to fp32
    parity: dict[str, Any] = field(default_factory=dict)  # the gate's measurements
    built: str = ""  # ISO time

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Any, where: str = "bundle.json") -> EngineEntry:
        if not isinstance(d, dict):
            raise BundleError(f"{where}: every 'engines' item must be an object, got {type(d).__name__}")
        try:
            e = cls(str(d["model"]), str(d["file"]), str(d["onnx_file"]), str(d["onnx_sha256"]),
                    str(d["precision"]), str(d["tensorrt_version"]), str(d["gpu_name"]),
                    str(d["compute_capability"]), int(d.get("profiles", 1)), int(d.get("max_batch", 1)),
                    int(d.get("fp32_layers", 0)), dict(d.get("parity", {})), str(d.get("built", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where}: malformed 'engines' item ({exc!r}); rebuild it with "
                              "`robis-edge build`") from exc
        if e.model not in MODELS:
            raise BundleError(f"{where}: engine for unknown model {e.model!r} (known: {', '.join(MODELS)})")
        return e


def onnx_file_of(bundle, model: str) -> str:
    """The bundle-relative ONNX file of ``model`` (anomaly_model, sam_encoder, sam_decoder)."""
    if model == "anomaly_model":
        return str(bundle.raw["anomaly_model"]["file"])
    sam = bundle.raw.get("refine", {}).get("sam")
    if not isinstance(sam, dict):
        raise BundleError(f"{bundle.root}: no refine.sam section, so no {model} ONNX file")
    return str(sam["encoder" if model == "sam_encoder" else "decoder"]["file"])


def engine_entries(bundle, model: str | None = None) -> list[EngineEntry]:
    """The bundle's engines (of one model when ``model`` is given)."""
    items = bundle.raw.get("engines", [])
    where = str(bundle.root / "bundle.json")
    if not isinstance(items, list):
        raise BundleError(f"{where}: 'engines' must be a list")
    out = [EngineEntry.from_json(d, where) for d in items]
    return [e for e in out if model is None or e.model == model]


def rebuild_command(bundle, precision: str = "fp16") -> str:
    return f"robis-edge build --bundle {bundle.root} --precision {precision}"


def engine_mismatches(entry: EngineEntry, bundle, tensorrt_version: str | None,
                      gpu_name: str | None, compute_capability: str | None) -> list[str]:
    """Why ``entry`` cannot run here (empty when it can)."""
    why = []
    current = bundle.raw.get("files", {}).get(entry.onnx_file)
    if current != entry.onnx_sha256:
        why.append(f"its ONNX file {entry.onnx_file} changed since the build (sha256 "
                   f"{str(current)[:12]}… now, {entry.onnx_sha256[:12]}… then)")
    if entry.file not in bundle.raw.get("files", {}):
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
    items = [d for d in bundle.raw.get("engines", [])
             if not (isinstance(d, dict) and d.get("model") == entry.model
                     and d.get("gpu_name") == entry.gpu_name
                     and d.get("compute_capability") == entry.compute_capability
                     and d.get("tensorrt_version") == entry.tensorrt_version)]
    items.append(entry.to_json())
    bundle.raw["engines"] = items
