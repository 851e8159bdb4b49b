"""INP-Former (RoBiS flavour): architecture presets (``arch``), the upstream checkpoint schema
(``checkpoint``), an inference-only torch model that loads upstream checkpoints unchanged
(``model``), its ONNX export and bundle (``onnx_export``, ``bundle_export``) and RoBiS training
(``training``). All but ``arch`` need the ``export`` extra (torch, onnx)."""

from .arch import PRESETS, ArchitectureError, InpFormerArch, preset

__all__ = ["PRESETS", "ArchitectureError", "InpFormerArch", "preset"]
