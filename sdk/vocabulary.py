"""The project's words, in one place and standard library only.

Command definitions (``robis-edge --help`` on a device without numpy or torch) and the library
both import these names, so a choice offered on the command line and the value the code accepts
can never drift apart.
"""

from __future__ import annotations

# Frame colour layouts a caller can declare (``Inspector.inspect(color=...)``, protocol ``color``).
COLORS: tuple[str, ...] = ("gray", "bgr", "rgb")

# Model backends (``create_backend``, ``--backend``).
BACKENDS: tuple[str, ...] = ("auto", "tensorrt", "onnxruntime", "ort-cpu", "ort-cuda", "ort-tensorrt",
                              "openvino")
STREAMS_HELP = ("OpenVINO CPU streams: inference queues that run in parallel, for serve's workers "
                "(default: OpenVINO's latency hint; at most one per thread). Only the openvino backend "
                "uses it")
BACKEND_HELP = ("auto (default: the bundle's TensorRT engine, else ONNX Runtime TensorRT/CUDA execution "
                "provider, else the bundle's OpenVINO engine, else ONNX Runtime CPU; says why), tensorrt, "
                "onnxruntime, ort-cpu, ort-cuda, ort-tensorrt, openvino (the bundle's OpenVINO engine, "
                "else the ONNX in f32 accuracy mode)")

# Engine targets of ``robis-edge build`` (docs/gpu.md, docs/openvino.md) and their precisions.
BUILD_TARGETS: tuple[str, ...] = ("tensorrt", "openvino")
TENSORRT_PRECISIONS: tuple[str, ...] = ("fp16", "fp32", "int8")
OPENVINO_PRECISIONS: tuple[str, ...] = ("auto", "f32", "bf16", "int8")
# OpenVINO device names a bundle may be compiled for (``--openvino-device``).
OPENVINO_DEVICES: tuple[str, ...] = ("CPU", "GPU", "NPU")
# CPU instruction sets an OpenVINO engine relies on, fastest first (docs/openvino.md).
CPU_ISAS: tuple[str, ...] = ("amx", "avx512_bf16", "avx512", "avx2", "sse4.2")

# Statistic scopes (docs/architecture.md).
SCOPES: tuple[str, ...] = ("calibrated", "rolling", "batch")

# Binarisation methods and arithmetic (docs/binarization.md).
BINARIZE_METHODS: tuple[str, ...] = ("mebin+meanstd", "mebin", "meanstd", "fixed")
BINARIZE_PRECISIONS: tuple[str, ...] = ("float16", "float32")

# SAM-Finer (docs/refine.md): mask-token modes, and the channel order of the SAM input.
SAM_MODES: tuple[str, ...] = ("single", "multi_or")
SAM_BUNDLE_MODES: tuple[str, ...] = (*SAM_MODES, "off")
SAM_CHANNEL_ORDERS: tuple[str, ...] = ("bgr_as_rgb", "rgb")
SAM_MODEL_TYPES: tuple[str, ...] = ("vit_b", "vit_l", "vit_h")

# Refinement of the coarse mask (``--refine``; docs/refine.md): none, SAM-Finer, TTT4AS.
REFINE_MODES: tuple[str, ...] = ("none", "sam", "ttt")
TTT_CLASS_WEIGHTS: tuple[str, ...] = ("balanced", "none")
TTT_NORMALIZE: tuple[str, ...] = ("none", "l2")
TTT_VERDICT_FROM: tuple[str, ...] = ("refined", "coarse")

# Preprocessing of a tile (bundle ``preprocess``).
CHANNEL_ORDERS: tuple[str, ...] = ("RGB", "BGR")
RESIZE_METHODS: tuple[str, ...] = ("pil_bilinear_antialias",)

# Dataset layouts of ``robis-edge evaluate`` (docs/evaluation.md).
DATASET_LAYOUTS: tuple[str, ...] = ("auto", "mvtec_ad2", "mvtec_ad", "pairs")

# Synthetic scenes of the camera simulator (sdk.tools.synthetic): textured surfaces, brushed sheets.
SCENES: tuple[str, ...] = ("surface", "sheet")

# Fixed names of serve's line-integration outputs (docs/integration.md).
MQTT_DEFAULT_PREFIX = "robis-edge"
OPCUA_NAMESPACE = "urn:robis-edge"

# The models a bundle can hold, by their role (engines, build plans).
MODEL_ROLES: tuple[str, ...] = ("anomaly_model", "sam_encoder", "sam_decoder")


def is_valid_name(name: object) -> bool:
    """Camera and product names: non-empty printable ASCII without spaces, at most 128 characters
    (they become ZeroMQ topics, MQTT topics and OPC UA node names)."""
    return (isinstance(name, str) and 0 < len(name) <= 128 and name.isascii() and name.isprintable()
            and " " not in name)


def parse_product_bundle(spec: str, path_exists=None) -> tuple[str | None, str]:
    """A ``--bundle`` value: ``PATH`` or ``PRODUCT=PATH`` → (product or None, path).

    A value that contains ``=`` but names an existing path (``path_exists(spec)``) is a path. The
    product name must be valid (``is_valid_name``); ``ValueError`` says what is wrong otherwise."""
    if "=" not in spec or (path_exists is not None and path_exists(spec)):
        if not spec:
            raise ValueError("--bundle needs a path")
        return None, spec
    name, path = spec.split("=", 1)
    if not is_valid_name(name) or not path:
        raise ValueError(f"--bundle {spec!r}: expected PRODUCT=PATH with a product name of printable "
                         "ASCII without spaces")
    return name, path
