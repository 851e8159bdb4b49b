"""``robis-edge selftest``: is this device ready to run bundles, and on what? One command.

1. What is installed: Python, robis-edge, numpy, ONNX Runtime and its providers, pycuda, the CUDA
   driver and GPU, TensorRT (each with its version, or why it is missing).
2. The shipped self-test model (selftest_model.py) on ONNX Runtime CPU (the reference), on the
   CUDA and TensorRT execution providers when present, and built into TensorRT engines (fp32 and
   fp16 with the fp32 pins of plan.py) run through the SDK's TensorRT backend (TrtRunner), each
   compared with the reference.
3. OpenVINO: its version, devices and the CPU's instruction sets, and the self-test model compiled
   in f32 (accuracy mode) and, where the CPU runs it natively, bf16, each compared with the reference.
4. Given a bundle: whether its engines fit this GPU and TensorRT (or this CPU and OpenVINO), and
   one frame timed per backend.

Statuses: PASS, FAIL, SKIP (not installed, or not asked for), INFO. ``--require`` turns a SKIP of
the named component into a FAIL. The exit status is 1 when any row FAILs, else 0.
"""

from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..timing import ms_since
from .selftest_model import MAP, SHIPPED, SIZE

REQUIRABLE = ("gpu", "pycuda", "tensorrt", "ort-cuda", "ort-tensorrt", "openvino")
ORT_TOLERANCE = 1e-4  # fp32 execution providers vs the CPU


@dataclass
class Row:
    check: str
    status: str  # PASS | FAIL | SKIP | INFO
    detail: str = ""


def environment(require: Sequence[str]) -> tuple[list[Row], dict]:
    """Rows for what is installed, and the facts later checks need."""
    import onnxruntime as ort

    from .. import __version__
    from ..backends.gpu import cuda_device, pycuda_probe, tensorrt_probe

    rows = [Row("python", "INFO", f"{platform.python_version()} on {platform.machine()} "
                f"({platform.system()} {platform.release()})"),
            Row("robis-edge", "INFO", __version__), Row("numpy", "INFO", np.__version__)]
    providers = ort.get_available_providers()
    rows.append(Row("onnxruntime", "INFO", f"{ort.__version__}; providers: {', '.join(providers)}"))

    def missing(name: str, why: str) -> Row:
        return Row(name, "FAIL" if name in require else "SKIP", why)

    pc = pycuda_probe()
    rows.append(Row("pycuda", "INFO", pc.version) if pc.present else missing("pycuda", pc.detail))
    gpu, why = cuda_device()
    rows.append(Row("gpu", "INFO", f"{gpu.name}, compute capability {gpu.compute_capability}, "
                    f"{gpu.total_memory_mb} MiB, CUDA driver {gpu.driver_version}") if gpu
                else missing("gpu", why))
    trt = tensorrt_probe()
    rows.append(Row("tensorrt", "INFO", trt.version) if trt.present else missing("tensorrt", trt.detail))
    return rows, {"providers": providers, "gpu": gpu, "trt": trt, "pycuda": pc}


def _selftest_input(n: int = 4) -> np.ndarray:
    return np.random.default_rng(7).normal(0.0, 1.0, (n, 3, SIZE, SIZE)).astype(np.float32)


def ort_checks(facts: dict, require: Sequence[str]) -> tuple[list[Row], np.ndarray | None]:
    """The self-test model on ONNX Runtime: CPU (the reference), then the GPU providers."""
    from ..backends.onnxruntime import open_session, provider_library_problem

    x = _selftest_input()
    rows = []
    try:
        t0 = time.perf_counter()
        ref = open_session(SHIPPED, ["CPUExecutionProvider"]).run(["anomaly_map"], {"image": x})[0]
        ok = ref.shape == (len(x), 1, MAP, MAP) and bool(np.isfinite(ref).all())
        rows.append(Row("ort-cpu: self-test model", "PASS" if ok else "FAIL",
                        f"{ref.shape}, {ms_since(t0):.1f} ms" if ok else f"bad output {ref.shape}"))
        if not ok:
            return rows, None
    except Exception as exc:
        return [Row("ort-cpu: self-test model", "FAIL", str(exc))], None
    gpu_eps = (("ort-cuda", "CUDAExecutionProvider"), ("ort-tensorrt", "TensorrtExecutionProvider"))
    for name, provider in gpu_eps:
        if provider not in facts["providers"]:
            rows.append(Row(f"{name}: self-test model vs CPU", "FAIL" if name in require else "SKIP",
                            f"onnxruntime has no {provider} (the 'gpu' extra installs onnxruntime-gpu)"))
            continue
        problem = provider_library_problem(provider)
        if problem:  # onnxruntime-gpu lists the TensorRT EP also where TensorRT is not installed
            rows.append(Row(f"{name}: self-test model vs CPU", "FAIL" if name in require else "SKIP",
                            f"onnxruntime lists {provider} but cannot load it: {problem}"))
            continue
        try:
            chain = [provider, "CPUExecutionProvider"] if name == "ort-cuda" else \
                [provider, "CUDAExecutionProvider", "CPUExecutionProvider"]
            out = open_session(SHIPPED, chain).run(["anomaly_map"], {"image": x})[0]
            d = float(np.abs(out - ref).max())
            rows.append(Row(f"{name}: self-test model vs CPU", "PASS" if d <= ORT_TOLERANCE else "FAIL",
                            f"max |Δ| {d:.2e} (limit {ORT_TOLERANCE:g})"))
        except Exception as exc:
            rows.append(Row(f"{name}: self-test model vs CPU", "FAIL", str(exc)))
    return rows, ref


def tensorrt_checks(facts: dict, ref: np.ndarray | None, require: Sequence[str], quick: bool) -> list[Row]:
    """Build the self-test model into engines and run them through the SDK's TensorRT backend."""
    from .gate import compare_tensors

    name = "tensorrt: build + run the self-test model"
    if quick:
        return [Row(name, "SKIP", "--quick: no engine built")]
    if not (facts["trt"].present and facts["pycuda"].present and facts["gpu"]):
        lacking = [k for k, ok in (("tensorrt", facts["trt"].present), ("pycuda", facts["pycuda"].present),
                                   ("gpu", facts["gpu"] is not None)) if not ok]
        req = any(k in require for k in lacking) or "tensorrt" in require
        return [Row(name, "FAIL" if req else "SKIP", f"needs {', '.join(lacking)}")]
    if ref is None:
        return [Row(name, "FAIL", "no ONNX Runtime reference (see ort-cpu above)")]
    from ..backends.tensorrt import TrtRunner
    from .tensorrt.builder import build_engine

    rows = []
    x = _selftest_input()
    shapes = {"image": ((1, 3, SIZE, SIZE), (len(x), 3, SIZE, SIZE), (len(x), 3, SIZE, SIZE))}
    with tempfile.TemporaryDirectory(prefix="robis-selftest-") as tmp:
        for step in ("fp32", "fp16"):
            label = f"tensorrt {step}: self-test engine vs ort-cpu"
            try:
                t0 = time.perf_counter()
                blob, pinned = build_engine(SHIPPED, shapes, step, profiles=2, log=lambda m: None)
                build_ms = ms_since(t0)
                path = Path(tmp) / f"selftest.{step}.engine"
                path.write_bytes(blob)
                runner = TrtRunner(path)
                t1 = time.perf_counter()
                out = [runner.run({"image": x[k:k + 1]})["anomaly_map"] for k in range(len(x))]
                out.append(runner.run({"image": x})["anomaly_map"])
                run_ms = ms_since(t1)
                rep = compare_tensors(step, [ref[k:k + 1] for k in range(len(x))] + [ref], out)
                detail = (f"cosine {rep.cosine:.6f}, max |Δ|/range {rep.max_abs:.1e}; {pinned} layers "
                          f"pinned to fp32; build {build_ms / 1000:.1f} s, {len(out)} runs {run_ms:.1f} ms")
                rows.append(Row(label, "PASS" if rep.passed else "FAIL",
                                detail + ("" if rep.passed else f"; {'; '.join(rep.failures)}")))
            except Exception as exc:
                rows.append(Row(label, "FAIL", str(exc)))
    return rows


def openvino_checks(ref: np.ndarray | None, require: Sequence[str], quick: bool) -> list[Row]:
    """OpenVINO's version, devices and ISA, and the self-test model in f32 and bf16 vs ONNX Runtime."""
    from ..backends.openvino import OvBackend, bf16_native, openvino_host
    from .gate import compare_tensors

    host = openvino_host()
    if host.version is None:
        return [Row("openvino", "FAIL" if "openvino" in require else "SKIP", host.detail)]
    bf16 = "native" if bf16_native(host.isas) else "not native"
    rows = [Row("openvino", "INFO", f"{host.version}; devices: {', '.join(host.devices)}; CPU "
                f"{host.cpu_name} ({', '.join(host.isas) or 'no known ISA'}; bf16 {bf16})")]
    if quick:
        return rows
    if ref is None:
        return [*rows, Row("openvino: self-test model", "FAIL", "no ONNX Runtime reference (see ort-cpu)")]
    x = _selftest_input()
    for step in ("f32", "bf16"):
        label = f"openvino {step}: self-test model vs ort-cpu"
        if step == "bf16" and not bf16_native(host.isas):
            rows.append(Row(label, "SKIP", "no native bf16 on this CPU (AMX or AVX-512 bf16): OpenVINO would "
                            "run it as f32"))
            continue
        try:
            with tempfile.TemporaryDirectory(prefix="robis-selftest-ov-") as tmp:
                t0 = time.perf_counter()
                be = OvBackend(SHIPPED, input_size=SIZE, map_size=MAP, precision=step, cache_dir=tmp)
                compile_ms = ms_since(t0)
                t1 = time.perf_counter()
                out = be.run(x)[:, None]
                run_ms = ms_since(t1)
            rep = compare_tensors("fp32" if step == "f32" else "fp16", [ref], [out])
            detail = (f"cosine {rep.cosine:.6f}, max |Δ|/range {rep.max_abs:.1e}; compile "
                      f"{compile_ms:.0f} ms, run {run_ms:.1f} ms ({be.provider})")
            rows.append(Row(label, "PASS" if rep.passed else "FAIL",
                            detail + ("" if rep.passed else f"; {'; '.join(rep.failures)}")))
        except Exception as exc:
            rows.append(Row(label, "FAIL", str(exc)))
    return rows


def bundle_checks(bundle_path: str | Path, backends: Sequence[str] | None, facts: dict, quick: bool,
                  frames: int, frame_hw: tuple[int, int] | None) -> list[Row]:
    """Engines of the bundle vs this host, and one frame timed per backend."""
    from ..backends.openvino import openvino_host
    from ..bundle import Bundle
    from ..inspector import Inspector
    from .entries import engine_entries, engine_mismatches, openvino_mismatches, rebuild_command
    from .tensorrt.plan import DEFAULT_FRAME

    rows = []
    try:
        bundle = Bundle.load(bundle_path)
    except Exception as exc:
        return [Row(f"bundle {bundle_path}", "FAIL", str(exc))]
    rows.append(Row(f"bundle {bundle.name}", "PASS", f"{bundle.root}: files verified (sha256)"))
    gpu, trt = facts["gpu"], facts["trt"]
    for e in engine_entries(bundle, target="openvino"):
        why = openvino_mismatches(e, bundle, openvino_host())
        detail = (f"{'; '.join(why)} — rebuild: {rebuild_command(bundle, e.precision, 'openvino')}" if why
                  else f"{e.precision}, OpenVINO {e.openvino_version}, {e.device}, relies on {e.isa}")
        rows.append(Row(f"openvino engine {e.precision} ({e.file or 'compile hint'})",
                        "FAIL" if why else "PASS", detail))
    for e in engine_entries(bundle, target="tensorrt"):
        why = engine_mismatches(e, bundle, trt.version, gpu.name if gpu else None,
                                gpu.compute_capability if gpu else None)
        detail = (f"{'; '.join(why)} — rebuild: robis-edge build --bundle {bundle.root}" if why
                  else f"{e.precision}, TensorRT {e.tensorrt_version}, {e.gpu_name}")
        rows.append(Row(f"engine {e.file}", "FAIL" if why else "PASS", detail))
    if quick:
        return rows
    if backends is None:
        backends = ["ort-cpu"]
        if "CUDAExecutionProvider" in facts["providers"]:
            backends.append("ort-cuda")
        if any(r.check.startswith("engine ") and r.status == "PASS" for r in rows):
            backends.append("tensorrt")
        if any(r.check.startswith("openvino engine ") and r.status == "PASS" for r in rows):
            backends.append("openvino")
    hw = frame_hw or bundle.frame_hw or DEFAULT_FRAME
    frame = np.random.default_rng(3).integers(0, 256, hw, dtype=np.uint8)
    for b in backends:
        label = f"frame {hw[1]}x{hw[0]} on {b}"
        try:
            insp = Inspector(bundle, backend=b, scope="calibrated" if bundle.calibration else "rolling")
            insp.inspect(frame, "gray")  # warm-up (allocations, lazy initialisation)
            times = []
            for _ in range(max(1, frames)):
                t0 = time.perf_counter()
                insp.inspect(frame, "gray")
                times.append(ms_since(t0))
            d = insp.describe()
            rows.append(Row(label, "PASS", f"median {np.median(times):.1f} ms over {len(times)} frames "
                            f"({d['provider']}, {d['precision']})"))
        except Exception as exc:
            rows.append(Row(label, "FAIL", str(exc)))
    return rows


def run_selftest(bundle: str | Path | None = None, backends: Sequence[str] | None = None, *,
                 quick: bool = False, require: Sequence[str] = (), frames: int = 3,
                 frame_hw: tuple[int, int] | None = None) -> list[Row]:
    rows, facts = environment(require)
    ort_rows, ref = ort_checks(facts, require)
    rows += ort_rows
    rows += tensorrt_checks(facts, ref, require, quick)
    rows += openvino_checks(ref, require, quick)
    if bundle is not None:
        rows += bundle_checks(bundle, backends, facts, quick, frames, frame_hw)
    return rows


def format_table(rows: Sequence[Row]) -> str:
    w = max(len(r.check) for r in rows)
    lines = [f"{'check':<{w}}  status  detail", f"{'-' * w}  ------  ------"]
    lines += [f"{r.check:<{w}}  {r.status:<6}  {r.detail}" for r in rows]
    count = {s: sum(r.status == s for r in rows) for s in ("FAIL", "PASS", "SKIP")}
    lines.append(f"\nselftest: {'FAIL' if count['FAIL'] else 'PASS'} ({count['FAIL']} failed, "
                 f"{count['PASS']} passed, {count['SKIP']} skipped)")
    return "\n".join(lines)


def rows_json(rows: Sequence[Row]) -> list[dict]:
    return [asdict(r) for r in rows]
