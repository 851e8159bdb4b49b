"""``robis-edge build``: TensorRT engines for a bundle, built on the device, gated on parity.

For each ONNX model of the bundle (plan.py): build at the requested precision, run the parity
gate (gate.py) against ONNX Runtime fp32 on the bundle's reference tiles, step down the ladder
until a build passes, then add the engine to ``bundle.json`` ``engines`` (with the ONNX sha256,
TensorRT version, GPU name and compute capability, and the gate's numbers). No torch.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sdk.bundle import Bundle
from sdk.engines import EngineEntry, onnx_file_of, upsert_engine

from ..errors import ExportError
from .gate import GateReport, compare, compare_tensors, next_step
from .plan import ModelPlan, model_plans

Log = Callable[[str], None]


@dataclass
class BuildOutcome:
    plan: ModelPlan
    entry: EngineEntry | None
    reports: list[GateReport] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def engine_file(model: str, gpu_name: str, trt_version: str, step: str) -> str:
    return f"engines/{model}.{_slug(gpu_name)}.trt{trt_version}.{step}.engine"


# -- reference outputs ------------------------------------------------------------------------
def pipeline_outputs(bundle: Bundle, backend, tiles: list[np.ndarray], color: str):
    """Maps (0..255), verdicts and masks of the reference tiles through the whole pipeline with
    ``backend`` (calibrated scope when the bundle is calibrated, else batch scope over the tiles)."""
    from sdk.inspector import Inspector

    insp = Inspector(bundle, backend=backend, scope="calibrated" if bundle.calibration else "rolling")
    colors = [color] * len(tiles)
    if bundle.calibration is not None:
        results = [insp.inspect(t, c) for t, c in zip(tiles, colors)]
    else:
        results = insp.inspect_batch(tiles, colors, scope="batch")
    return ([r.anomaly_map for r in results], [r.verdict for r in results], [r.mask for r in results])


def gate_anomaly_model(bundle: Bundle, engine_backend, reference, tiles, color, step: str) -> GateReport:
    maps, verdicts, masks = pipeline_outputs(bundle, engine_backend, tiles, color)
    return compare(step, reference[0], maps, reference[1], verdicts, reference[2], masks, scale=255.0)


def sam_reference_inputs(tiles: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """SAM encoder inputs of the reference tiles (SAM's own resize, normalisation and padding)."""
    from sdk.refine.ops import sam_input_size, sam_normalize_pad, sam_resize

    out = []
    for t in tiles:
        rgb = np.repeat(t[:, :, None], 3, axis=2) if t.ndim == 2 else t
        hw = sam_input_size(*rgb.shape[:2])
        out.append({"image": sam_normalize_pad(sam_resize(rgb, hw))})
    return out


def sam_decoder_inputs(embeddings: list[np.ndarray], n_boxes: int) -> list[dict[str, np.ndarray]]:
    """Decoder inputs: each reference embedding with ``n_boxes`` nested boxes around the centre."""
    c, feeds = 512.0, []
    half = np.linspace(64, 480, n_boxes, dtype=np.float32)
    boxes = np.stack([c - half, c - half * 0.8, c + half, c + half * 0.8], axis=1).astype(np.float32)
    for e in embeddings:
        feeds.append({"embeddings": e, "boxes": boxes})
    return feeds


# -- the build ----------------------------------------------------------------------------------
def build_bundle_engines(bundle_path: str | Path, precision: str = "fp16", *, workspace_mb: int = 0,
                         timing_cache: str | Path | None = None, frame_hw: tuple[int, int] | None = None,
                         contexts: int = 2, models: list[str] | None = None,
                         reference_images: str | Path | None = None, log: Log = print) -> list[BuildOutcome]:
    from sdk.backends import create_backend
    from sdk.backends.gpu import cuda_device
    from sdk.backends.onnxruntime import open_session
    from sdk.backends.tensorrt import TrtBackend, TrtSession
    from sdk.reference import load_reference_tiles, store_reference_from_folder

    from .engine_build import build_engine, import_tensorrt

    trt = import_tensorrt()
    gpu, why = cuda_device()
    if gpu is None:
        raise ExportError(f"robis-edge build needs a CUDA GPU: {why}")
    bundle = Bundle.load(bundle_path)
    plans = model_plans(bundle, precision, frame_hw=frame_hw, contexts=contexts, models=models)
    s = bundle.preprocess.size
    ort_ref = create_backend(str(bundle.model_path), input_size=s, map_size=bundle.map_size,
                             backend="ort-cpu")
    if reference_images:
        store_reference_from_folder(bundle, reference_images)
        bundle.save()
        log(f"new reference tiles from {reference_images} stored in the bundle")
    tiles, color = load_reference_tiles(bundle)
    log(f"TensorRT {trt.__version__} on {gpu.name} (compute capability {gpu.compute_capability}); "
        f"{len(tiles)} reference tiles; ONNX Runtime fp32 (CPU) is the reference")
    outcomes = []
    for plan in plans:
        onnx_path = bundle.resolve(plan.onnx_file)
        log(f"[{plan.model}] {plan.onnx_file}: profile {plan.shapes}, ladder {' → '.join(plan.ladder)}")
        if plan.model == "anomaly_model":
            reference = pipeline_outputs(bundle, ort_ref, tiles, color)
        elif plan.model == "sam_encoder":
            enc_in = sam_reference_inputs(tiles)
            sess = open_session(onnx_path, ["CPUExecutionProvider"])
            reference = [sess.run(None, f)[0] for f in enc_in]
        else:
            enc = open_session(bundle.resolve(onnx_file_of(bundle, "sam_encoder")), ["CPUExecutionProvider"])
            dec_in = sam_decoder_inputs([enc.run(None, f)[0] for f in sam_reference_inputs(tiles)],
                                        plan.shapes["boxes"][1][0])
            sess = open_session(onnx_path, ["CPUExecutionProvider"])
            reference = [sess.run(["masks"], f)[0] for f in dec_in]
        outcome = BuildOutcome(plan, None)
        step: str | None = plan.ladder[0]
        while step is not None:
            rel = engine_file(plan.model, gpu.name, trt.__version__, step)
            path = bundle.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")  # the accepted engine replaces an older one
            int8 = None
            if step == "int8":
                from sdk.preprocess import TilePreprocessor

                int8 = [TilePreprocessor(bundle.preprocess, tiles[0].shape[:2])(np.stack(tiles))]
            blob, pinned = build_engine(onnx_path, plan.shapes, step, profiles=plan.profiles,
                                        workspace_mb=workspace_mb, timing_cache=timing_cache,
                                        int8_batches=int8, log=log)
            tmp.write_bytes(blob)
            if plan.model == "anomaly_model":
                backend = TrtBackend(tmp, input_size=s, map_size=bundle.map_size, precision=step,
                                     reason="parity gate", device=gpu.name)
                report = gate_anomaly_model(bundle, backend, reference, tiles, color, step)
            elif plan.model == "sam_encoder":
                eng = TrtSession(tmp)
                report = compare_tensors(step, reference, [eng.run(["embeddings"], f)[0] for f in enc_in])
            else:
                eng = TrtSession(tmp)
                report = compare_tensors(step, reference, [eng.run(["masks"], f)[0] for f in dec_in],
                                         sign_iou=True)
            outcome.reports.append(report)
            log(f"      parity gate {report.line()}")
            nxt = next_step(plan.ladder, step, report)
            if report.passed:
                os.replace(tmp, path)
                parity = {"accepted": report.to_json(), "tried": [r.to_json() for r in outcome.reports]}
                entry = EngineEntry(plan.model, rel, plan.onnx_file, bundle.raw["files"][plan.onnx_file],
                                    step, trt.__version__, gpu.name, gpu.compute_capability, plan.profiles,
                                    plan.max_batch, pinned, parity,
                                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                bundle.add_file(rel)
                upsert_engine(bundle, entry)
                bundle.save()
                outcome.entry = entry
                log(f"      accepted: {rel} ({step})")
            else:
                tmp.unlink()
                log(f"      stepping down to {nxt}" if nxt else "      no precision passed")
            step = nxt
        if outcome.entry is None:
            raise ExportError(
                f"{plan.model}: no engine passed the parity gate, not even fp32 "
                f"({outcome.reports[-1].line()}). TensorRT {trt.__version__} appears to miscompile this "
                "model (docs/gpu.md lists known versions); keep running it with ONNX Runtime "
                "(--backend ort-cuda / ort-cpu) or use another TensorRT version")
        outcomes.append(outcome)
    return outcomes
