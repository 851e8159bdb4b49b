"""INP-Former (RoBiS flavour): architecture presets, an inference-only torch model that loads
upstream checkpoints unchanged, and its ONNX export (needs the ``export`` extra: torch, onnx)."""

from .arch import PRESETS, ArchitectureError, InpFormerArch, preset

__all__ = ["PRESETS", "ArchitectureError", "InpFormerArch", "preset"]
