"""Add SAM refinement to an existing bundle: load the checkpoint (unchanged, strict), export the
encoder and the box decoder to ONNX, verify both against segment-anything with ONNX Runtime,
record their sha256 under ``files`` and write the ``refine.sam`` section (docs/refine.md)."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdk import __version__ as robis_version
from sdk.bundle import Bundle, sha256_file
from sdk.vocabulary import SAM_BUNDLE_MODES, SAM_CHANNEL_ORDERS

ENCODER_FILE = "sam_encoder.onnx"
DECODER_FILE = "sam_decoder.onnx"


def export_sam_to_bundle(checkpoint: str | Path, bundle_dir: str | Path, *, mode: str = "single",
                         top_n: int = 3, channel_order: str = "bgr_as_rgb", model_type: str | None = None,
                         tolerance: float = 1e-4, log: Callable[[str], None] = print
                         ) -> tuple[Bundle, dict[str, Any]]:
    """Export ``checkpoint`` (sam_vit_*.pth) into ``bundle_dir`` (made by ``export inpformer``).

    Writes ``sam_encoder.onnx`` and ``sam_decoder.onnx`` beside ``bundle.json`` (replacing earlier
    ones), adds their sha256 to ``files`` and sets ``refine.sam``. ``mode="off"`` still exports
    (the section can be switched on later by editing ``mode``). Returns the saved bundle and a
    report with both export checks."""
    import onnx
    import torch

    from ..errors import ExportError
    from .model import load_sam
    from .onnx_export import export_decoder, export_encoder

    if mode not in SAM_BUNDLE_MODES:
        raise ExportError(f"--mode must be one of {', '.join(SAM_BUNDLE_MODES)} (got {mode!r})")
    if channel_order not in SAM_CHANNEL_ORDERS:
        raise ExportError(f"channel order must be one of {', '.join(SAM_CHANNEL_ORDERS)} "
                          f"(got {channel_order!r})")
    if int(top_n) < 1:
        raise ExportError(f"--top-n must be >= 1 (got {top_n})")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ExportError(f"{checkpoint}: no such checkpoint file")
    bundle = Bundle.load(bundle_dir)  # verifies format and the sha256 of what is there
    t0 = time.perf_counter()
    log(f"[1/4] loading {checkpoint}")
    ckpt_sha = sha256_file(checkpoint)
    try:
        sam, arch = load_sam(checkpoint, model_type)
    except ImportError as exc:  # segment-anything missing
        raise ExportError(str(exc)) from exc
    n_params = sum(p.numel() for p in sam.parameters())
    log(f"      SAM {arch.model_type}: {n_params / 1e6:.1f}M parameters; sha256 {ckpt_sha[:16]}…")
    log("[2/4] exporting the image encoder and checking it against segment-anything (ONNX Runtime)")
    enc = export_encoder(sam, bundle.resolve(ENCODER_FILE), tolerance=tolerance)
    log(f"      max |ORT - torch| = {enc['max_abs_diff']:.2e}; {enc['file_size_bytes'] / 2**20:.1f} MiB")
    log("[3/4] exporting the box decoder (dynamic number of boxes) and checking it")
    dec = export_decoder(sam, bundle.resolve(DECODER_FILE), tolerance=tolerance)
    log(f"      max |ORT - torch| = {dec['max_abs_diff']:.2e} (B = 1 and 5); "
        f"{dec['file_size_bytes'] / 2**20:.1f} MiB")
    log("[4/4] writing bundle.json")
    old = bundle.sam
    for rel in (old.encoder_file, *old.external_data, old.decoder_file) if old is not None else ():
        if rel not in (ENCODER_FILE, DECODER_FILE):
            bundle.drop_file(rel)
    for rel in (ENCODER_FILE, *enc["external_data"], DECODER_FILE):
        bundle.add_file(rel)
    section = {
        "encoder": {"file": ENCODER_FILE, "input": "image", "output": "embeddings", "image_size": 1024,
                    "embedding_shape": [1, 256, 64, 64], "external_data": enc["external_data"]},
        "decoder": {"file": DECODER_FILE, "inputs": ["embeddings", "boxes"], "outputs": ["masks", "iou"],
                    "low_res_size": 256, "mask_tokens": 4},
        "mode": mode,
        "top_n": int(top_n),
        "channel_order": channel_order,
        "image_resize": "zoom_order1",
        "sam_resize": "pil_bilinear",
        "pixel_mean": [123.675, 116.28, 103.53],
        "pixel_std": [58.395, 57.12, 57.375],
        "mask_threshold": 0.0,
        "connectivity": 8,
        "fill_holes": True,
        "model_type": arch.model_type,
        "architecture": arch.to_dict(),
        "provenance": {
            "exporter": f"robis-edge {robis_version} export sam",
            "source_checkpoint": checkpoint.name,
            "source_checkpoint_sha256": ckpt_sha,
            "torch": torch.__version__, "onnx": onnx.__version__, "opset": enc["opset"],
            "python": platform.python_version(),
            "export_check": {"encoder_max_abs_diff": enc["max_abs_diff"],
                             "decoder_max_abs_diff": dec["max_abs_diff"], "tolerance": tolerance},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }
    bundle.set_sam(section)
    bundle.save()
    log(f"SAM {arch.model_type} refinement (mode {mode}, top {top_n}) added to {bundle.root} in "
        f"{time.perf_counter() - t0:.1f} s")
    return Bundle.load(bundle.root), {"encoder": enc, "decoder": dec, "arch": arch.to_dict()}
