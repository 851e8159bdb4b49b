"""Mask refinement stages that run after binarisation. ``SamRefiner``: RoBiS' SAM box refinement
(``SAM_Finer``) on ONNX Runtime; see docs/refine.md. numpy / OpenCV / onnxruntime only."""

from ..bundle import SamRefineSpec
from .sam import RefineOutput, SamRefiner, load_sam_refiner

__all__ = ["SamRefiner", "SamRefineSpec", "RefineOutput", "load_sam_refiner"]
