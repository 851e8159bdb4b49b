"""NNCF int8 post-training quantisation of the anomaly model, transformer-aware.

``model_type=TRANSFORMER`` plus an ignored scope keeps in float what int8 ruins in ViT anomaly maps
(anomalib #2298): LayerNorm (OpenVINO ``MVN``), softmax, the L2 normalisations and divisions, square
roots and powers, the residual and bias additions, the whole cosine head (``/head/``: cosine
distance, resizes, Gaussian), and the attention's activation × activation products (Q·Kᵀ and
attention·V). What is quantised: the matrix products with weights and the patch convolution.

Why the attention products stay in float: with them quantised, OpenVINO 2026.4's CPU plugin
refuses to compile the quantised INP-Former (``Check 'any_of(scale.size(), OC, 1U)' failed at
…/dnnl_postops_composer.cpp``, the failure issue 15 reports) — per-channel or per-tensor weights
alike; with them in float it compiles (measured on the demo INP-Former, docs/openvino.md).
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


def _weight_source(op):
    """The node feeding ``op``'s second input, through layout and type conversions."""
    node = op.input_value(1).get_node()
    while node.get_type_name() in ("Convert", "Transpose", "Reshape"):
        node = node.input_value(0).get_node()
    return node


def activation_matmuls(model) -> list[str]:
    """Friendly names of the MatMuls whose both inputs are activations (no constant weight)."""
    return [op.get_friendly_name() for op in model.get_ops()
            if op.get_type_name() == "MatMul" and _weight_source(op).get_type_name() != "Constant"]


def float_ops(model) -> list[str]:
    """Friendly names of the ops the ignored scope keeps in float (what the entry counts)."""
    import re

    pats = [re.compile(p) for p in FLOAT_PATTERNS]
    acts = set(activation_matmuls(model))
    return [op.get_friendly_name() for op in model.get_ops()
            if op.get_type_name() in FLOAT_TYPES or op.get_friendly_name() in acts
            or any(p.match(op.get_friendly_name()) for p in pats)]


def quantize_int8(onnx_path: str | Path, tiles: Sequence[np.ndarray], out_xml: str | Path, *,
                  per_channel: bool = True, log: Callable[[str], None] = print) -> int:
    """Quantise ``onnx_path`` on ``tiles`` (each 1×3×S×S, preprocessed) and save the OpenVINO IR
    at ``out_xml`` (+ .bin). Returns how many ops were kept in float."""
    import openvino as ov

    nncf = import_nncf()
    import logging

    nncf.set_log_level(logging.WARNING)  # its INFO lists every op it skips
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
                          ignored_scope=nncf.IgnoredScope(names=activation_matmuls(model),
                                                          types=list(FLOAT_TYPES),
                                                          patterns=list(FLOAT_PATTERNS), validate=False),
                          advanced_parameters=advanced)
    except Exception as exc:  # NNCF raises its own and OpenVINO's errors
        raise EngineError(f"NNCF could not quantise {onnx_path}: {exc}") from exc
    ov.save_model(q, str(out_xml), compress_to_fp16=False)
    return len(kept)
