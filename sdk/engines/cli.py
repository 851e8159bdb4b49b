"""``robis-edge build`` and ``robis-edge selftest``: argument definitions (TensorRT loads when a
command runs; neither needs torch)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import options as opt
from ..vocabulary import (
    BACKENDS,
    BUILD_TARGETS,
    MODEL_ROLES,
    OPENVINO_DEVICES,
    OPENVINO_PRECISIONS,
    TENSORRT_PRECISIONS,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build", help="build TensorRT or OpenVINO engines for a bundle on this device, gated on parity",
        description="Builds engines for the bundle's ONNX models on this device (engines do not move "
        "between GPUs, CPUs or runtime versions), runs the parity gate against ONNX Runtime fp32 on the "
        "bundle's reference tiles (same verdicts, maps within tolerance; docs/gpu.md, docs/openvino.md), "
        "steps down the precision ladder when it fails (TensorRT: fp16 → fp16 with more fp32 layers → "
        "fp32; OpenVINO: int8 → bf16 → f32), and lists the accepted engine under 'engines' in "
        "bundle.json. TensorRT needs TensorRT 10 and pycuda, OpenVINO the 'openvino' extra; not torch.")
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--target", choices=BUILD_TARGETS, default="tensorrt",
                   help="tensorrt (default: NVIDIA GPUs) or openvino (Intel CPUs; docs/openvino.md)")
    p.add_argument("--precision", choices=tuple(dict.fromkeys(TENSORRT_PRECISIONS + OPENVINO_PRECISIONS)),
                   help="first precision to try: tensorrt fp16 (default), fp32, int8 (LayerNorm, L2 "
                   "normalisation, the cosine head and softmax always stay fp32); openvino auto (default: "
                   "int8 → bf16 → f32), f32, bf16, int8")
    p.add_argument("--calibration-images", type=opt.existing_dir, metavar="DIR",
                   help="openvino int8: also calibrate on the tiles of these images (default: the "
                   "reference tiles only)")
    p.add_argument("--calibration-tiles", type=opt.positive_int, default=300, metavar="N",
                   help="openvino int8: at most N calibration tiles, chosen evenly (default 300)")
    p.add_argument("--openvino-device", choices=OPENVINO_DEVICES, default="CPU",
                   help="openvino: the device to compile for (default CPU; GPU/NPU where present, f32)")
    p.add_argument("--threads", type=opt.positive_int,
                   help="openvino: inference threads (default: all cores)")
    p.add_argument("--workspace-mb", type=opt.non_negative_int, default=0,
                   help="builder workspace cap in MiB (default: TensorRT's; cap it on Jetson, e.g. 2048)")
    p.add_argument("--timing-cache", type=opt.output_file,
                   help="TensorRT timing cache file, read and updated (default: engines/timing.cache "
                   "in the bundle)")
    p.add_argument("--frame-size", metavar="WxH",
                   help="camera frame size; the tile model's batch profile is 1…tiles per frame "
                   "(default: bundle tiling.frame_hw, else 2448x2048)")
    p.add_argument("--contexts", type=opt.positive_int, default=2,
                   help="optimisation profiles = frames inferred at the same time (serve --workers; "
                   "default 2)")
    p.add_argument("--model", action="append", dest="models",
                   choices=MODEL_ROLES,
                   help="build only this model (repeat; default: every model of the bundle)")
    p.add_argument("--reference-images", type=opt.existing_dir,
                   help="cut new reference tiles for the gate from these images (default: the tiles "
                   "`robis-edge calibrate` stored in the bundle)")
    p.set_defaults(func=cmd_build)

    q = sub.add_parser(
        "selftest", help="check this device: installed GPU stack, a TensorRT engine, a bundle per backend",
        description="Lists what is installed (CUDA driver, GPU, TensorRT, pycuda, ONNX Runtime "
        "providers), builds a small engine from a model shipped in the package and checks it "
        "against ONNX Runtime on the CPU, and, given a bundle, checks its engines and times a "
        "frame per backend. Prints a PASS/FAIL table; exit status 1 when a check fails.")
    q.add_argument("--bundle", type=Path, help="also check this bundle")
    q.add_argument("--backend", action="append", dest="backends", choices=BACKENDS,
                   help="time the bundle on this backend (repeat; default: every one available)")
    q.add_argument("--quick", action="store_true",
                   help="no engine build and no timing (what is installed, ONNX Runtime checks, the "
                   "bundle's engines); fast enough for a container health check")
    q.add_argument("--require", default="",
                   help="comma-separated components whose absence is a failure: "
                   "gpu, pycuda, tensorrt, ort-cuda, ort-tensorrt, openvino")
    q.add_argument("--frames", type=opt.positive_int, default=3, help="timed frames per backend (default 3)")
    q.add_argument("--frame-size", metavar="WxH", help="frame size for the timing (default as build)")
    q.add_argument("--json", type=opt.output_file, help="also write the rows as JSON")
    q.set_defaults(func=cmd_selftest)


def cmd_build(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..geometry import parse_frame_size

    if args.target == "openvino":
        return _build_openvino(args)
    if args.precision is None:
        args.precision = "fp16"
    if args.precision not in TENSORRT_PRECISIONS:
        raise InputError(f"--precision {args.precision} is not a TensorRT precision (choose "
                         f"{', '.join(TENSORRT_PRECISIONS)}, or pass --target openvino)")
    from .tensorrt.build import build_bundle_engines

    cache = args.timing_cache or (args.bundle / "engines" / "timing.cache")
    cache.parent.mkdir(parents=True, exist_ok=True)
    outcomes = build_bundle_engines(
        args.bundle, args.precision, workspace_mb=args.workspace_mb, timing_cache=cache,
        frame_hw=parse_frame_size(args.frame_size) if args.frame_size else None, contexts=args.contexts,
        models=args.models, reference_images=args.reference_images, log=lambda m: print(m, flush=True))
    print("\nengines:")
    for o in outcomes:
        steps = " → ".join(f"{r.precision} {'PASS' if r.passed else 'FAIL'}" for r in o.reports)
        print(f"  {o.plan.model:<14} {o.entry.file}  ({steps})")
    return 0


def _build_openvino(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from .openvino.build import build_openvino_engine

    precision = args.precision or "auto"
    if precision not in OPENVINO_PRECISIONS:
        raise InputError(f"--precision {precision} is not an OpenVINO precision (choose "
                         f"{', '.join(OPENVINO_PRECISIONS)})")
    if args.calibration_tiles < 1:
        raise InputError("--calibration-tiles must be at least 1")
    out = build_openvino_engine(args.bundle, precision, calibration_images=args.calibration_images,
                                calibration_limit=args.calibration_tiles,
                                reference_images=args.reference_images, threads=args.threads,
                                device=args.openvino_device, log=lambda m: print(m, flush=True))
    steps = " → ".join(f"{r.precision} {'PASS' if r.passed else 'FAIL'}" for r in out.reports)
    print(f"\nengines:\n  anomaly_model  openvino {out.entry.precision} "
          f"{out.entry.file or '(compile hint on ' + out.entry.onnx_file + ')'}  ({steps})")
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..geometry import parse_frame_size
    from .selftest import REQUIRABLE, format_table, rows_json, run_selftest

    require = [r.strip() for r in args.require.split(",") if r.strip()]
    unknown = [r for r in require if r not in REQUIRABLE]
    if unknown:
        raise InputError(f"--require: unknown component(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(REQUIRABLE)}")
    rows = run_selftest(args.bundle, args.backends, quick=args.quick, require=require, frames=args.frames,
                        frame_hw=parse_frame_size(args.frame_size) if args.frame_size else None)
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows_json(rows), indent=1))
    sys.stdout.flush()
    return 1 if any(r.status == "FAIL" for r in rows) else 0
