"""``robis-edge export sam``: argument definitions (standard library only); torch, onnx and
segment-anything are imported when the command runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdk import options as opt
from sdk.vocabulary import SAM_BUNDLE_MODES, SAM_CHANNEL_ORDERS, SAM_MODEL_TYPES


def register_target(targets: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``sam`` target to the ``export`` command's sub-parsers."""
    q = targets.add_parser(
        "sam", help="add SAM box refinement (sam_vit_b_01ec64.pth) to an existing bundle",
        description="Loads an official segment-anything checkpoint unchanged (architecture read from "
        "its keys), exports the image encoder (image 1×3×1024×1024 → embeddings 1×256×64×64) and a "
        "box decoder (embeddings + boxes B×4 → masks B×4×256×256 low-res logits, iou B×4) to ONNX, "
        "verifies both with ONNX Runtime against segment-anything and adds them to the bundle as "
        "refine.sam (docs/refine.md).")
    q.add_argument("--checkpoint", required=True, type=Path,
                   help="sam_vit_b_01ec64.pth (or vit_l / vit_h)")
    q.add_argument("--bundle", required=True, type=Path,
                   help="existing bundle directory to extend")
    q.add_argument("--mode", choices=SAM_BUNDLE_MODES, default="single",
                   help="single: mask token 0 (RoBiS' default); multi_or: union of tokens 1..3 (RoBiS for "
                   "fabric, walnuts); off: export but do not refine (default single)")
    q.add_argument("--top-n", type=int, default=3,
                   help="boxes from the N largest coarse regions (default 3)")
    q.add_argument("--model-type", choices=SAM_MODEL_TYPES,
                   help="check that the checkpoint is this model (default: inferred from its keys)")
    q.add_argument("--channel-order", choices=SAM_CHANNEL_ORDERS, default="bgr_as_rgb",
                   help="what SAM is fed: bgr_as_rgb = BGR bytes in the RGB slots, as RoBiS does "
                   "(cv2.imread, no conversion; default, for parity); rgb = true RGB")
    q.add_argument("--tolerance", type=opt.positive_float, default=1e-4,
                   help="max |ORT - torch| accepted (default 1e-4)")
    q.set_defaults(func=cmd_export_sam)
    return q


def cmd_export_sam(args: argparse.Namespace) -> int:
    from ..errors import require_export_extra

    require_export_extra("robis-edge export sam")
    from .bundle_export import export_sam_to_bundle

    export_sam_to_bundle(args.checkpoint, args.bundle, mode=args.mode, top_n=args.top_n,
                         channel_order=args.channel_order, model_type=args.model_type,
                         tolerance=args.tolerance)
    return 0
