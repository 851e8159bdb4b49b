"""The SDK's commands: ``robis-edge binarize`` and ``robis-edge inspect``.

Argument definitions only import the standard library; the work imports numpy/opencv/
onnxruntime when a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from . import options as opt
from .vocabulary import BACKEND_HELP, BINARIZE_METHODS, BINARIZE_PRECISIONS, REFINE_MODES, STREAMS_HELP


def register(sub: argparse._SubParsersAction) -> None:
    """Add the SDK commands to the top-level parser."""
    p = sub.add_parser("binarize", help="binarise a folder of anomaly maps (RoBiS MEBin ∪ mean+3std)",
                       description="Reads float16/float32 TIFF or .npy anomaly maps (0..255 scale, any "
                       "nesting) and writes 0/255 PNG masks with the same relative names, "
                       "thresholds.json and summary.json. Default scope 'batch': the folder is one "
                       "class split, exactly as RoBiS binarises it.")
    p.add_argument("--maps", required=True, type=opt.existing_dir, help="folder of anomaly maps")
    p.add_argument("--out", required=True, type=opt.output_dir, help="output folder")
    p.add_argument("--scope", choices=("batch", "calibrated"), default="batch",
                   help="statistics over this folder (batch) or frozen in --bundle (calibrated)")
    p.add_argument("--bundle", type=opt.existing_dir, help="bundle whose calibration and settings to use")
    p.add_argument("--method", choices=BINARIZE_METHODS,
                   help="binarisation method (default: the bundle's, else mebin+meanstd)")
    p.add_argument("--fixed-threshold", type=opt.map_threshold,
                   help="threshold on the 0..255 scale for --method fixed")
    p.add_argument("--precision", choices=BINARIZE_PRECISIONS,
                   help="arithmetic of the maps (default float16, as RoBiS stores them)")
    p.set_defaults(func=cmd_binarize)

    p = sub.add_parser("inspect", help="run a bundle on image files: masks, overlays, results.jsonl",
                       description="Runs the full pipeline on one image or a folder of images (any "
                       "nesting) and writes masks/<name>.png, overlays/<name>.png and results.jsonl.")
    p.add_argument("--bundle", required=True, type=Path)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=opt.existing_file, help="one image file")
    src.add_argument("--images", type=opt.existing_dir, help="a folder of images")
    p.add_argument("--out", required=True, type=opt.output_dir)
    p.add_argument("--backend", default="auto", help=BACKEND_HELP)
    p.add_argument("--scope", choices=("calibrated", "rolling", "batch"),
                   help="statistics: the bundle's calibration (default), recent frames, or this set of "
                   "images as one batch (RoBiS offline semantics)")
    p.add_argument("--mask-scale", type=opt.mask_scale,
                   help="scale of the written masks (default: map scale, "
                   "1/4 for RoBiS; 1.0 = full frame)")
    p.add_argument("--threads", type=opt.positive_int, help="ONNX Runtime intra-op threads")
    p.add_argument("--streams", type=opt.positive_int, help=STREAMS_HELP)
    p.add_argument("--refine", choices=REFINE_MODES,
                   help="mask refinement: none, sam (SAM-Finer) or ttt (TTT4AS; needs the features output) "
                   "(default: as the bundle says)")
    p.add_argument("--no-overlays", action="store_true", help="do not write overlay pictures")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("calibrate", help="freeze streaming statistics of a folder of images into a bundle",
                       description="Runs the bundle over a folder of images and stores the calibrated "
                       "statistics (tile normalisation min/max, MEBin search range, mean/std for "
                       "mean+3std; docs/bundle.md, 'calibration') in "
                       "bundle.json. The statistics are RoBiS' "
                       "batch statistics over exactly these images: to reproduce RoBiS' numbers on a "
                       "split, pass that split's folder. Include defective parts (--defective): with "
                       "good parts only, the MEBin range collapses. Needs no torch.")
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--images", required=True, type=opt.existing_dir, help="folder of images (any nesting)")
    p.add_argument("--defective", type=opt.existing_dir,
                   help="optional folder of defective images to include")
    p.add_argument("--backend", default="auto", help=BACKEND_HELP)
    p.add_argument("--threads", type=opt.positive_int, help="ONNX Runtime intra-op threads")
    p.add_argument("--streams", type=opt.positive_int, help=STREAMS_HELP)
    p.add_argument("--dry-run", action="store_true", help="print the statistics, do not write the bundle")
    p.add_argument("--min-images", type=opt.positive_int, default=10,
                   help="warn below this many images (default 10)")
    p.add_argument("--reference-tiles", type=opt.non_negative_int, default=4, metavar="N",
                   help="also store N tiles of these images in the bundle for the TensorRT parity gate "
                   "of `robis-edge build` (default 4: the 2 highest-scoring, 1 middle, the lowest; 0: keep "
                   "the bundle's)")
    p.set_defaults(func=cmd_calibrate)


def _summary_stats(values: list[float]) -> dict:
    import numpy as np

    if not values:
        return {}
    a = np.asarray(values)
    return {"mean": round(float(a.mean()), 3), "p50": round(float(np.percentile(a, 50)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "max": round(float(a.max()), 3)}


def cmd_binarize(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    import cv2

    from .allocator import reuse_freed_memory
    from .bundle import Bundle
    from .errors import InputError
    from .imageio import MAP_EXTS, MapReader, find_files, output_names, write_mask
    from .postprocess.binarize import BinarizeConfig, as_map, binarize_batch

    t_start = time.perf_counter()
    bundle = Bundle.load(args.bundle) if args.bundle else None
    cfg = bundle.binarize_config if bundle else BinarizeConfig()
    overrides = cfg.to_json()
    if args.method:
        overrides["method"] = args.method
    if args.fixed_threshold is not None:
        overrides["fixed_threshold"] = args.fixed_threshold
    if args.precision:
        overrides["precision"] = args.precision
    if overrides.get("method") == "fixed" and overrides.get("fixed_threshold") is None:
        raise InputError("--method fixed needs --fixed-threshold T (a threshold on the 0..255 map scale)")
    cfg = BinarizeConfig.from_json(overrides)
    files = find_files(args.maps, MAP_EXTS)
    if not files:
        raise InputError(f"no .tif/.tiff/.npy maps under {args.maps}")
    if args.scope == "calibrated" and cfg.needs_stats and (bundle is None or bundle.calibration is None):
        raise InputError("--scope calibrated needs --bundle with a calibration")
    thresholds, per_map = {}, []
    # Files are read on worker threads (their system calls and tifffile's decoding overlap); OpenCV's
    # own threads would only add waits on maps this small. Masks are encoded and written on one
    # writer thread while the next map is binarised (PNG encoding and file writes release the GIL).
    cv2.setNumThreads(1)
    reuse_freed_memory()  # every map frees working arrays of the sizes the next one allocates
    read = MapReader()
    names = output_names([f.relative_to(args.maps) for f in files])  # x.tif + x.npy: two masks

    def load(f: Path):
        return as_map(read(f), cfg.precision)

    def write(path: Path, mask) -> float:
        t0 = time.perf_counter()
        write_mask(path, mask)
        return time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=4) as pool, ThreadPoolExecutor(max_workers=1) as writer:
        waited = [0.0]
        if args.scope == "batch" and cfg.needs_stats:  # the statistics need every map first
            maps, stats, t_read = _read_split(pool, read, load, files)
        else:  # statistics known: each map is binarised as it arrives, the next ones read meanwhile
            maps = _read_ahead(pool, load, files, waited)
            stats = bundle.calibration.bins if cfg.needs_stats else None
            t_read = time.perf_counter()
        t_stats = time.perf_counter()
        written, t_write = [], 0.0

        def done(i: int, b, ms: float) -> None:
            nonlocal t_write
            per_map.append(ms)
            while written and written[0].done():  # a failed write stops the command now
                t_write += written.pop(0).result()
            rel = files[i].relative_to(args.maps)
            written.append(writer.submit(write, args.out / names[rel], b.mask))
            thresholds[rel.as_posix()] = {"mebin": b.mebin_threshold, "meanstd": b.meanstd_threshold,
                                          "fixed": cfg.fixed_threshold if cfg.method == "fixed" else None}

        binarize_batch(maps, cfg, stats, on_result=done, progress=True, keep=False, total=len(files))
        t_write += sum(f.result() for f in written)  # raises the first failed write
    t_end = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    stats_json = None if stats is None else {
        "mebin_min_th": stats.mebin_min_th, "mebin_max_th": stats.mebin_max_th, "ms_mean": stats.ms_mean,
        "ms_std": stats.ms_std, "meanstd_threshold": float(stats.meanstd_threshold(cfg.meanstd_k))}
    (args.out / "thresholds.json").write_text(json.dumps(
        {"scope": args.scope, "config": cfg.to_json(), "statistics": stats_json, "maps": thresholds},
        indent=2) + "\n")
    summary = {"maps": len(files), "scope": args.scope, "method": cfg.method,
               "timings_ms": {"read": round((t_read - t_start + waited[0]) * 1000, 2),
                              "statistics": round((t_stats - t_read) * 1000, 2),
                              "binarize_per_map": _summary_stats(per_map),
                              "binarize_total": round(sum(per_map), 2),
                              "write": round(t_write * 1000, 2),
                              "total": round((t_end - t_start) * 1000, 2)},
               "empty_masks": sum(1 for v in thresholds.values() if v["mebin"] is None)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"binarised {len(files)} maps ({args.scope} scope, {cfg.method}) into {args.out}: "
          f"{summary['timings_ms']['binarize_per_map'].get('mean', 0):.2f} ms/map")
    return 0


class _SizeChanged(Exception):
    """A map's pixel count is not the one its file's size promised."""


def _read_split(pool, read, load, files: list[Path]):
    """Every map of a batch-scope split, read on ``pool``, and its statistics; returns (maps, stats,
    the time the last map was read). When the files' sizes tell the maps' sizes (TIFFs laid out
    like the first one), the statistics' first pass (the mean) runs while the maps are still being
    read; should a map turn out another size, the statistics are computed again over all maps."""
    import contextlib
    import threading

    from tqdm import tqdm

    from .postprocess.stats import BinStats

    first = load(files[0])  # teaches the reader the folder's layout
    sizes = [first.size] + [read.expected_size(f) for f in files[1:]]
    bar = tqdm(total=len(files), desc="read", unit="map", file=sys.stderr)
    lock, last = threading.Lock(), [0.0]

    def arrived(_future) -> None:
        with lock:
            last[0] = time.perf_counter()
            bar.update()

    futures = [pool.submit(load, f) for f in files[1:]]
    arrived(None)
    for f in futures:
        f.add_done_callback(arrived)

    class Arriving:  # the maps in file order, each waited for when the statistics reach it
        def __len__(self) -> int:
            return len(files)

        def __getitem__(self, k: int):
            if not 0 <= k < len(files):
                raise IndexError(k)  # also ends iteration over it
            m = first if k == 0 else futures[k - 1].result()
            if m.size != sizes[k]:
                raise _SizeChanged
            return m

    stats = None
    try:
        if None not in sizes:
            with contextlib.suppress(_SizeChanged):
                stats = BinStats.from_maps(Arriving(), sizes)
        maps = [first] + [f.result() for f in futures]
    finally:
        bar.close()
    if stats is None:
        stats = BinStats.from_maps(maps)
    return maps, stats, last[0]


def _read_ahead(pool, load, files: list[Path], waited: list[float], ahead: int = 8):
    """``load(f)`` of each file in order, computed on ``pool`` at most ``ahead`` files ahead (a
    folder is never all in memory); the seconds spent waiting for them are added to ``waited[0]``."""
    from collections import deque

    pending = deque(pool.submit(load, f) for f in files[:ahead])
    for k in range(ahead, len(files) + ahead):
        t0 = time.perf_counter()
        m = pending.popleft().result()
        waited[0] += time.perf_counter() - t0
        if k < len(files):
            pending.append(pool.submit(load, files[k]))
        yield m


def cmd_inspect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .echo import FileErrorEcho
    from .errors import InputError, RobisError
    from .imageio import IMAGE_EXTS, find_files, output_names, read_image, write_mask, write_png
    from .inspector import Inspector
    from .overlay import render_overlay
    from .preprocess import frame_to_rgb8

    if args.image:
        if not args.image.is_file():
            raise InputError(f"{args.image}: no such file")
        files, root = [args.image], args.image.parent
    else:
        files, root = find_files(args.images, IMAGE_EXTS), args.images
        out = args.out.resolve()  # --out inside --images: never inspect a previous run's outputs
        files = [f for f in files if out not in f.resolve().parents]
        if not files:
            raise InputError(f"no images ({', '.join(IMAGE_EXTS)}) under {args.images}")
    batch = args.scope == "batch"
    with warnings.catch_warnings():  # the scope reason is printed below instead
        warnings.simplefilter("ignore")
        insp = Inspector(args.bundle, backend=args.backend, scope="rolling" if batch else args.scope,
                         mask_scale=args.mask_scale, threads=args.threads, refine=args.refine,
                         streams=args.streams)
    info = insp.describe()
    scope = "batch (statistics over these images)" if batch else f"{insp.scope} ({insp.scope_reason})"
    print(f"bundle {info['bundle']} on {info['backend']}/{info['provider']} ({info['reason']}); "
          f"scope {scope}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    counts = {"fail": 0, "error": 0}
    names = output_names([f.relative_to(root) for f in files])  # never two outputs the same
    echo = FileErrorEcho("inspect", str(args.out / "results.jsonl"))
    with open(args.out / "results.jsonl", "w", encoding="utf-8") as log:

        def error(f: Path, exc: Exception) -> None:
            counts["error"] += 1
            rel = f.relative_to(root).as_posix()
            echo(rel, exc)
            log.write(json.dumps({"file": rel, "verdict": "error", "error": str(exc)}) + "\n")

        def load(f: Path, check: bool = False):
            try:
                img = read_image(f)
                if check:  # the batch scope runs all frames at once: refuse unfit ones first
                    insp.check(*img)
                return img
            except InputError as exc:
                error(f, exc)
                return None

        def emit(f: Path, im, color: str, r) -> None:
            rel = f.relative_to(root)
            counts["fail"] += r.verdict == "fail"
            out = {"mask": (Path("masks") / names[rel]).as_posix()}
            write_mask(args.out / out["mask"], r.mask)
            if not args.no_overlays:
                out["overlay"] = (Path("overlays") / names[rel]).as_posix()
                write_png(args.out / out["overlay"], render_overlay(frame_to_rgb8(im, color), r))
            log.write(json.dumps({"file": rel.as_posix(), **out, **r.summary()}) + "\n")

        if batch:  # the batch scope needs the whole set: statistics first, then every mask
            loaded = [(f, *img) for f in files if (img := load(f, check=True)) is not None]
            if not loaded:
                raise InputError(f"none of the {len(files)} image(s) can be inspected (see {args.out}/"
                                 "results.jsonl)")
            results = insp.inspect_batch([im for _, im, _ in loaded], [c for _, _, c in loaded],
                                         scope="batch", progress=True)
            for (f, im, color), r in zip(loaded, results):
                emit(f, im, color, r)
        else:  # streaming: one image in memory at a time
            for f in tqdm(files, desc="inspect", unit="image", file=sys.stderr):
                if (img := load(f)) is None:
                    continue
                try:
                    r = insp.inspect(*img)
                except RobisError as exc:
                    error(f, exc)
                    continue
                emit(f, *img, r)
    n_fail, n_err = counts["fail"], counts["error"]
    n = len(files)
    print(f"inspected {n} image(s): {n - n_fail - n_err} pass, {n_fail} fail, {n_err} error -> {args.out}")
    return 0 if n_err == 0 else 1


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .bundle import Bundle
    from .errors import InputError
    from .imageio import IMAGE_EXTS, find_files, read_image
    from .inspector import Inspector

    bundle = Bundle.load(args.bundle)
    files = find_files(args.images, IMAGE_EXTS)
    bad = find_files(args.defective, IMAGE_EXTS) if args.defective else []
    if not files and not bad:
        raise InputError(f"no images ({', '.join(IMAGE_EXTS)}) under {args.images}")
    loaded = [read_image(f) for f in files + bad]  # an unreadable file stops calibration: say which
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the scope does not matter: calibration is batch statistics
        insp = Inspector(bundle, backend=args.backend, scope="rolling", threads=args.threads,
                         streams=args.streams)
    source = str(args.images) + (f" + {args.defective}" if args.defective else "")
    cal, ref_tiles = insp.calibrate_with_reference(
        [im for im, _ in loaded], [c for _, c in loaded], source=source,
        n_defective=len(bad) if args.defective else None, progress=True, n_reference=args.reference_tiles)
    b = cal.bins
    print(f"calibration of {bundle.name!r} on {cal.n_images} images"
          f"{f' ({len(bad)} defective)' if args.defective else ''}:")
    print(f"  tile normalisation  amap_min {cal.norm.amap_min:.6g}  amap_max {cal.norm.amap_max:.6g}")
    print(f"  MEBin search range  {b.mebin_min_th:.4f} .. {b.mebin_max_th:.4f}")
    print(f"  mean+3std           mean {b.ms_mean:.6f}  std {b.ms_std:.6f}  threshold "
          f"{float(b.meanstd_threshold(bundle.binarize_config.meanstd_k)):.3f} (0..255)")
    from .postprocess.stats import calibration_warnings

    for warning in calibration_warnings(cal, args.min_images, has_defective=bool(bad)):
        print(f"  WARNING: {warning}", file=sys.stderr)
    if args.dry_run:
        print("dry run: bundle not written")
        return 0
    bundle.set_calibration(cal)
    if ref_tiles:
        from .engines.reference import write_reference_tiles

        write_reference_tiles(bundle, ref_tiles, f"robis-edge calibrate on {source}")
        print(f"  reference tiles     {len(ref_tiles)} stored under reference/ (for `robis-edge build`)")
    bundle.save()
    print(f"written to {bundle.root / 'bundle.json'}")
    return 0
