"""Benchmark: RoBiS coarse masks, straightforward oracle vs the SDK's fast path, in one run.

Times, interleaved over N repeats and single-threaded, the oracle (``tests/oracles.py``:
64 binarisations, erosions and labelings per map, as RoBiS runs MEBin) and
``sdk.postprocess.binarize.binarize_batch`` over a folder of maps treated as one class split,
then the pieces of the fast path. Outputs are checked identical before anything is reported.

    python benchmarks/bench_binarize.py                      # golden maps (16 x 512x612 float16)
    python benchmarks/bench_binarize.py --maps DIR --repeat 7 --json out.json

DIR holds float16/float32 ``.tif``/``.tiff``/``.npy`` maps of one shape (0..255 scale).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from oracles import binarize_batch_oracle  # noqa: E402

from sdk.postprocess.binarize import BinarizeConfig, as_map, binarize_batch  # noqa: E402
from sdk.postprocess.mebin import (  # noqa: E402
    erode_map,
    first_levels,
    level_counts_sparse,
    search_normalise,
    stable_interval_end,
    work_dtype,
)
from sdk.postprocess.stats import BinStats  # noqa: E402

DEFAULT_MAPS = REPO.parent / "shared" / "golden" / "post" / "binarize" / "maps"
PIECES = ("batch stats", "erosion", "normalise", "level counts", "final masks")


def load_maps(folder: Path) -> tuple[list[np.ndarray], list[str]]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".tif", ".tiff", ".npy"))
    if not paths:
        raise SystemExit(f"no .tif/.tiff/.npy maps in {folder}")
    maps = []
    for p in paths:
        if p.suffix.lower() == ".npy":
            m = np.load(p)
        else:
            import tifffile

            m = tifffile.imread(p)
        m = np.squeeze(m)
        if m.dtype not in (np.float16, np.float32):
            raise SystemExit(f"{p.name}: maps must be float16 or float32, got {m.dtype}")
        if m.ndim != 2:
            raise SystemExit(f"{p.name}: maps must be 2-D, got shape {m.shape}")
        maps.append(m)
    shapes = {m.shape for m in maps}
    if len(shapes) != 1:
        raise SystemExit(f"maps of one class split must share one shape, got {sorted(shapes)}")
    return maps, [p.name for p in paths]


def run_oracle(maps, cfg: BinarizeConfig):
    p = cfg.mebin
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # flat/narrow search ranges
        return binarize_batch_oracle(maps, p.sample_rate, p.min_interval_len, p.erode_kernel)


def run_pieces(maps, cfg: BinarizeConfig, clock: dict[str, float]):
    """The fast path of ``binarize_batch`` (method mebin+meanstd) step by step, timing each piece."""
    p = cfg.mebin
    levels = p.levels()
    t0 = time.perf_counter()
    stats = BinStats.from_maps(maps)
    t_ms = stats.meanstd_threshold(cfg.meanstd_k)
    clock["batch stats"] += time.perf_counter() - t0
    out = []
    for m in maps:
        dt = work_dtype(m.dtype)
        t0 = time.perf_counter()
        eroded = erode_map(m, p.erode_kernel)
        t1 = time.perf_counter()
        thr = None
        counts = np.zeros(levels.size, np.int64)
        if dt(stats.mebin_max_th) > dt(stats.mebin_min_th):
            flat = eroded.reshape(-1)
            cand = np.flatnonzero(flat > np.float32(dt(stats.mebin_min_th)))
            norm = search_normalise(flat[cand], stats.mebin_min_th, stats.mebin_max_th, dt)
            t2 = time.perf_counter()
            keep = norm > levels[-1]
            ys, xs = np.divmod(cand[keep], eroded.shape[1])
            counts = level_counts_sparse(ys, xs, first_levels(norm[keep], p), levels.size)
            idx = stable_interval_end(counts, p.min_interval_len)
            if idx is not None:
                lo = dt(stats.mebin_min_th)
                thr = int(int(255 - idx * p.sample_rate) * (dt(stats.mebin_max_th) - lo) / 255 + lo)
        else:
            t2 = time.perf_counter()
        t3 = time.perf_counter()
        mask = eroded > t_ms
        if thr is not None:
            mask |= eroded > np.float32(thr)
        mask = mask.view(np.uint8) * np.uint8(255)
        t4 = time.perf_counter()
        clock["erosion"] += t1 - t0
        clock["normalise"] += t2 - t1
        clock["level counts"] += t3 - t2
        clock["final masks"] += t4 - t3
        out.append((mask, thr, counts))
    return out, stats


def check_identical(fast, stats, oracle, pieces, names) -> None:
    masks, thr, (lo, hi), t_ms = oracle
    problems = []
    if (stats.mebin_min_th, stats.mebin_max_th) != (float(lo), float(hi)):
        problems.append(f"search range {stats.mebin_min_th, stats.mebin_max_th} "
                        f"vs oracle {float(lo), float(hi)}")
    if stats.meanstd_threshold() != t_ms:
        problems.append(f"mean+3std {stats.meanstd_threshold()} vs oracle {t_ms}")
    for name, r, m, t, (pm, pt, pc) in zip(names, fast, masks, thr, pieces, strict=True):
        ours = 255 if r.mebin_threshold is None else r.mebin_threshold
        if ours != t or pt != r.mebin_threshold:
            problems.append(f"{name}: MEBin threshold fast {ours} / pieces {pt} vs oracle {t}")
        if not np.array_equal(r.mask, m):
            problems.append(f"{name}: {np.count_nonzero(r.mask != m)} mask pixels differ from the oracle")
        if not np.array_equal(pm, r.mask) or not np.array_equal(pc, r.counts):
            problems.append(f"{name}: the timed pieces disagree with binarize_batch")
    if problems:
        raise SystemExit("outputs differ, nothing reported:\n  " + "\n  ".join(problems))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--maps", type=Path, default=DEFAULT_MAPS, help="folder of maps (default: golden maps)")
    ap.add_argument("--repeat", type=int, default=5, help="timed repeats of each path (interleaved)")
    ap.add_argument("--precision", choices=("auto", "float16", "float32"), default="auto",
                    help="arithmetic of both paths (auto: float16 if every map is float16)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    if not args.maps.is_dir():
        ap.error(f"no such folder: {args.maps}")

    cv2.setNumThreads(1)
    raw, names = load_maps(args.maps)
    precision = args.precision
    if precision == "auto":
        precision = "float16" if all(m.dtype == np.float16 for m in raw) else "float32"
    cfg = BinarizeConfig(precision=precision)
    # Both paths see the same maps: the oracle computes in the maps' dtype, the SDK in `precision`.
    maps = [as_map(m, precision) for m in raw]
    n = len(maps)

    # Warm-up and correctness first.
    fast, stats = binarize_batch(maps, cfg)
    oracle = run_oracle(maps, cfg)
    pieces, _ = run_pieces(maps, cfg, dict.fromkeys(PIECES, 0.0))
    check_identical(fast, stats, oracle, pieces, names)

    t_oracle, t_fast = [], []
    t_pieces = {k: [] for k in PIECES}
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        run_oracle(maps, cfg)
        t_oracle.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        binarize_batch(maps, cfg)
        t_fast.append(time.perf_counter() - t0)
        clock = dict.fromkeys(PIECES, 0.0)
        run_pieces(maps, cfg, clock)
        for k in PIECES:
            t_pieces[k].append(clock[k])

    def ms(v: float) -> float:
        return v / n * 1e3

    rows = {"oracle": t_oracle, "binarize_batch": t_fast}
    res = {
        "maps": str(args.maps), "n_maps": n, "shape": list(maps[0].shape), "dtype": str(raw[0].dtype),
        "precision": precision, "repeat": args.repeat, "threads": 1,
        "python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
        "machine": platform.machine(), "processor": platform.processor(),
        "identical": True,
        "ms_per_map": {k: {"best": ms(min(v)), "median": ms(statistics.median(v))} for k, v in rows.items()},
        "pieces_ms_per_map": {k: {"best": ms(min(v)), "median": ms(statistics.median(v))}
                              for k, v in t_pieces.items()},
        "mebin_thresholds": [r.mebin_threshold for r in fast],
        "meanstd_threshold": float(stats.meanstd_threshold()),
    }
    res["speedup"] = {k: res["ms_per_map"]["oracle"][k] / res["ms_per_map"]["binarize_batch"][k]
                      for k in ("best", "median")}

    h, w = maps[0].shape
    print(f"{n} maps {h}x{w} {raw[0].dtype} from {args.maps}")
    print(f"precision {precision}, {args.repeat} interleaved repeats, 1 thread (cv2.setNumThreads(1)); "
          "outputs identical (masks, thresholds, search range, mean+3std)")
    print()
    print(f"{'path':<28}{'best ms/map':>12}{'median ms/map':>15}")
    for label, key in (("oracle (RoBiS, 64 levels)", "oracle"), ("binarize_batch (fast)", "binarize_batch")):
        print(f"{label:<28}{res['ms_per_map'][key]['best']:>12.3f}{res['ms_per_map'][key]['median']:>15.3f}")
    print(f"{'ratio oracle / fast':<28}{res['speedup']['best']:>11.1f}x{res['speedup']['median']:>14.1f}x")
    print()
    print("fast path pieces (batch stats: whole split / n)")
    for k in PIECES:
        v = res["pieces_ms_per_map"][k]
        print(f"  {k:<26}{v['best']:>12.3f}{v['median']:>15.3f}")
    total_best = sum(res["pieces_ms_per_map"][k]["best"] for k in PIECES)
    total_med = sum(res["pieces_ms_per_map"][k]["median"] for k in PIECES)
    print(f"  {'sum of pieces':<26}{total_best:>12.3f}{total_med:>15.3f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
