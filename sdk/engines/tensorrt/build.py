"""``robis-edge build``: TensorRT engines for a bundle, built on the device, gated on parity.

For each ONNX model of the bundle (plan.py): build at the requested precision, run the parity
gate (sdk/engines/gate.py) against ONNX Runtime fp32 on the bundle's reference tiles, step down the ladder
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

from ...bundle import Bundle
from ...errors import EngineError
from ..entries import EngineEntry, onnx_file_of, upsert_engine
from ..gate import Candidate, GateReport, compare_tensors, gate_anomaly_model, pipeline_outputs, walk_ladder
from ..reference import sam_decoder_inputs, sam_reference_inputs
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


# -- the build ----------------------------------------------------------------------------------
def build_bundle_engines(bundle_path: str | Path, precision: str = "fp16", *, workspace_mb: int = 0,
                         timing_cache: str | Path | None = None, frame_hw: tuple[int, int] | None = None,
                         contexts: int = 2, models: list[str] | None = None,
                         reference_images: str | Path | None = None, log: Log = print) -> list[BuildOutcome]:
    from ...backends import create_backend
    from ...backends.gpu import cuda_device
    from ..reference import load_reference_tiles, store_reference_from_folder
    from .builder import build_engine, import_tensorrt

    trt = import_tensorrt()
    gpu, why = cuda_device()
    if gpu is None:
        raise EngineError(f"robis-edge build needs a CUDA GPU: {why}")
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
        gate = _plan_gate(bundle, plan, ort_ref, tiles, color, device=gpu.name)

        def attempt(step: str, plan=plan, onnx_path=onnx_path, gate=gate) -> Candidate:
            rel = engine_file(plan.model, gpu.name, trt.__version__, step)
            path = bundle.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")  # the accepted engine replaces an older one
            int8 = None
            if step == "int8":
                from ...preprocess import TilePreprocessor

                int8 = [TilePreprocessor(bundle.preprocess, tiles[0].shape[:2])(np.stack(tiles))]
            blob, pinned = build_engine(onnx_path, plan.shapes, step, profiles=plan.profiles,
                                        workspace_mb=workspace_mb, timing_cache=timing_cache,
                                        int8_batches=int8, log=log)
            tmp.write_bytes(blob)
            report = gate(tmp, step)

            def accept(reports: list[GateReport]) -> EngineEntry:
                os.replace(tmp, path)
                parity = {"accepted": reports[-1].to_json(), "tried": [r.to_json() for r in reports]}
                entry = EngineEntry(plan.model, rel, plan.onnx_file, bundle.files[plan.onnx_file],
                                    step, trt.__version__, gpu.name, gpu.compute_capability, plan.profiles,
                                    plan.max_batch, pinned, parity,
                                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                bundle.add_file(rel)
                upsert_engine(bundle, entry)
                bundle.save()
                log(f"      accepted: {rel} ({step})")
                return entry

            return Candidate(report, accept, tmp.unlink)

        result = walk_ladder(plan.ladder, attempt, log)
        outcome = BuildOutcome(plan, result.accepted, result.reports)
        if outcome.entry is None:
            raise EngineError(
                f"{plan.model}: no engine passed the parity gate, not even fp32 "
                f"({outcome.reports[-1].line()}). TensorRT {trt.__version__} appears to miscompile this "
                "model (docs/gpu.md lists known versions); keep running it with ONNX Runtime "
                "(--backend ort-cuda / ort-cpu) or use another TensorRT version")
        outcomes.append(outcome)
    return outcomes


def _plan_gate(bundle: Bundle, plan: ModelPlan, ort_ref, tiles: list[np.ndarray], color: str,
               device: str) -> Callable[[Path, str], GateReport]:
    """The reference outputs of ``plan``'s model with ONNX Runtime fp32 on the CPU, and the gate that
    compares a candidate engine file with them."""
    from ...backends.onnxruntime import open_session
    from ...backends.tensorrt import TrtBackend, TrtSession

    cpu = ["CPUExecutionProvider"]
    if plan.model == "anomaly_model":
        reference = pipeline_outputs(bundle, ort_ref, tiles, color)
        s = bundle.preprocess.size

        def gate_model(engine: Path, step: str) -> GateReport:
            backend = TrtBackend(engine, input_size=s, map_size=bundle.map_size, precision=step,
                                 reason="parity gate", device=device)
            return gate_anomaly_model(bundle, backend, reference, tiles, color, step)

        return gate_model
    if plan.model == "sam_encoder":
        feeds, output, sign_iou = sam_reference_inputs(tiles), "embeddings", False
    else:
        enc = open_session(bundle.resolve(onnx_file_of(bundle, "sam_encoder")), cpu)
        feeds = sam_decoder_inputs([enc.run(None, f)[0] for f in sam_reference_inputs(tiles)],
                                   plan.shapes["boxes"][1][0])
        output, sign_iou = "masks", True
    sess = open_session(bundle.resolve(plan.onnx_file), cpu)
    ref = [sess.run([output], f)[0] for f in feeds]

    def gate_tensors(engine: Path, step: str) -> GateReport:
        eng = TrtSession(engine)
        return compare_tensors(step, ref, [eng.run([output], f)[0] for f in feeds], sign_iou=sign_iou)

    return gate_tensors
