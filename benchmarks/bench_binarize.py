"""Benchmark: RoBiS coarse masks — upstream stand-in, straightforward oracle, the SDK's fast path
and the ``robis-edge binarize`` command — on several splits, in one run.

Splits: the golden split (16 TIFF maps of the upstream code), a held-out split made like it, a
noise-like split and a dense one (the noise-like maps with one dim map, so that nearly every pixel
of the others is in the search range) (``tests/oracles.py`` generators, written as float16 TIFFs),
or ``--maps DIR``.
For each split, interleaved over ``--repeat`` rounds and single-threaded:

- upstream stand-in: the upstream MEBin class is not runnable here, so a faithful straightforward
  implementation of it (``tests/oracles.py``: 64 × threshold, erode, label per map, as the
  upstream code does) reading the TIFF files as the class does;
- oracle: the same on maps already in memory;
- ``binarize_batch``: mean and p50/p99 per map (best of the rounds for each map), and its pieces;
- the command: ``robis-edge binarize`` (subprocesses) on a folder holding the split's files
  ``--copies`` times (default 8) and on one holding them once; marginal time per map = the
  difference of their best (median) runs / the (copies - 1) × n extra maps (start-up and imports
  cancel out); also its CPU time (all threads), and ``binarize_batch`` on the same copies × n maps
  (a bigger working set than n maps).

Masks, thresholds and statistics are checked identical to the oracle before anything is reported.

    python benchmarks/bench_binarize.py                       # golden, held-out, noise-like, dense
    python benchmarks/bench_binarize.py --splits golden --repeat 5 --json out.json
    python benchmarks/bench_binarize.py --splits golden,heldout --repeat 7 --copies 16 --command-only
    python benchmarks/bench_binarize.py --maps DIR            # float16/float32 .tif/.npy of one shape
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from oracles import binarize_batch_oracle, noise_maps, robis_style_maps  # noqa: E402

from sdk.postprocess import halfkeys  # noqa: E402
from sdk.postprocess.binarize import BinarizeConfig, as_map, binarize_batch  # noqa: E402
from sdk.postprocess.levelsets import level_set_counts  # noqa: E402
from sdk.postprocess.mebin import key_candidates, threshold_from_counts  # noqa: E402
from sdk.postprocess.stats import BinStats  # noqa: E402

GOLDEN = REPO.parent / "shared" / "golden" / "post" / "binarize" / "maps"
PIECES = ("batch stats", "erosion", "candidates", "level counts", "final masks")
SPLITS = ("golden", "heldout", "noise", "dense")


def read_maps(paths: list[Path]) -> list[np.ndarray]:
    import tifffile

    out = []
    for p in paths:
        m = np.squeeze(np.load(p) if p.suffix.lower() == ".npy" else tifffile.imread(p))
        if m.dtype not in (np.float16, np.float32) or m.ndim != 2:
            raise SystemExit(f"{p.name}: maps must be 2-D float16/float32, got {m.dtype} {m.shape}")
        out.append(m)
    if len({m.shape for m in out}) != 1:
        raise SystemExit("maps of one class split must share one shape")
    return out


def split_files(name: str, maps_dir: Path | None, work: Path) -> list[Path]:
    """The files of a split (generated splits are written as float16 TIFFs under ``work``)."""
    import tifffile

    if maps_dir is not None:
        return sorted(p for p in maps_dir.iterdir() if p.suffix.lower() in (".tif", ".tiff", ".npy"))
    if name == "golden":
        if not GOLDEN.is_dir():
            raise SystemExit(f"golden maps not found at {GOLDEN}")
        return sorted(GOLDEN.glob("*.tiff"))
    if name == "heldout":
        maps = robis_style_maps(2)
    else:
        maps = noise_maps(2024)
        if name == "dense":  # one dim map: the search range starts low, nearly every pixel is in it
            maps[0] = (maps[0].astype(np.float32) * 0.1).astype(np.float16)
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(maps):
        tifffile.imwrite(folder / f"{i:03d}.tiff", m)
    return sorted(folder.glob("*.tiff"))


def upstream_standin(paths: list[Path], cfg: BinarizeConfig):
    """What the upstream MEBin class does over a split: read the TIFFs, then the straightforward sweep."""
    maps = [as_map(m, cfg.precision) for m in read_maps(paths)]
    return run_oracle(maps, cfg)


def run_oracle(maps, cfg: BinarizeConfig):
    p = cfg.mebin
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # flat/narrow search ranges
        return binarize_batch_oracle(maps, p.sample_rate, p.min_interval_len, p.erode_kernel)


def run_pieces(maps, cfg: BinarizeConfig, clock: dict[str, float]):
    """The float16 fast path of ``binarize_batch`` (mebin+meanstd) step by step, timing each piece."""
    p = cfg.mebin
    kernel = np.ones((p.erode_kernel, p.erode_kernel), np.uint8)
    t0 = time.perf_counter()
    stats = BinStats.from_maps(maps)
    t_ms = stats.meanstd_threshold(cfg.meanstd_k)
    clock["batch stats"] += time.perf_counter() - t0
    valid = np.float16(stats.mebin_max_th) > np.float16(stats.mebin_min_th)
    out = []
    for m in maps:
        t0 = time.perf_counter()
        eroded = cv2.erode(halfkeys.to_keys(m), kernel)
        t1 = time.perf_counter()
        cand = key_candidates(eroded, stats.mebin_min_th, stats.mebin_max_th, p) if valid else None
        t2 = time.perf_counter()
        counts = np.zeros(p.levels().size, np.int64)
        if cand is not None:
            counts = level_set_counts(cand[0], p.levels().size, cand[1])
        thr = None if not valid else threshold_from_counts(counts, stats.mebin_min_th, stats.mebin_max_th, p,
                                                           np.float16)
        t3 = time.perf_counter()
        cut = t_ms if thr is None else min(t_ms, np.float32(thr))
        mask = halfkeys.greater(eroded, halfkeys.floor_key(cut))
        t4 = time.perf_counter()
        for k, dt in zip(PIECES[1:], (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            clock[k] += dt
        out.append((mask, thr, counts))
    return out, stats


def check_identical(fast, stats, oracle, pieces, names) -> None:
    masks, thr, (lo, hi), t_ms = oracle
    problems = []
    if (stats.mebin_min_th, stats.mebin_max_th) != (float(lo), float(hi)):
        problems.append(f"search range {stats.mebin_min_th, stats.mebin_max_th} vs oracle "
                        f"{float(lo), float(hi)}")
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


def run_cli(paths: list[Path], out: Path, precision: str, copies: int = 1) -> tuple[float, float]:
    """Wall and CPU (all threads) seconds of one ``robis-edge binarize`` run on these files, each
    linked ``copies`` times into one folder (a bigger split of the same maps)."""
    src = out.with_name(out.name + "-maps")
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    src.mkdir(parents=True)
    for c in range(copies):
        for p in paths:
            os.symlink(p.resolve(), src / f"{c}_{p.name}")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "edge_runtime.cli", "binarize", "--maps", str(src), "--out", str(out),
           "--precision", precision]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True, cwd=out.parent)  # not REPO's cwd
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def percentile(v, q: float) -> float:
    return float(np.percentile(np.asarray(v), q))


def bench_split(name: str, paths: list[Path], args, work: Path) -> dict:
    raw = read_maps(paths)
    precision = args.precision
    if precision == "auto":
        precision = "float16" if all(m.dtype == np.float16 for m in raw) else "float32"
    cfg = BinarizeConfig(precision=precision)
    maps = [as_map(m, precision) for m in raw]
    n = len(maps)
    names = [p.name for p in paths]

    # Warm-up and correctness first.
    fast, stats = binarize_batch(maps, cfg)
    oracle = run_oracle(maps, cfg)
    if precision == "float16":
        pieces, _ = run_pieces(maps, cfg, dict.fromkeys(PIECES, 0.0))
    else:
        pieces = [(r.mask, r.mebin_threshold, r.counts) for r in fast]
    check_identical(fast, stats, oracle, pieces, names)
    if args.cli:
        run_cli(paths, work / "cli-warm", precision)

    t_up, t_oracle, t_fast, c_fast, t_cli_all, t_cli_half, t_copies = [], [], [], [], [], [], []
    copies = [m.copy() for _ in range(args.copies) for m in maps] if args.cli else []  # the command's split
    per_map = np.full((args.repeat, n), np.inf)
    t_pieces = {k: [] for k in PIECES}
    for rep in range(args.repeat):
        if not args.command_only:
            t0 = time.perf_counter()
            upstream_standin(paths, cfg)
            t_up.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run_oracle(maps, cfg)
            t_oracle.append(time.perf_counter() - t0)
        t0, c0 = time.perf_counter(), time.process_time()
        binarize_batch(maps, cfg, on_result=lambda i, _, ms, rep=rep: per_map[rep].__setitem__(i, ms))
        t_fast.append(time.perf_counter() - t0)
        c_fast.append(time.process_time() - c0)
        if precision == "float16":
            clock = dict.fromkeys(PIECES, 0.0)
            run_pieces(maps, cfg, clock)
            for k in PIECES:
                t_pieces[k].append(clock[k])
        if args.cli:
            t0 = time.perf_counter()
            binarize_batch(copies, cfg)
            t_copies.append(time.perf_counter() - t0)
            t_cli_all.append(run_cli(paths, work / "cli-more", precision, args.copies))
            t_cli_half.append(run_cli(paths, work / "cli-one", precision))

    def ms(v: float, count: int = n) -> float:
        return v / count * 1e3

    best = per_map.min(axis=0)  # per map, the best of the rounds
    res = {
        "split": name, "maps": str(paths[0].parent), "n_maps": n, "shape": list(maps[0].shape),
        "dtype": str(raw[0].dtype), "precision": precision, "repeat": args.repeat, "identical": True,
        "mebin_search_range": [stats.mebin_min_th, stats.mebin_max_th],
        "max_components": int(max(int(r.counts.max()) for r in fast if r.counts is not None)),
        "ms_per_map": {k: {"best": ms(min(v)), "median": ms(float(np.median(v)))} for k, v in (
            ("upstream_standin", t_up), ("oracle", t_oracle), ("binarize_batch", t_fast)) if v},
        "binarize_per_map_ms": {"p50": percentile(best, 50), "p99": percentile(best, 99),
                                "max": float(best.max()), "mean": float(best.mean())},
        "pieces_ms_per_map": {k: {"best": ms(min(v)), "median": ms(float(np.median(v)))}
                              for k, v in t_pieces.items() if v},
    }
    res["cpu_ms_per_map"] = {"binarize_batch": {"best": ms(min(c_fast)),
                                                "median": ms(float(np.median(c_fast)))}}
    if args.cli:
        extra = (args.copies - 1) * n

        def marginal(i: int) -> dict:  # best: best run of each size; median: median run of each
            more, one = [t[i] for t in t_cli_all], [t[i] for t in t_cli_half]
            return {"best": ms(min(more) - min(one), extra),
                    "median": ms(float(np.median(more) - np.median(one)), extra)}

        res["cli"] = {"copies": args.copies, "more_s": t_cli_all, "one_s": t_cli_half,
                      "marginal_ms_per_map": marginal(0),
                      "binarize_batch_same_maps": {"best": ms(min(t_copies), len(copies)),
                                                   "median": ms(float(np.median(t_copies)), len(copies))}}
        res["cpu_ms_per_map"]["cli_marginal"] = marginal(1)
    return res


def report(res: dict) -> None:
    h, w = res["shape"]
    mp = res["ms_per_map"]
    lo, hi = res["mebin_search_range"]
    print(f"\n== {res['split']}: {res['n_maps']} maps {h}x{w} {res['dtype']} ({res['maps']}); precision "
          f"{res['precision']}; search range {lo:.4g}..{hi:.4g}, up to {res['max_components']} components "
          "at a level; outputs identical")
    print(f"{'path':<50}{'best ms/map':>12}{'median ms/map':>15}")
    labels = (("upstream stand-in (TIFF read + 64-level sweep)", "upstream_standin"),
              ("oracle (64-level sweep, maps in memory)", "oracle"), ("binarize_batch", "binarize_batch"))
    rows = [(label, mp[k]) for label, k in labels if k in mp]
    if "cli" in res:
        rows.append((f"binarize_batch on {res['cli']['copies']} copies (the command's maps)",
                     res["cli"]["binarize_batch_same_maps"]))
        rows.append(("robis-edge binarize, marginal per map", res["cli"]["marginal_ms_per_map"]))
    for label, v in rows:
        print(f"  {label:<48}{v['best']:>12.3f}{v['median']:>15.3f}")
    pm = res["binarize_per_map_ms"]
    print(f"  binarize_batch per map (best of rounds): p50 {pm['p50']:.3f}  p99 {pm['p99']:.3f}  "
          f"max {pm['max']:.3f}  mean {pm['mean']:.3f}")
    fast = mp["binarize_batch"]["best"]
    ratios = []
    if "oracle" in mp:
        ratios.append(f"oracle / binarize_batch {mp['oracle']['best'] / fast:.1f}x")
    if "cli" in res:
        cli = res["cli"]["marginal_ms_per_map"]
        same = res["cli"]["binarize_batch_same_maps"]
        if "upstream_standin" in mp:
            ratios.append(f"upstream stand-in / command {mp['upstream_standin']['best'] / cli['best']:.1f}x")
        ratios.append(f"command / binarize_batch {cli['best'] / fast:.2f}x (same maps: best "
                      f"{cli['best'] / same['best']:.2f}x, median {cli['median'] / same['median']:.2f}x)")
    print("  ratios: " + "; ".join(ratios))
    cpu = res["cpu_ms_per_map"]
    line = f"  CPU time (all threads), best ms/map: binarize_batch {cpu['binarize_batch']['best']:.3f}"
    if "cli_marginal" in cpu:
        c = cpu["cli_marginal"]["best"]
        line += f", command marginal {c:.3f} ({c / cpu['binarize_batch']['best']:.2f}x)"
    print(line)
    if res["pieces_ms_per_map"]:
        print("  fast path pieces, best ms/map (batch stats: whole split / n): " + ", ".join(
            f"{k} {v['best']:.3f}" for k, v in res["pieces_ms_per_map"].items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--splits", default=",".join(SPLITS), help=f"comma-separated, of {', '.join(SPLITS)}")
    ap.add_argument("--maps", type=Path, help="a folder of maps instead (one split)")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds of each path (interleaved)")
    ap.add_argument("--precision", choices=("auto", "float16", "float32"), default="auto",
                    help="arithmetic of both paths (auto: float16 if every map is float16)")
    ap.add_argument("--no-cli", dest="cli", action="store_false", help="do not time the command")
    ap.add_argument("--copies", type=int, default=8,
                    help="the command's marginal time: a folder of this many copies of the split "
                    "vs one (default 8)")
    ap.add_argument("--command-only", action="store_true",
                    help="time only binarize_batch and the command (the outputs are still checked)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    if args.copies < 2:
        ap.error("--copies must be >= 2")
    if args.maps is not None and not args.maps.is_dir():
        ap.error(f"no such folder: {args.maps}")
    splits = ["maps"] if args.maps else [s for s in args.splits.split(",") if s]
    if any(s not in SPLITS + ("maps",) for s in splits):
        ap.error(f"--splits: choose from {', '.join(SPLITS)}")

    cv2.setNumThreads(1)
    print(f"{platform.machine()} {platform.processor() or ''} ({os.cpu_count()} CPUs), Python "
          f"{platform.python_version()}, numpy {np.__version__}, OpenCV {cv2.__version__}; 1 thread in this "
          f"process (cv2.setNumThreads(1)), {args.repeat} interleaved rounds")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_binarize_") as tmp:
        work = Path(tmp)
        for name in splits:
            res = bench_split(name, split_files(name, args.maps, work), args, work)
            report(res)
            results.append(res)
    if args.json:
        meta = {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
                "machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count()}
        args.json.write_text(json.dumps({"meta": meta, "splits": results}, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
