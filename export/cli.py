"""``robis-edge export inpformer``: argument definitions (standard library only); torch and onnx
are imported when the command runs."""

from __future__ import annotations

import argparse

from sdk import options as opt


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``export`` (with its ``inpformer`` target) to the top-level parser."""
    p = sub.add_parser("export", help="convert a trained checkpoint into a bundle (needs the export extra)",
                       description="Convert trained PyTorch checkpoints (the official files, unchanged) "
                       "into a bundle of ONNX models that the SDK and the runtime run.")
    targets = p.add_subparsers(dest="target", required=True, metavar="TARGET")
    q = targets.add_parser("inpformer", help="an INP-Former model.pth (RoBiS or official INP-Former)",
                           description="Loads the state_dict unchanged (keys checked strictly against "
                           "the architecture), exports the whole RoBiS anomaly head to ONNX (input "
                           "'image' N×3×S×S, output 'anomaly_map' N×1×M×M), verifies it with ONNX "
                           "Runtime against torch and writes a new bundle.")
    q.add_argument("--checkpoint", required=True, type=opt.named_file("checkpoint file"),
                   help="model.pth (torch.save(state_dict))")
    arch = q.add_mutually_exclusive_group(required=True)
    arch.add_argument("--preset", help="dinov2reg_vit_small_14, dinov2reg_vit_base_14 (RoBiS), "
                      "dinov2reg_vit_large_14")
    arch.add_argument("--arch", type=opt.named_file("architecture JSON file"),
                      help="architecture JSON (embed_dim, depth, num_heads, ...: "
                      "what `robis-edge fit` writes as <out>.arch.json)")
    q.add_argument("--out", required=True, type=opt.output_dir, help="bundle directory to create")
    q.add_argument("--name", help="product / recipe name (default: the --out folder name)")
    q.add_argument("--input-size", type=opt.integer(minimum=14, maximum=4096),
                   help="tile input size S (default: the architecture's, 518)")
    q.add_argument("--map-size", type=opt.integer(minimum=1, maximum=4096),
                   help="anomaly map side M per tile (default 256)")
    q.add_argument("--window", type=opt.positive_int, default=1024,
                   help="tiling window in frame pixels (default 1024)")
    q.add_argument("--no-tiling", action="store_true", help="resize whole frames instead of tiling")
    q.add_argument("--overlap", type=opt.overlap, default=0.1, help="tiling overlap (default 0.1)")
    q.add_argument("--tolerance", type=opt.positive_float, default=1e-4,
                   help="max |ORT - torch| accepted (default 1e-4)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    q.add_argument("--features", action="store_true",
                   help="add a second output 'features' (N×C×g×g: the mean of the target layers' patch "
                   "tokens, the encoder feature INP-Former fuses) for the TTT refiner (--refine ttt)")
    q.add_argument("--reference-images", type=opt.existing_dir, metavar="DIR",
                   help="store 4 tiles of these images in the bundle as the reference of the TensorRT "
                   "parity gate (`robis-edge build`; `calibrate` also stores them)")
    q.set_defaults(func=cmd_export_inpformer)
    from .sam.cli import register_target as register_sam_target

    register_sam_target(targets)


def cmd_export_inpformer(args: argparse.Namespace) -> int:
    from .errors import ExportError, require_export_extra

    require_export_extra("robis-edge export inpformer")
    from .inpformer.arch import InpFormerArch, preset
    from .inpformer.bundle_export import export_inpformer_bundle

    if not args.checkpoint.is_file():
        raise ExportError(f"{args.checkpoint}: no such checkpoint file")
    overrides = {k: v for k, v in (("img_size", args.input_size), ("map_size", args.map_size)) if v}
    arch = preset(args.preset, **overrides) if args.preset else \
        InpFormerArch.from_json(args.arch).replace(**overrides)
    bundle, _ = export_inpformer_bundle(args.checkpoint, arch, args.out, name=args.name or args.out.name,
                                        window=None if args.no_tiling else args.window,
                                        overlap=args.overlap, tolerance=args.tolerance,
                                        overwrite=args.overwrite, features=args.features)
    if args.reference_images:
        from sdk.engines.reference import store_reference_from_folder

        rels = store_reference_from_folder(bundle, args.reference_images)
        bundle.save()
        print(f"{len(rels)} reference tiles from {args.reference_images} stored for `robis-edge build`")
    return 0
