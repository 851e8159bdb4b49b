"""NNCF int8 post-training quantisation of the anomaly model, transformer-aware.

``model_type=TRANSFORMER`` plus an ignored scope keeps in float what int8 ruins in ViT anomaly maps
(anomalib #2298): LayerNorm (OpenVINO ``MVN``), softmax, the L2 normalisations and divisions, square
roots and powers, the residual and bias additions, and the whole cosine head (``/head/``: cosine
distance, resizes, Gaussian). What is quantised: the matrix products and the patch convolution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ...errors import EngineError

FLOAT_TYPES = ("MVN", "Softmax", "ReduceL2", "NormalizeL2", "Divide", "Sqrt", "Power", "Add",
               "ReduceMean", "ReduceSum", "Interpolate")
FLOAT_PATTERNS = (r".*/head/.*",)


def import_nncf():
    try:
        import nncf
    except Exception as exc:
        raise EngineError(f"int8 needs NNCF ({exc}); install the 'openvino' extra "
                          "(pip install 'robis-edge[openvino]')") from exc
    return nncf


def float_ops(model) -> list[str]:
    """Friendly names of the ops the ignored scope keeps in float (what the entry counts)."""
    import re

    pats = [re.compile(p) for p in FLOAT_PATTERNS]
    return [op.get_friendly_name() for op in model.get_ops()
            if op.get_type_name() in FLOAT_TYPES or any(p.match(op.get_friendly_name()) for p in pats)]


def quantize_int8(onnx_path: str | Path, tiles: Sequence[np.ndarray], out_xml: str | Path, *,
                  per_channel: bool = True, log: Callable[[str], None] = print) -> int:
    """Quantise ``onnx_path`` on ``tiles`` (each 1×3×S×S, preprocessed) and save the OpenVINO IR
    at ``out_xml`` (+ .bin). Returns how many ops were kept in float."""
    import openvino as ov

    nncf = import_nncf()
    if not tiles:
        raise EngineError("int8 calibration needs tiles (the bundle's reference tiles, --calibration-images)")
    model = ov.Core().read_model(str(onnx_path))
    kept = float_ops(model)
    advanced = None
    if not per_channel:
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters as Advanced
        from nncf.quantization.advanced_parameters import QuantizationParameters

        advanced = Advanced(
            weights_quantization_params=QuantizationParameters(per_channel=False))
    log(f"      NNCF {nncf.__version__}: int8 PTQ on {len(tiles)} tiles (transformer-aware, "
        f"{len(kept)} ops kept in float, {'per-channel' if per_channel else 'per-tensor'} weights)")
    try:
        q = nncf.quantize(model, nncf.Dataset(list(tiles)), model_type=nncf.ModelType.TRANSFORMER,
                          subset_size=len(tiles), fast_bias_correction=True,
                          ignored_scope=nncf.IgnoredScope(types=list(FLOAT_TYPES),
                                                          patterns=list(FLOAT_PATTERNS), validate=False),
                          advanced_parameters=advanced)
    except Exception as exc:  # NNCF raises its own and OpenVINO's errors
        raise EngineError(f"NNCF could not quantise {onnx_path}: {exc}") from exc
    ov.save_model(q, str(out_xml), compress_to_fp16=False)
    return len(kept)
