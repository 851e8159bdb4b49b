"""What a bundle holds (``bundle show``) and whether it works here (``bundle verify``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, RobisError
from .store import Bundle


def _model_io(path: Path) -> dict[str, Any]:
    """Input and output names, types and shapes of an ONNX file, read by ONNX Runtime."""
    from ..backends.onnxruntime import open_session

    try:
        sess = open_session(path, ["CPUExecutionProvider"])
    except RobisError as exc:
        return {"error": str(exc)}
    return {"inputs": {i.name: [i.type, list(i.shape)] for i in sess.get_inputs()},
            "outputs": {o.name: [o.type, list(o.shape)] for o in sess.get_outputs()}}


def describe_bundle(bundle: Bundle) -> dict[str, Any]:
    """A JSON-ready summary of the bundle (no hash check)."""
    m, pre, tiling = bundle.model, bundle.preprocess, bundle.tiling_spec
    files = bundle.files
    model_path = bundle.resolve(m.file)
    info: dict[str, Any] = {
        "root": str(bundle.root), "name": bundle.name, "format": bundle.to_json().get("format"),
        "anomaly_model": {"file": m.file,
                          "bytes": model_path.stat().st_size if model_path.is_file() else None,
                          "sha256": files.get(m.file, ""), "map_size": m.map_size, "input": m.input,
                          "output": m.output, "max_batch": m.max_batch, "features": m.features,
                          "io": _model_io(model_path) if model_path.is_file() else {"error": "missing"}},
        "preprocess": {"size": pre.size, "mean": list(pre.mean), "std": list(pre.std),
                       "channel_order": pre.channel_order, "resize": pre.resize},
        "tiling": {"window": tiling.window, "overlap": tiling.overlap,
                   "frame_hw": None if tiling.frame_hw is None else list(tiling.frame_hw)},
        "binarize": bundle.binarize_config.to_json(),
        "verdict": {"min_area_px": bundle.verdict.min_area_px,
                    "score_threshold": bundle.verdict.score_threshold,
                    "roi": None if bundle.verdict.roi is None else list(bundle.verdict.roi)},
        "calibration": None, "engines": [], "refiners": {}, "reference": None,
        "files": {rel: {"sha256": d, "bytes": bundle.resolve(rel).stat().st_size
                        if bundle.resolve(rel).is_file() else None} for rel, d in files.items()},
        "provenance": bundle.provenance,
    }
    cal = bundle.calibration
    if cal is not None:
        info["calibration"] = cal.to_json()
    for e in bundle.engines:
        info["engines"].append({"model": e.model, "file": e.file, "precision": e.precision,
                                "tensorrt": e.tensorrt_version, "gpu": e.gpu_name,
                                "compute_capability": e.compute_capability, "max_batch": e.max_batch})
    sam, ttt = bundle.sam, bundle.ttt
    if sam is not None:
        info["refiners"]["sam"] = {"encoder": sam.encoder_file, "decoder": sam.decoder_file, "mode": sam.mode,
                                   "top_n": sam.top_n, "channel_order": sam.channel_order}
    if ttt is not None:
        info["refiners"]["ttt"] = {k: getattr(ttt, k) for k in ttt.__dataclass_fields__}
    ref = bundle.reference
    if ref is not None:
        info["reference"] = {"tiles": len(ref.tiles), "color": ref.color, "source": ref.source}
    return info


def format_description(info: dict[str, Any]) -> str:
    """``describe_bundle``'s summary as text."""
    m, pre, t = info["anomaly_model"], info["preprocess"], info["tiling"]
    size = f"{m['bytes'] / 2**20:.2f} MiB" if m["bytes"] is not None else "MISSING"
    lines = [f"bundle {info['name']!r} ({info['format']}) at {info['root']}",
             f"  anomaly model  {m['file']} ({size}, sha256 {m['sha256'][:12]}…)",
             f"                 {m['input']} N×3×{pre['size']}×{pre['size']} → {m['output']} "
             f"N×1×{m['map_size']}×{m['map_size']}"
             + (f"; fixed batch {m['max_batch']}" if m["max_batch"] else "")
             + (f"; features output {m['features']!r}" if m["features"] else "")]
    io = m["io"]
    if "error" in io:
        lines.append(f"                 (cannot open: {io['error']})")
    else:
        shown = ", ".join(f"{k} {v[1]}" for k, v in io["outputs"].items())
        lines.append(f"                 ONNX outputs: {shown}")
    lines.append(f"  preprocess     {pre['channel_order']} mean {pre['mean']} std {pre['std']} "
                 f"({pre['resize']})")
    window = "none (whole frame)" if t["window"] is None else t["window"]
    lines.append(f"  tiling         window {window}, overlap {t['overlap']}"
                 + (f", frame {t['frame_hw'][1]}x{t['frame_hw'][0]}" if t["frame_hw"] else ""))
    b = info["binarize"]
    lines.append(f"  binarize       {b['method']} (k {b['meanstd_k']}, {b['precision']})")
    v = info["verdict"]
    lines.append(f"  verdict        min_area_px {v['min_area_px']}, score_threshold {v['score_threshold']}, "
                 f"roi {v['roi']}")
    cal = info["calibration"]
    if cal is None:
        lines.append("  calibration    none (run `robis-edge calibrate`)")
    else:
        lines.append(f"  calibration    amap {cal.get('amap_min')}..{cal.get('amap_max')}, MEBin "
                     f"{cal['mebin_min_th']:.2f}..{cal['mebin_max_th']:.2f}, mean/std {cal['ms_mean']:.4f}/"
                     f"{cal['ms_std']:.4f}; {cal['n_images']} images ({cal.get('n_defective')} defective), "
                     f"{cal.get('created', '')}")
    if not info["engines"]:
        lines.append("  engines        none (`robis-edge build` on the device)")
    for e in info["engines"]:
        lines.append(f"  engine         {e['model']}: {e['file']} {e['precision']}, TensorRT "
                     f"{e['tensorrt']}, {e['gpu']} (sm {e['compute_capability']})")
    if not info["refiners"]:
        lines.append("  refiners       none")
    for name, r in info["refiners"].items():
        lines.append(f"  refiner        {name}: " + ", ".join(f"{k} {v}" for k, v in r.items()))
    ref = info["reference"]
    lines.append("  reference      " + ("none" if ref is None else f"{ref['tiles']} tiles ({ref['color']})"))
    lines.append(f"  files          {len(info['files'])}, "
                 f"{sum(f['bytes'] or 0 for f in info['files'].values()) / 2**20:.2f} MiB")
    prov = info["provenance"]
    if prov:
        keys = ("exporter", "source_checkpoint", "source_model", "created")
        lines.append("  provenance     " + ", ".join(f"{k} {prov[k]}" for k in keys if k in prov))
    return "\n".join(lines)


def verify_bundle(path: str | os.PathLike, log: Callable[[str], None] = print) -> list[str]:
    """Check a bundle end to end; returns the lines logged. Raises ``BundleError`` at the first
    failure (a ``RobisError`` from a model run is reported as one)."""
    lines: list[str] = []

    def ok(text: str) -> None:
        lines.append("ok    " + text)
        log(lines[-1])

    bundle = Bundle.load(path, verify=False)
    ok(f"bundle.json: format {bundle.to_json().get('format')}, every section reads")
    bundle.verify_files()
    ok(f"files: {len(bundle.files)} listed, each present with its sha256")
    from ..backends import create_backend

    m, pre = bundle.model, bundle.preprocess
    try:
        backend = create_backend(str(bundle.model_path), input_size=pre.size, map_size=m.map_size,
                                 backend="ort-cpu", bundle=bundle)
        batch = np.random.default_rng(0).random((2, 3, pre.size, pre.size), dtype=np.float32)
        batch = (batch - np.asarray(pre.mean, np.float32)[:, None, None]) / np.asarray(pre.std, np.float32)[
            :, None, None]
        if m.features is not None:
            maps, feats = backend.run_with_features(batch)
            extra = f" and features {tuple(feats.shape)}"
        else:
            maps, extra = backend.run(batch), ""
    except RobisError as exc:
        raise BundleError(f"{bundle.root}: the anomaly model does not run: {exc}") from exc
    ok(f"anomaly model runs on ONNX Runtime CPU: 2 tiles → maps {tuple(maps.shape)}{extra}, finite"
       + (f" (fixed batch {backend.max_batch}, run tile by tile)" if getattr(backend, "_fixed_batch", None)
          else ""))
    sam = bundle.sam
    if sam is not None:
        from ..refine.sam import SamRefiner

        try:
            refiner = SamRefiner(bundle.resolve(sam.encoder_file), bundle.resolve(sam.decoder_file),
                                 "single" if sam.mode == "off" else sam.mode, sam.top_n, sam.channel_order)
            frame = np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)
            coarse = np.zeros((32, 32), np.uint8)
            coarse[8:16, 8:16] = 255
            out = refiner.refine(frame, coarse)[0]
        except RobisError as exc:
            raise BundleError(f"{bundle.root}: the SAM models do not run: {exc}") from exc
        ok(f"SAM encoder and decoder run (mode {sam.mode}): a 32×32 mask → {tuple(out.shape)}")
    ttt = bundle.ttt
    if ttt is not None:
        ok(f"refine.ttt reads (features output {m.features!r}; scikit-learn needed at run time: "
           f"{'installed' if _has_sklearn() else 'NOT installed, pip install robis-edge[ttt]'})")
    from ..backends import tensorrt_engine_for

    for model in sorted({e.model for e in bundle.engines}):
        entry, why = tensorrt_engine_for(bundle, model)
        ok(f"engine {model}: " + (f"runs here ({why})" if entry is not None else f"not usable here: {why}"))
    if not bundle.engines:
        ok("engines: none listed")
    return lines


def _has_sklearn() -> bool:
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None
