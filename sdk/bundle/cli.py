"""``robis-edge bundle new|show|verify``: argument definitions (standard library and sdk.vocabulary
only); the work imports numpy, onnxruntime (and onnx for ``new``) when a command runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..vocabulary import CHANNEL_ORDERS


def _window(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a window in frame pixels or 'none', got {text!r}") \
            from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the window must be positive, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bundle`` (new, show, verify) to the top-level parser."""
    p = sub.add_parser("bundle", help="make a bundle from any anomaly-map ONNX model, show or verify one",
                       description="Bundle tools: wrap a foreign anomaly-map ONNX model (EfficientAD, "
                       "PatchCore, RealNet, anomalib exports, ...) into a bundle, show what a bundle "
                       "holds, verify its hashes, schema and models. See docs/bundle.md.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = actions.add_parser("new", help="wrap an anomaly-map ONNX model into a new bundle (needs onnx)",
                           description="Copies the model with its input renamed 'image' and its map output "
                           "reshaped to N×1×M×M and renamed 'anomaly_map', checks with ONNX Runtime on a "
                           "random batch that the copy reproduces the original exactly, and writes "
                           "bundle.json with sha256s and provenance. Needs the onnx package (export or "
                           "dev extra).")
    q.add_argument("--onnx", required=True, type=Path, metavar="MODEL", help="the anomaly-map ONNX model")
    q.add_argument("--out", required=True, type=Path, metavar="DIR", help="bundle directory to create")
    q.add_argument("--size", required=True, type=int, metavar="S", help="tile side S the model takes")
    q.add_argument("--input", metavar="NAME", help="the image input (default: the model's only input)")
    q.add_argument("--output", metavar="NAME", help="the anomaly-map output (default: the only output)")
    q.add_argument("--mean", type=float, nargs=3, metavar="m", default=[0.485, 0.456, 0.406],
                   help="per-channel mean on the 0..1 scale, in the model's channel order (default "
                   "ImageNet); 0 0 0 with --std 1 1 1 when the graph normalises itself")
    q.add_argument("--std", type=float, nargs=3, metavar="s", default=[0.229, 0.224, 0.225],
                   help="per-channel std (default ImageNet)")
    q.add_argument("--channel-order", choices=CHANNEL_ORDERS, default="RGB",
                   help="channel order the model takes (default RGB)")
    q.add_argument("--window", type=_window, default=1024, metavar="N|none",
                   help="tiling window in frame pixels, or none to resize whole frames (default 1024)")
    q.add_argument("--overlap", type=float, default=0.1, help="tiling overlap (default 0.1)")
    q.add_argument("--name", help="product / recipe name (default: the --out folder name)")
    q.set_defaults(func=cmd_new)

    q = actions.add_parser("show", help="what a bundle holds: models, calibration, engines, refiners",
                           description="Prints the bundle's models (files, sizes, tensor names, shapes), "
                           "preprocessing, tiling, binarisation, verdict, calibration, engines, refiners "
                           "and provenance. Reads bundle.json only (no hash check: see verify).")
    q.add_argument("bundle", type=Path, metavar="DIR")
    q.add_argument("--json", action="store_true", help="print the summary as JSON")
    q.set_defaults(func=cmd_show)

    q = actions.add_parser("verify", help="check a bundle: hashes, schema, and that its models run",
                           description="Loads the bundle (schema and every file's sha256), runs the anomaly "
                           "model on random tiles with ONNX Runtime (contract shapes, finite scores, the "
                           "features output when declared), runs SAM when the bundle refines with it, and "
                           "checks the engines against this host. One line per check; the first failure "
                           "is an error (exit status 2).")
    q.add_argument("bundle", type=Path, metavar="DIR")
    q.set_defaults(func=cmd_verify)


def cmd_new(args: argparse.Namespace) -> int:
    from .wrap import wrap_onnx

    wrap_onnx(args.onnx, args.out, args.size, input_name=args.input, output_name=args.output,
              mean=tuple(args.mean), std=tuple(args.std), channel_order=args.channel_order,
              window=args.window, overlap=args.overlap, name=args.name)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .check import describe_bundle, format_description
    from .store import Bundle

    info = describe_bundle(Bundle.load(args.bundle, verify=False))
    print(json.dumps(info, indent=2) if args.json else format_description(info))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .check import verify_bundle

    verify_bundle(args.bundle, log=lambda m: print(m, flush=True))
    return 0
