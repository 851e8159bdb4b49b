"""The project's words, in one place and standard library only.

Command definitions (``robis-edge --help`` on a device without numpy or torch) and the library
both import these names, so a choice offered on the command line and the value the code accepts
can never drift apart.
"""

from __future__ import annotations

# Frame colour layouts a caller can declare (``Inspector.inspect(color=...)``, protocol ``color``).
COLORS: tuple[str, ...] = ("gray", "bgr", "rgb")

# Model backends (``create_backend``, ``--backend``).
BACKENDS: tuple[str, ...] = ("auto", "tensorrt", "onnxruntime", "ort-cpu", "ort-cuda", "ort-tensorrt")
BACKEND_HELP = ("auto (default: the bundle's TensorRT engine, else ONNX Runtime TensorRT/CUDA execution "
                "provider, else CPU; says why), tensorrt, onnxruntime, ort-cpu, ort-cuda, ort-tensorrt")

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

# Preprocessing of a tile (bundle ``preprocess``).
CHANNEL_ORDERS: tuple[str, ...] = ("RGB", "BGR")
RESIZE_METHODS: tuple[str, ...] = ("pil_bilinear_antialias",)

# Dataset layouts of ``robis-edge evaluate`` (docs/evaluation.md).
DATASET_LAYOUTS: tuple[str, ...] = ("auto", "mvtec_ad2", "mvtec_ad", "pairs")

# The models a bundle can hold, by their role (engines, build plans).
MODEL_ROLES: tuple[str, ...] = ("anomaly_model", "sam_encoder", "sam_decoder")
