"""The commands ``robis-edge evaluate`` and ``robis-edge bench``.

Argument definitions use only the standard library; the handlers import numpy/opencv/
onnxruntime (and matplotlib for ``--report``) when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sdk import options as opt
from sdk.vocabulary import BACKEND_HELP, DATASET_LAYOUTS, REFINE_MODES, SCOPES, STREAMS_HELP


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` and ``bench`` to the top-level parser."""
    p = sub.add_parser(
        "evaluate", help="metrics of a bundle on a dataset with ground truth (SegF1, AucPro, ClassF1, ...)",
        description="Runs the real pipeline (Inspector, as inspect and serve do) over a dataset split and "
        "computes per product and overall: SegF1 (pixel F1 of the final masks, counts summed over the "
        "split), AucPro@0.05 (per-region overlap up to FPR 0.05, normalised), ClassF1 (F1 of the "
        "verdicts), image and pixel AUROC and pixel F1-max. Writes metrics.json, per_image.jsonl, "
        "histograms.npz and, with --report, report.html. See docs/evaluation.md.")
    p.add_argument("--bundle", required=True, action="append", metavar="[PRODUCT=]PATH",
                   help="bundle directory; repeat as PRODUCT=PATH for a dataset of several products "
                   "(a bundle whose name equals the product is matched too)")
    p.add_argument("--dataset", required=True, type=opt.existing_dir, metavar="DIR",
                   help="dataset folder: one product or a folder of products")
    p.add_argument("--layout", choices=DATASET_LAYOUTS, default="auto",
                   help="folder layout (default: detected and printed)")
    p.add_argument("--split", help="split to evaluate (default: test_public for MVTec AD 2, test for MVTec "
                   "AD; for pairs a sub-folder, default the whole folder)")
    p.add_argument("--products", nargs="+", metavar="NAME", help="evaluate only these products")
    p.add_argument("--out", required=True, type=opt.output_dir, metavar="DIR", help="output folder")
    p.add_argument("--scope", choices=SCOPES, default="calibrated",
                   help="statistics of the post-processing: the bundle's calibration (default, as serve), "
                   "the last frames in dataset order, or each product's split as one batch (RoBiS' "
                   "offline semantics, via Inspector.inspect_batch)")
    p.add_argument("--backend", default="auto", help=BACKEND_HELP)
    p.add_argument("--threads", type=opt.positive_int, help="ONNX Runtime intra-op threads")
    p.add_argument("--streams", type=opt.positive_int, help=STREAMS_HELP)
    p.add_argument("--refine", choices=REFINE_MODES,
                   help="mask refinement: none, sam (SAM-Finer) or ttt (TTT4AS; needs the features output) "
                   "(default: as the bundle says)")
    p.add_argument("--fpr-limit", type=opt.number(above=0.0, maximum=1.0), default=0.05,
                   help="integration limit of AucPro (default 0.05 as MVTec AD 2; MVTec AD used 0.3)")
    p.add_argument("--max-images", type=opt.positive_int,
                   help="at most this many images per product (evenly spaced)")
    p.add_argument("--report", action="store_true", help="write report.html (needs the 'report' extra: "
                   "matplotlib)")
    p.add_argument("--gallery", type=opt.non_negative_int, default=8,
                   help="pictures per gallery in the report (default 8)")
    p.add_argument("--save-maps", action="store_true",
                   help="also write maps/<product>/<name>.tiff (float32, map scale) and masks/<product>/"
                   "<name>.png (0/255, mask scale)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "bench", help="per-stage latency (p50/p99) and frames/s of a bundle on this host",
        description="Times Inspector.inspect on synthetic frames of the given sizes, one after the other, "
        "and prints a table (and JSON with --json) with the backend, precision and host.")
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--frame-size", nargs="+", default=["2448x2048"], metavar="WxH",
                   help="frame sizes (default 2448x2048)")
    p.add_argument("--backend", default="auto", help=BACKEND_HELP)
    p.add_argument("--frames", type=opt.positive_int, default=30, help="timed frames per size (default 30)")
    p.add_argument("--warmup", type=opt.non_negative_int, default=3,
                   help="untimed frames per size first (default 3)")
    p.add_argument("--threads", type=opt.positive_int, help="ONNX Runtime intra-op threads")
    p.add_argument("--streams", type=opt.positive_int, help=STREAMS_HELP)
    p.add_argument("--scope", choices=("calibrated", "rolling"),
                   help="default: calibrated when the bundle is, else rolling")
    p.add_argument("--color", choices=("gray", "bgr"), default="gray", help="frame format (default gray)")
    p.add_argument("--metrics", action="store_true",
                   help="also time the evaluation's metric accumulation per frame (row evaluate_metrics)")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the result as JSON here ('-': stdout, "
                   "instead of the table)")
    p.set_defaults(func=cmd_bench)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .bundle_specs import parse_bundle_specs
    from .config import EvalConfig
    from .evaluate import evaluate
    from .summary import format_table

    if args.report:
        from .report import require_matplotlib

        require_matplotlib()  # fail before hours of inference, not after
    cfg = EvalConfig(scope=args.scope, backend=args.backend, threads=args.threads, streams=args.streams,
                     fpr_limit=args.fpr_limit, report=args.report, gallery=args.gallery,
                     save_maps=args.save_maps, progress=not args.quiet, refine=args.refine)
    summary = evaluate(args.dataset, parse_bundle_specs(args.bundle), args.out, layout=args.layout,
                       split=args.split, products=args.products, max_images=args.max_images, config=cfg)
    t = summary["timings_s"]
    print(f"{summary['layout']} split {summary['split'] or '(whole folder)'}, scope {summary['scope']}: "
          f"{summary['overall']['images']} images in {len(summary['products'])} product(s)")
    print(format_table(summary))
    print(f"time: inference {t['inspect']:.1f} s ({t['inspect_per_image_ms']:.1f} ms/image), metrics "
          f"{t['metrics']:.1f} s ({t['metrics_per_image_ms']:.1f} ms/image), read {t['read']:.1f} s, "
          f"wall {t['wall']:.1f} s")
    print(f"-> {args.out / 'metrics.json'}" + (f", {args.out / 'report.html'}" if args.report else ""))
    errors = summary["overall"]["errors"]
    if errors:
        print(f"{errors} image(s) could not be read or inspected (see per_image.jsonl)", file=sys.stderr)
    return 1 if errors else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from sdk.geometry import parse_frame_size

    from .bench import format_table, run_bench

    sizes = [parse_frame_size(s) for s in args.frame_size]
    res = run_bench(args.bundle, sizes, backend=args.backend, frames=args.frames, warmup=args.warmup,
                    threads=args.threads, streams=args.streams, scope=args.scope, color=args.color,
                    metrics=args.metrics, progress=sys.stderr.isatty())
    text = json.dumps(res, indent=2)
    if args.json is not None and str(args.json) == "-":
        print(text)
        return 0
    print(format_table(res))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
        print(f"-> {args.json}")
    return 0
