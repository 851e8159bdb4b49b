"""What ``robis-edge build`` builds, decided from the bundle alone (no TensorRT needed).

- one ``ModelPlan`` per ONNX model of the bundle: optimisation-profile shapes (the tile model:
  batch 1…tiles per frame; the SAM decoder: boxes 1…16; the SAM encoder: fixed) and the
  precision ladder the parity gate walks down;
- which layers stay in fp32 at each precision (docs/gpu.md: LayerNorm, the L2 normalisation
  and the cosine head, softmax), from layer names and kinds, the same rules for TensorRT's parsed
  network and for the ONNX graph it came from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ...errors import InputError
from ...geometry import TilingPlan
from ...refine.ops import SAM_IMAGE_SIZE

PRECISIONS = ("fp32", "fp16", "int8")
# The ladder the gate walks down: each step keeps more in fp32. "fp16-safe" is fp16 with every
# layer but the MLP/convolution matrix products pinned to fp32.
LADDERS = {"int8": ("int8", "fp16", "fp16-safe", "fp32"), "fp16": ("fp16", "fp16-safe", "fp32"),
           "fp32": ("fp32",)}
DEFAULT_FRAME = (2048, 2448)  # H, W of MVTec AD 2 frames (RoBiS: 9 tiles of 1024)
MAX_BOXES = 16
SAM_EMBED = (1, 256, 64, 64)

# Layer kinds are TensorRT's LayerType names.
FRAGILE_KINDS = {"NORMALIZATION", "SOFTMAX", "REDUCE"}
FRAGILE_OPS = {"LayerNormalization", "Softmax", "ReduceL2", "ReduceSum", "ReduceMean", "Div", "Pow", "Sqrt",
               "Reciprocal", "Exp", "Log"}
HEAD_SCOPES = ("/head/",)  # the cosine head, its resizes and the Gaussian (export/inpformer)
FP16_SAFE_KEEP = ("/mlp/", "/patch_embed/")  # the only fp16 matrix products at the "fp16-safe" step
# Kinds that compute in a floating-point precision (the rest move or reshape data).
COMPUTE_KINDS = {"NORMALIZATION", "SOFTMAX", "REDUCE", "MATRIX_MULTIPLY", "CONVOLUTION", "RESIZE",
                 "ELEMENTWISE", "UNARY", "ACTIVATION", "SCALE", "POOLING"}


# ONNX ops as TensorRT layer kinds, so that the rules below apply to an ONNX graph's nodes too
# (tests on our exported graphs; the fp16 ONNX copy of export/onnx_fp16.py).
ONNX_KINDS = {"LayerNormalization": "NORMALIZATION", "Softmax": "SOFTMAX", "ReduceL2": "REDUCE",
              "ReduceSum": "REDUCE", "ReduceMean": "REDUCE", "ReduceMax": "REDUCE",
              "MatMul": "MATRIX_MULTIPLY", "Gemm": "MATRIX_MULTIPLY", "Conv": "CONVOLUTION",
              "Resize": "RESIZE", "Add": "ELEMENTWISE",
              "Sub": "ELEMENTWISE", "Mul": "ELEMENTWISE", "Div": "ELEMENTWISE", "Pow": "ELEMENTWISE",
              "Sqrt": "UNARY", "Erf": "UNARY", "Exp": "UNARY", "Reciprocal": "UNARY", "Relu": "ACTIVATION",
              "Clip": "ACTIVATION", "Sigmoid": "ACTIVATION", "Tanh": "ACTIVATION"}


@dataclass(frozen=True)
class LayerInfo:
    name: str
    kind: str  # TensorRT LayerType name, e.g. "NORMALIZATION"


def onnx_layers(model) -> list[LayerInfo]:
    """An ONNX graph's nodes as layers, named as TensorRT's parser names them."""
    return [LayerInfo(n.name or n.output[0], ONNX_KINDS.get(n.op_type, n.op_type.upper()))
            for n in model.graph.node]


@dataclass(frozen=True)
class ModelPlan:
    """One engine to build."""

    model: str  # anomaly_model | sam_encoder | sam_decoder
    onnx_file: str
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # input → min/opt/max
    ladder: tuple[str, ...]
    profiles: int

    @property
    def max_batch(self) -> int:
        return max(s[2][0] for s in self.shapes.values())


def op_of(name: str) -> str:
    """The ONNX op a layer came from, read off its name ('/blocks.0/attn/Div_1' → 'Div')."""
    last = name.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"(_\d+)+$", "", last.split(".")[0])


def is_fragile(layer: LayerInfo) -> bool:
    """Layers that overflow or underflow in fp16 (docs/gpu.md)."""
    return (layer.kind in FRAGILE_KINDS or op_of(layer.name) in FRAGILE_OPS
            or any(s in layer.name for s in HEAD_SCOPES))


def fp32_layers(layers: Iterable[LayerInfo], step: str) -> list[str]:
    """Names of the compute layers pinned to fp32 at ``step`` (empty for plain fp32 engines)."""
    out = []
    for layer in layers:
        if layer.kind not in COMPUTE_KINDS or step == "fp32":
            continue
        if step in ("fp16", "int8"):
            pin = is_fragile(layer)
        elif step == "fp16-safe":
            pin = is_fragile(layer) or not (layer.kind in ("MATRIX_MULTIPLY", "CONVOLUTION")
                                            and any(s in layer.name for s in FP16_SAFE_KEEP))
        else:
            raise InputError(f"unknown precision step {step!r}")
        if pin:
            out.append(layer.name)
    return out


def tiles_per_frame(bundle, frame_hw: tuple[int, int]) -> int:
    window, overlap = bundle.tiling
    return TilingPlan(frame_hw[0], frame_hw[1], window, overlap).num_tiles


def model_plans(bundle, precision: str = "fp16", *, frame_hw: tuple[int, int] | None = None,
                contexts: int = 2, max_boxes: int = MAX_BOXES,
                models: Sequence[str] | None = None) -> list[ModelPlan]:
    """The engines to build for ``bundle``: the anomaly model always, the SAM encoder and decoder
    when the bundle refines with SAM. The SAM decoder is always fp32 (docs/gpu.md), the SAM
    encoder at most fp16."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if contexts < 1:
        raise InputError(f"contexts must be at least 1 (got {contexts})")
    if not 1 <= max_boxes <= 256:
        raise InputError(f"max boxes must be in 1..256 (got {max_boxes})")
    hw = frame_hw or bundle.frame_hw or DEFAULT_FRAME
    n = tiles_per_frame(bundle, hw)
    s = bundle.preprocess.size
    fixed = bundle.model.max_batch  # a model with a fixed batch (bundle new) takes exactly that many
    lo = fixed or 1
    n = fixed or n
    plans = [ModelPlan("anomaly_model", bundle.model.file,
                       {"image": ((lo, 3, s, s), (n, 3, s, s), (n, 3, s, s))}, LADDERS[precision], contexts)]
    sam = bundle.sam
    if sam is not None and sam.mode != "off":
        enc_ladder = LADDERS["fp16" if precision == "int8" else precision]
        img = (1, 3, SAM_IMAGE_SIZE, SAM_IMAGE_SIZE)
        top = min(sam.top_n, max_boxes)
        plans.append(ModelPlan("sam_encoder", sam.encoder_file, {"image": (img, img, img)},
                               enc_ladder, contexts))
        plans.append(ModelPlan("sam_decoder", sam.decoder_file,
                               {"embeddings": (SAM_EMBED, SAM_EMBED, SAM_EMBED),
                                "boxes": ((1, 4), (top, 4), (max_boxes, 4))}, LADDERS["fp32"], contexts))
    if models:
        unknown = set(models) - {p.model for p in plans}
        if unknown:
            raise InputError(f"this bundle has no {', '.join(sorted(unknown))} to build "
                             f"(it has {', '.join(p.model for p in plans)})")
        plans = [p for p in plans if p.model in models]
    return plans
