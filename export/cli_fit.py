"""``robis-edge fit``: argument definitions (standard library only); torch is imported when the
command runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdk import options as opt


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fit`` to the top-level parser."""
    p = sub.add_parser(
        "fit", help="train INP-Former on defect-free images as RoBiS does (needs the export extra)",
        description="Trains INP-Former as RoBiS does (docs/cli.md, 'robis-edge fit'): frozen "
        "DINOv2-reg encoder, Swin-Cropping tiles of the training images, exposure+noise augmentation on "
        "half the samples, hard-mining cosine loss + 0.2·gather loss, StableAdamW, warm-up + cosine "
        "schedule. Saves torch.save(state_dict) with the upstream key layout (export it with "
        "`robis-edge export inpformer`) and the architecture JSON as <out>.arch.json. Without "
        "--encoder-weights the encoder stays RANDOM (a loud warning says so).")
    p.add_argument("--images", required=True, type=Path,
                   help="folder of defect-free images (png/jpg/bmp/tif, any nesting)")
    arch = p.add_mutually_exclusive_group(required=True)
    arch.add_argument("--preset", help="dinov2reg_vit_small_14, dinov2reg_vit_base_14 (RoBiS), "
                      "dinov2reg_vit_large_14")
    arch.add_argument("--arch", type=opt.named_file("architecture JSON file"),
                      help="architecture JSON (embed_dim, depth, num_heads, ...: "
                      "what `robis-edge fit` writes as <out>.arch.json)")
    p.add_argument("--input-size", type=opt.integer(minimum=14, maximum=4096),
                   help="tile input size S (default: the architecture's)")
    p.add_argument("--out", required=True, type=opt.output_file, help="checkpoint to write (model.pth)")
    p.add_argument("--encoder-weights", type=opt.named_file("encoder weights file"),
                   help="DINOv2-reg .pth (e.g. dinov2_vitb14_reg4_pretrain.pth; keys without 'encoder.')")
    p.add_argument("--epochs", type=opt.positive_int, default=200,
                   help="epochs over the tiles (default 200, RoBiS)")
    p.add_argument("--iters", type=opt.positive_int, help="total iterations (overrides --epochs)")
    p.add_argument("--batch-size", type=opt.positive_int, default=16, help="tiles per iteration (default 16)")
    p.add_argument("--lr", type=opt.positive_float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--final-lr", type=opt.non_negative_float, default=1e-4,
                   help="learning rate at the end (default 1e-4)")
    p.add_argument("--warmup", type=opt.non_negative_int, default=100,
                   help="warm-up iterations from 0 (default 100)")
    p.add_argument("--window", type=opt.non_negative_int, default=1024,
                   help="Swin-Cropping window in frame pixels, as the bundle's (default 1024; 0 = no tiling)")
    p.add_argument("--overlap", type=opt.overlap, default=0.1, help="tiling overlap (default 0.1)")
    p.add_argument("--seed", type=opt.non_negative_int, default=1,
                   help="seed of everything (default 1, as RoBiS)")
    p.add_argument("--threads", type=opt.positive_int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fit)


def cmd_fit(args: argparse.Namespace) -> int:
    from sdk.errors import InputError

    from .errors import ExportError, require_export_extra

    require_export_extra("robis-edge fit")
    import cv2
    import torch

    from sdk.imageio import IMAGE_EXTS, find_files, read_image

    from .inpformer.arch import InpFormerArch, preset
    from .inpformer.training import FitOptions, fit

    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    for name in ("epochs", "batch_size", "window"):
        if getattr(args, name) < (0 if name == "window" else 1):
            raise InputError(f"--{name.replace('_', '-')} must be positive")
    if args.iters is not None and args.iters < 1:
        raise InputError("--iters must be >= 1")
    if args.encoder_weights is not None and not args.encoder_weights.is_file():
        raise InputError(f"{args.encoder_weights}: no such encoder weights file")
    files = find_files(args.images, IMAGE_EXTS)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_EXTS)}) under {args.images}")
    try:
        overrides = {"img_size": args.input_size} if args.input_size else {}
        arch = preset(args.preset, **overrides) if args.preset else \
            InpFormerArch.from_json(args.arch).replace(**overrides)
    except (OSError, ValueError) as exc:  # an unreadable or malformed --arch file
        raise ExportError(str(exc)) from exc
    print(f"reading {len(files)} image(s) from {args.images}")
    frames = [read_image(f) for f in files]
    opts = FitOptions(epochs=args.epochs, iters=args.iters, batch_size=args.batch_size, lr=args.lr,
                      final_lr=args.final_lr, warmup=args.warmup, window=args.window or None,
                      overlap=args.overlap, seed=args.seed)
    res = fit(frames, arch, args.out, options=opts, encoder_weights=args.encoder_weights,
              progress=not args.no_progress)
    tiling = f"--window {args.window} --overlap {args.overlap}" if args.window else "--no-tiling"
    print(f"checkpoint sha256 {res.sha256}; export it with: robis-edge export inpformer --checkpoint "
          f"{res.checkpoint} --arch {res.arch_json} {tiling} --out BUNDLE")
    return 0
