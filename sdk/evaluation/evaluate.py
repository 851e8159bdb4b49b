"""``robis-edge evaluate``: run a bundle over a dataset split with the real pipeline (``Inspector``,
the code path of ``inspect`` and ``serve``) and compute the metrics per product and overall.

Streaming: images are read one ahead in a reader thread, inspected in the calling thread, and
their metrics accumulated in a third thread (numpy/OpenCV release the GIL), so the metric work
overlaps the inference. No full-resolution map is kept: each image leaves only histogram counts
(sdk/evaluation/metrics.py), a line in ``per_image.jsonl`` and, for the report, at most
``gallery`` small thumbnails per kind. The ``batch`` scope is the exception that RoBiS' offline
semantics impose: its statistics need every map of the split, so the Inspector holds all raw tile
maps and merged maps (at map scale) of one product at once; images are still read lazily.

Outputs under ``--out``: ``metrics.json``, ``per_image.jsonl``, ``histograms.npz`` (the
accumulated score histograms, enough to recompute every curve), with ``--save-maps``
``maps/<product>/<name>.tiff`` (float32 map at map scale) and ``masks/<product>/<name>.png``
(0/255 at mask scale), with ``--report`` ``report.html``.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
import math
import platform
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError, RobisError
from ..imageio import read_image, write_png
from ..timing import progress_bar
from ..vocabulary import parse_product_bundle
from .datasets import Product, Sample, load_dataset, read_ground_truth
from .metrics import FPR_LIMIT, ImageMetrics, ImagePixelStats, PixelMetrics

SCOPES = ("calibrated", "rolling", "batch")
METRIC_NAMES = ("seg_f1", "au_pro", "class_f1", "image_auroc", "pixel_auroc", "pixel_f1_max")
THUMB_SIDE = 640


@dataclass
class EvalConfig:
    """How to run an evaluation (everything but the data and the bundles)."""

    scope: str = "calibrated"
    backend: str = "auto"
    threads: int | None = None
    fpr_limit: float = FPR_LIMIT
    report: bool = False
    gallery: int = 8
    save_maps: bool = False
    progress: bool = True


@dataclass(order=True)
class GalleryItem:
    """One picture of the report's gallery; ordered by how bad the error is."""

    rank: tuple
    seq: int
    kind: str = field(compare=False)  # "fn" | "fp"
    name: str = field(compare=False)
    caption: dict = field(compare=False)
    jpeg: bytes = field(compare=False, repr=False)


class ProductRun:
    """Accumulated state of one product: metrics, per-image records, gallery, timings."""

    def __init__(self, product: Product, bundle_info: dict, cfg: EvalConfig, out: Path, log) -> None:
        self.product = product
        self.bundle_info = bundle_info
        self.cfg = cfg
        self.out = out
        self.log = log
        self.pixels = PixelMetrics()
        self.images = ImageMetrics()
        self.errors: list[dict] = []
        self.timings = {"read": 0.0, "inspect": 0.0, "metrics": 0.0, "gallery": 0.0, "save": 0.0, "wall": 0.0}
        self.gallery: dict[str, list[GalleryItem]] = {"fn": [], "fp": []}
        self._seq = itertools.count()

    # runs in the metrics thread, one image at a time, in dataset order
    def add(self, sample: Sample, gt: np.ndarray, result, image: np.ndarray | None,
            color: str | None, load_image: Callable[[], tuple[np.ndarray, str]] | None) -> None:
        t0 = time.perf_counter()
        st = self.pixels.add(gt, result.anomaly_map, result.mask)
        defective = st.gt_pixels > 0
        self.images.add(defective, result.score, result.verdict == "fail")
        self.timings["metrics"] += time.perf_counter() - t0
        rec = {"product": self.product.name, "name": sample.name, "group": sample.group,
               "image": str(sample.image), "ground_truth": None if sample.mask is None else str(sample.mask),
               "defective": defective, "verdict": result.verdict,
               "score": round(float(result.score), 4), "pred_regions": len(result.regions),
               **st.to_json(), "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()}}
        self.log.write(json.dumps(rec) + "\n")
        if self.cfg.save_maps:
            t1 = time.perf_counter()
            import tifffile

            p = self.out / "maps" / self.product.name / f"{sample.name}.tiff"
            p.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(p, np.asarray(result.anomaly_map, np.float32))
            write_png(self.out / "masks" / self.product.name / f"{sample.name}.png", result.mask)
            self.timings["save"] += time.perf_counter() - t1
        if self.cfg.report and self.cfg.gallery > 0:
            t1 = time.perf_counter()
            self._gallery(sample, gt, result, st, image, color, load_image)
            self.timings["gallery"] += time.perf_counter() - t1

    def _gallery(self, sample, gt, result, st: ImagePixelStats, image, color, load_image) -> None:
        candidates = []
        if st.fn > 0:  # missed defect pixels; a defective part passed is the worst case
            candidates.append(("fn", (result.verdict == "pass", st.fn / st.gt_pixels, st.fn)))
        if st.fp > 0 or (st.gt_pixels == 0 and result.verdict == "fail"):
            candidates.append(("fp", (st.gt_pixels == 0 and result.verdict == "fail", st.fp)))
        jpeg = None
        for kind, rank in candidates:
            heap = self.gallery[kind]
            if len(heap) >= self.cfg.gallery and rank <= heap[0].rank:
                continue
            if jpeg is None:
                if image is None:
                    image, color = load_image()
                jpeg = _thumbnail(image, color, result, gt)
            caption = {"name": sample.name, "group": sample.group, "verdict": result.verdict,
                       "score": round(float(result.score), 2), "gt_pixels": st.gt_pixels,
                       "gt_regions": st.gt_regions, "regions_hit": st.regions_hit, "tp": st.tp,
                       "fp": st.fp, "fn": st.fn, "seg_f1": st.seg_f1}
            item = GalleryItem(rank, -next(self._seq), kind, sample.name, caption, jpeg)
            if len(heap) < self.cfg.gallery:
                heapq.heappush(heap, item)
            else:
                heapq.heapreplace(heap, item)

    def error(self, sample: Sample, exc: Exception) -> None:
        rec = {"product": self.product.name, "name": sample.name, "image": str(sample.image),
               "verdict": "error", "error": str(exc)}
        self.errors.append(rec)
        self.log.write(json.dumps(rec) + "\n")

    def worst(self, kind: str) -> list[GalleryItem]:
        return sorted(self.gallery[kind], reverse=True)

    def result(self) -> dict:
        metrics = {**self.pixels.result(self.cfg.fpr_limit), **self.images.result()}
        return {"bundle": self.bundle_info, "root": str(self.product.root), "split": self.product.split,
                "images": self.pixels.images, "defective_images": self.pixels.defective_images,
                "gt_regions": self.pixels.regions, "groups": self.product.groups, "errors": len(self.errors),
                "metrics": {k: metrics[k] for k in METRIC_NAMES},
                "timings_s": {k: round(v, 3) for k, v in self.timings.items()}}


def _thumbnail(image: np.ndarray, color: str | None, result, gt: np.ndarray) -> bytes:
    """The overlay (heat map, predicted mask contours, regions, verdict) with the ground truth's
    contours in green, drawn at thumbnail size (at most THUMB_SIDE pixels), as JPEG."""
    from ..overlay import render_overlay
    from ..preprocess import frame_to_rgb8

    h, w = image.shape[:2]
    f = min(1.0, THUMB_SIDE / max(h, w))
    if f < 1.0:  # scale the frame and the region boxes, not the finished full-size overlay
        tw, th = max(1, round(w * f)), max(1, round(h * f))
        image = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
        sx, sy = tw / w, th / h
        regions = [dataclasses.replace(r, bbox=(math.floor(r.bbox[0] * sx), math.floor(r.bbox[1] * sy),
                                                math.ceil(r.bbox[2] * sx), math.ceil(r.bbox[3] * sy)))
                   for r in result.regions]
        result = dataclasses.replace(result, regions=regions)
        h, w = th, tw
    over = render_overlay(frame_to_rgb8(image, color), result)
    g = (gt > 0).view(np.uint8)
    if g.shape != (h, w):  # area-average so that thin defects survive the downscale
        g = cv2.resize(g * np.uint8(255), (w, h), interpolation=cv2.INTER_AREA) > 0
        g = g.view(np.uint8)
    contours, _ = cv2.findContours(g, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(over, contours, -1, (0, 230, 0), 1 if max(h, w) <= 400 else 2)
    ok, buf = cv2.imencode(".jpg", over, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return buf.tobytes() if ok else b""


# -- plumbing ------------------------------------------------------------------------------------
def parse_bundle_specs(values: Iterable[str]) -> list[tuple[str | None, Path]]:
    """``--bundle`` values: ``PATH`` or ``PRODUCT=PATH`` (``sdk.vocabulary.parse_product_bundle``)."""
    out: list[tuple[str | None, Path]] = []
    for v in values:
        try:
            name, path = parse_product_bundle(v, path_exists=lambda s: Path(s).exists())
        except ValueError as exc:
            raise InputError(str(exc)) from None
        out.append((name, Path(path)))
    return out


def _bundle_for(product: Product, specs: list[tuple[str | None, Path]], names: dict[Path, str]) -> Path:
    if len(specs) == 1 and specs[0][0] is None:
        return specs[0][1]
    for name, path in specs:
        if name == product.name:
            return path
    for name, path in specs:
        if name is None and names[path] == product.name:
            return path
    raise InputError(f"no bundle for product {product.name!r}: pass --bundle {product.name}=PATH (or one "
                     "bundle for all products)")


def _prefetch(fn: Callable, items: Iterable, depth: int = 2) -> Iterator:
    """``fn(item)`` for each item, computed ``depth`` items ahead in a thread, in order."""
    it = iter(items)
    with ThreadPoolExecutor(1, thread_name_prefix="eval-read") as ex:
        pending = deque(ex.submit(fn, x) for x in itertools.islice(it, depth))
        while pending:
            fut = pending.popleft()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append(ex.submit(fn, nxt))
            yield fut.result()


_END = object()


class _Worker:
    """One background thread that runs submitted calls in order, at most ``depth`` queued."""

    def __init__(self, depth: int = 2) -> None:
        self.ex = ThreadPoolExecutor(1, thread_name_prefix="eval-metrics")
        self.pending: deque[Future] = deque()
        self.depth = depth

    def submit(self, fn, *args) -> None:
        self.pending.append(self.ex.submit(fn, *args))
        while len(self.pending) > self.depth:
            self.pending.popleft().result()

    def join(self) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.ex.shutdown(wait=True)


class _LazyImages:
    """The images of a product, read when iterated (for ``inspect_batch``)."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples
        self.read_s = 0.0

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):
        for s in self.samples:
            t0 = time.perf_counter()
            img, _ = read_image(s.image)
            self.read_s += time.perf_counter() - t0
            yield img


def _read(sample: Sample):
    t0 = time.perf_counter()
    try:
        image, color = read_image(sample.image)
        gt = read_ground_truth(sample, image.shape[:2])
    except InputError as exc:
        return sample, None, None, None, exc, time.perf_counter() - t0
    return sample, image, color, gt, None, time.perf_counter() - t0


# -- the driver ------------------------------------------------------------------------------------
def evaluate(dataset: str | Path, bundles: list[tuple[str | None, Path]] | str | Path, out: str | Path, *,
             layout: str = "auto", split: str | None = None, products: list[str] | None = None,
             max_images: int | None = None, config: EvalConfig | None = None) -> dict:
    """Evaluate and write the outputs; returns the summary written to metrics.json (with the
    ``ProductRun`` objects under the key ``"_runs"``, not written)."""
    from ..bundle import Bundle
    from ..inspector import Inspector

    cfg = config or EvalConfig()
    if cfg.scope not in SCOPES:
        raise InputError(f"unknown scope {cfg.scope!r}; choose one of {', '.join(SCOPES)}")
    if not 0.0 < cfg.fpr_limit <= 1.0:
        raise InputError(f"the FPR limit must be in (0, 1], got {cfg.fpr_limit}")
    if isinstance(bundles, (str, Path)):
        bundles = [(None, Path(bundles))]
    if not bundles:
        raise InputError("no bundle given")
    out = Path(out)
    t_start = time.perf_counter()
    prods = load_dataset(dataset, layout, split, products, max_images)
    loaded = {path: Bundle.load(path) for _, path in bundles}
    names = {path: b.name for path, b in loaded.items()}
    out.mkdir(parents=True, exist_ok=True)
    inspectors: dict[Path, Inspector] = {}
    runs: list[ProductRun] = []
    with open(out / "per_image.jsonl", "w", encoding="utf-8") as log:
        for prod in prods:
            path = _bundle_for(prod, bundles, names)
            if cfg.scope == "calibrated":
                insp = inspectors.get(path)
                if insp is None:
                    insp = inspectors[path] = Inspector(loaded[path], backend=cfg.backend, scope="calibrated",
                                                        threads=cfg.threads)
            else:  # rolling state starts empty for each product; batch needs no calibration
                insp = Inspector(loaded[path], backend=cfg.backend, scope="rolling", threads=cfg.threads)
            info = {**insp.describe(), "path": str(path), "scope": cfg.scope}
            info.pop("scope_reason", None)
            if cfg.progress:
                groups = ", ".join(f"{g} {n}" for g, n in prod.groups.items())
                split_name = prod.split or "(whole folder)"
                print(f"{prod.name} ({prod.layout}, split {split_name}: {groups}): bundle {info['bundle']}"
                      f" on {info['backend']}/{info['provider']} {info['precision']} "
                      f"({info['reason']}), scope {cfg.scope}", file=sys.stderr)
            run = ProductRun(prod, info, cfg, out, log)
            t0 = time.perf_counter()
            if cfg.scope == "batch":
                _run_batch(run, insp)
            else:
                _run_stream(run, insp)
            run.timings["wall"] = time.perf_counter() - t0
            runs.append(run)
    summary = _summary(runs, dataset, prods, cfg, max_images)
    _write_histograms(out / "histograms.npz", runs)
    summary["timings_s"]["wall"] = round(time.perf_counter() - t_start, 3)
    if cfg.report:
        from .report import write_report

        t0 = time.perf_counter()
        write_report(out / "report.html", summary, runs)
        summary["timings_s"]["report"] = round(time.perf_counter() - t0, 3)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["_runs"] = runs
    return summary


def _run_stream(run: ProductRun, insp) -> None:
    worker = _Worker()
    prod = run.product
    try:
        samples = progress_bar(_prefetch(_read, prod.samples), len(prod.samples), run.cfg.progress,
                               desc=prod.name, unit="image")
        for sample, image, color, gt, err, t_read in samples:
            run.timings["read"] += t_read
            if err is not None:
                worker.submit(run.error, sample, err)
                continue
            t0 = time.perf_counter()
            try:
                result = insp.inspect(image, color)
            except RobisError as exc:
                worker.submit(run.error, sample, exc)
                continue
            finally:
                run.timings["inspect"] += time.perf_counter() - t0
            worker.submit(run.add, sample, gt, result, image, color, None)
    finally:
        worker.join()


def _run_batch(run: ProductRun, insp) -> None:
    prod = run.product
    images = _LazyImages(prod.samples)
    t0 = time.perf_counter()
    results = insp.inspect_batch(images, None, scope="batch", progress=run.cfg.progress)
    run.timings["inspect"] += time.perf_counter() - t0 - images.read_s
    run.timings["read"] += images.read_s
    worker = _Worker()
    try:
        for sample, result in zip(prod.samples, results):
            t1 = time.perf_counter()
            gt = read_ground_truth(sample, result.frame_hw)
            run.timings["read"] += time.perf_counter() - t1
            worker.submit(run.add, sample, gt, result, None, None, lambda s=sample: read_image(s.image))
    finally:
        worker.join()


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _summary(runs: list[ProductRun], dataset, prods: list[Product], cfg: EvalConfig, max_images) -> dict:
    per = {r.product.name: r.result() for r in runs}
    overall: dict = {}
    for m in METRIC_NAMES:
        vals = [p["metrics"][m]["value"] for p in per.values()]
        overall[m] = {"value": _mean(vals), "products": sum(v is not None for v in vals),
                      "images": sum(p["metrics"][m]["images"] for p in per.values()),
                      "defective_images": sum(p["metrics"][m]["defective_images"] for p in per.values())}
        if "regions" in next(iter(per.values()))["metrics"][m]:
            overall[m]["regions"] = sum(p["metrics"][m]["regions"] for p in per.values())
    overall["au_pro"]["fpr_limit"] = cfg.fpr_limit
    timings = {k: round(sum(r.timings[k] for r in runs), 3) for k in runs[0].timings}
    n_img = sum(r.pixels.images for r in runs)
    timings["metrics_per_image_ms"] = round(1000 * timings["metrics"] / max(n_img, 1), 3)
    timings["inspect_per_image_ms"] = round(1000 * timings["inspect"] / max(n_img, 1), 3)
    return {
        "dataset": str(dataset), "layout": prods[0].layout, "split": prods[0].split, "scope": cfg.scope,
        "fpr_limit": cfg.fpr_limit, "max_images": max_images,
        "conventions": {
            "resolution": "ground truth's; map resized bilinear (cv2.INTER_LINEAR), mask nearest "
                          "(cv2.INTER_NEAREST)",
            "ground_truth": "mask value > 127 is a defect; regions 8-connected",
            "scores": "float16-rounded, one threshold per distinct value",
            "seg_f1": "TP/FP/FN summed over all pixels of all images of the split",
            "overall": "unweighted mean over products of each metric; counts summed"},
        "products": per,
        "overall": {"products": len(per), "images": n_img, "errors": sum(len(r.errors) for r in runs),
                    "metrics": overall},
        "timings_s": timings,
        "host": {"node": platform.node(), "platform": platform.platform(),
                 "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _write_histograms(path: Path, runs: list[ProductRun]) -> None:
    arrays = {}
    for r in runs:
        p = r.product.name
        arrays[f"{p}__all"] = r.pixels.hist_all
        arrays[f"{p}__defect"] = r.pixels.hist_defect
        arrays[f"{p}__pro"] = r.pixels.hist_pro
        arrays[f"{p}__counts"] = np.array([r.pixels.images, r.pixels.regions, r.pixels.pixels,
                                           r.pixels.defect_pixels, r.pixels.tp, r.pixels.fp, r.pixels.fn])
        arrays[f"{p}__image_scores"] = np.asarray(r.images.scores)
        arrays[f"{p}__image_labels"] = np.asarray(r.images.labels)
        arrays[f"{p}__image_fails"] = np.asarray(r.images.fails)
    np.savez_compressed(path, **arrays)


def format_table(summary: dict) -> str:
    """The metric table as text (products, then the mean)."""
    lim = summary["fpr_limit"]
    cols = [("seg_f1", "SegF1"), ("au_pro", f"AucPro@{lim:g}"), ("class_f1", "ClassF1"),
            ("image_auroc", "I-AUROC"), ("pixel_auroc", "P-AUROC"), ("pixel_f1_max", "P-F1max")]
    width = max(12, *(len(n) + 2 for n in summary["products"]))
    head = f"{'product':<{width}}{'images':>7}{'defect':>7}{'regions':>8}"
    head += "".join(f"{c:>{max(9, len(c) + 2)}}" for _, c in cols)
    lines = [head]

    def fmt(v):
        return "-" if v is None else f"{v:.4f}"

    for name, p in summary["products"].items():
        lines.append(f"{name:<{width}}{p['images']:>7}{p['defective_images']:>7}{p['gt_regions']:>8}"
                     + "".join(f"{fmt(p['metrics'][k]['value']):>{max(9, len(c) + 2)}}" for k, c in cols))
    if len(summary["products"]) > 1:
        o = summary["overall"]
        m = o["metrics"]
        lines.append(f"{'mean':<{width}}{o['images']:>7}{m['seg_f1']['defective_images']:>7}"
                     f"{m['au_pro']['regions']:>8}"
                     + "".join(f"{fmt(m[k]['value']):>{max(9, len(c) + 2)}}" for k, c in cols))
    return "\n".join(lines)
