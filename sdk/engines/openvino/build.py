"""``robis-edge build --target openvino``: an OpenVINO engine for the bundle's anomaly model, made
on the device and gated on parity with ONNX Runtime fp32 (sdk/engines/gate.py, docs/openvino.md).

Ladder int8 → bf16 → f32 (from the requested step down). int8 is NNCF post-training quantisation on
real tiles (quantize.py), saved as an OpenVINO IR in the bundle; bf16 and f32 are compile hints on
the bundle's ONNX (no file), bf16 only where the CPU runs it natively (AMX, AVX-512 bf16). The
accepted step goes into ``bundle.json`` ``engines`` with the OpenVINO version, the CPU, the ISA it
relies on and the gate's numbers of every step tried. No torch.
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
from ...errors import BackendError, EngineError, InputError
from ..entries import EngineEntry, upsert_engine
from ..gate import (
    Candidate,
    GateReport,
    Tolerance,
    failed_report,
    gate_anomaly_model,
    pipeline_outputs,
    walk_ladder,
)

Log = Callable[[str], None]
LADDER = ("int8", "bf16", "f32")
DEFAULT_CALIBRATION_TILES = 300


@dataclass
class OvBuildOutcome:
    entry: EngineEntry
    reports: list[GateReport] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # step → why it was not tried


def ladder_for(precision: str, isas: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The steps to try for ``precision`` (auto = int8) on a CPU with ``isas``, and the ones skipped."""
    from ...backends.openvino import bf16_native

    if precision != "auto" and precision not in LADDER:
        raise InputError(f"--precision {precision!r} for --target openvino: choose auto, {', '.join(LADDER)}")
    steps = list(LADDER[LADDER.index("int8" if precision == "auto" else precision):])
    skipped = {}
    if "bf16" in steps and not bf16_native(isas):
        steps.remove("bf16")
        skipped["bf16"] = (f"this CPU has no native bf16 (it has {', '.join(isas) or 'no known ISA'}; bf16 "
                           "needs AMX or AVX-512 bf16): OpenVINO would run it as f32")
    return steps, skipped


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def engine_file(cpu: str, isa: str, version: str) -> str:
    return f"engines/anomaly_model.{_slug(cpu)}.{isa}.ov{version}.int8.xml"


def calibration_tiles(bundle: Bundle, reference: list[np.ndarray], images: str | Path | None,
                      limit: int) -> list[np.ndarray]:
    """Preprocessed tiles (each 1×3×S×S) for int8: the reference tiles, then every tile cut from
    ``images``, thinned evenly to ``limit``."""
    from ...geometry import TilingPlan
    from ...imageio import IMAGE_EXTS, find_files, read_image
    from ...preprocess import TilePreprocessor, prepare_frame
    from ..reference import cut_tiles

    pool = list(reference)
    if images:
        paths = find_files(images, IMAGE_EXTS)
        if not paths:
            raise InputError(f"--calibration-images: no images ({', '.join(IMAGE_EXTS)}) under {images}")
        window, overlap = bundle.tiling
        for p in paths:
            frame = prepare_frame(*read_image(p))
            if frame.ndim != reference[0].ndim:  # the gate's tiles decide gray or colour
                frame = frame[:, :, 0] if frame.ndim == 3 else np.repeat(frame[:, :, None], 3, axis=2)
            pool.extend(cut_tiles(frame, TilingPlan(frame.shape[0], frame.shape[1], window, overlap),
                                  bundle.preprocess.size))
    if len(pool) > limit:
        keep = np.unique(np.round(np.linspace(0, len(pool) - 1, limit)).astype(int))
        pool = [pool[i] for i in keep]
    out, pres = [], {}
    for t in pool:
        pre = pres.setdefault(t.shape[:2], TilePreprocessor(bundle.preprocess, t.shape[:2]))
        out.append(pre(t[None]))
    return out


def build_openvino_engine(bundle_path: str | Path, precision: str = "auto", *,
                          calibration_images: str | Path | None = None,
                          calibration_limit: int = DEFAULT_CALIBRATION_TILES,
                          reference_images: str | Path | None = None, threads: int | None = None,
                          device: str = "CPU", tolerances: dict[str, Tolerance] | None = None,
                          log: Log = print) -> OvBuildOutcome:
    """Build, gate and record the OpenVINO engine of the bundle's anomaly model on this host."""
    from ...backends import create_backend
    from ...backends.openvino import OvBackend, openvino_host
    from ..reference import load_reference_tiles, store_reference_from_folder

    host = openvino_host()
    if host.version is None:
        raise EngineError(f"robis-edge build --target openvino needs OpenVINO: {host.detail}")
    if device not in host.devices:
        raise EngineError(f"OpenVINO device {device} is not present here (available: "
                          f"{', '.join(host.devices)})")
    if device != "CPU" and precision in ("auto", "int8", "bf16"):
        raise InputError(f"--openvino-device {device}: only --precision f32 is built for it here (the int8 "
                         "and bf16 rungs are CPU paths)")
    steps, skipped = ladder_for(precision, host.isas)
    if calibration_images is not None and not Path(calibration_images).is_dir():
        raise InputError(f"--calibration-images {calibration_images}: not a directory")
    bundle = Bundle.load(bundle_path)
    s = bundle.preprocess.size
    if reference_images:
        store_reference_from_folder(bundle, reference_images)
        bundle.save()
        log(f"new reference tiles from {reference_images} stored in the bundle")
    tiles, color = load_reference_tiles(bundle)
    isa = host.isas[0] if host.isas else "sse4.2"
    log(f"OpenVINO {host.version} on {device} ({host.cpu_name}; {', '.join(host.isas)}); {len(tiles)} "
        f"reference tiles; ONNX Runtime fp32 (CPU) is the reference; ladder {' → '.join(steps)}")
    for step, why in skipped.items():
        log(f"      {step} skipped: {why}")
    ort_ref = create_backend(str(bundle.model_path), input_size=s, map_size=bundle.map_size,
                             backend="ort-cpu", threads=threads)
    reference = pipeline_outputs(bundle, ort_ref, tiles, color)
    onnx_file = bundle.model.file

    def attempt(step: str) -> Candidate:
        rel, kept, made = "", 0, []
        try:
            path: Path = bundle.model_path
            if step == "int8":
                rel = engine_file(host.cpu_name, isa, host.version)
                path = (bundle.root / rel).with_name(Path(rel).stem + ".tmp.xml")
                path.parent.mkdir(parents=True, exist_ok=True)
                made = [path, path.with_suffix(".bin")]
                calib = calibration_tiles(bundle, tiles, calibration_images, calibration_limit)
                if not calibration_images:
                    log(f"      int8 calibrates on the {len(calib)} reference tiles only; pass "
                        "--calibration-images DIR for a few hundred")
                from .quantize import quantize_int8

                kept = quantize_int8(bundle.model_path, calib, path, log=log)
            t0 = time.perf_counter()
            backend = OvBackend(path, input_size=s, map_size=bundle.map_size, precision=step,
                                reason="parity gate", device=device, threads=threads)
            log(f"      compiled {step} in {time.perf_counter() - t0:.0f} s ({backend.provider})")
            report = gate_anomaly_model(bundle, backend, reference, tiles, color, step, tolerances)
        except (BackendError, EngineError) as exc:
            report = failed_report(step, len(tiles), str(exc))

        def discard() -> None:
            for p in made:
                p.unlink(missing_ok=True)

        def accept(reports: list[GateReport]) -> EngineEntry:
            weights = ""
            if step == "int8":
                final = bundle.root / rel
                os.replace(made[0], final)
                os.replace(made[1], final.with_suffix(".bin"))
                weights = str(Path(rel).with_suffix(".bin"))
                bundle.add_file(rel)
                bundle.add_file(weights)
            parity = {"accepted": reports[-1].to_json(), "tried": [r.to_json() for r in reports],
                      "skipped": dict(skipped)}
            entry = EngineEntry(
                "anomaly_model", rel, onnx_file, bundle.files[onnx_file], step, fp32_layers=kept,
                parity=parity, built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), target="openvino",
                openvino_version=host.version, cpu_name=host.cpu_name, isa=isa, device=device,
                weights_file=weights)
            upsert_engine(bundle, entry)
            bundle.save()
            log(f"      accepted: OpenVINO {step}" + (f" ({rel})" if rel else " (compile hint on the ONNX)"))
            return entry

        return Candidate(report, accept, discard)

    result = walk_ladder(steps, attempt, log)
    if result.accepted is None:
        raise EngineError(f"anomaly_model: no OpenVINO precision passed the parity gate, not even f32 "
                          f"({result.reports[-1].line()}). OpenVINO {host.version} appears to miscompile "
                          "this model (docs/openvino.md); keep ONNX Runtime (--backend ort-cpu) or another "
                          "OpenVINO version")
    return OvBuildOutcome(result.accepted, result.reports, skipped)
