"""The RoBiS tile model (INP-Former, ViT-B/518 by default) in PyTorch and ONNX Runtime: tiles/s,
frame latency, parity against ONNX Runtime CPU fp32, FLOPs and the fraction of the GPU's peak
(issue 16; docs/gpu-bench.md).

The model is the project's own torch module (export/inpformer/model.py) with seeded random weights
in the upstream key layout, and the ONNX file is what ``export inpformer`` makes from it (the same
checkpoint through ``export_inpformer_bundle``, which also leaves a bundle for ``robis-edge bench``
and ``serve``). The input tiles are the 9 tiles of one synthetic 2448×2048 frame, cut and
preprocessed by the SDK (repeated for batches above 9).

Rows (``--skip`` takes their names): torch eager fp32 / TF32 / bf16 / fp16 autocast,
``torch.compile`` (bf16 autocast) and ``torch.compile(mode="reduce-overhead")`` (CUDA graphs), ONNX
Runtime CUDA EP fp32 and fp16 (a float16 copy, export/onnx_fp16.py, with LayerNorm, softmax,
the normalisations and the head in fp32), and on the CPU ONNX Runtime fp32 (the reference),
ONNX Runtime on the fp16 copy and torch eager fp32. Rows that need CUDA are SKIP with the reason on a
host without it, so the script runs end to end on any machine.

Per row and batch: ``tiles_per_s`` (inputs already on the device, back-to-back runs, one
synchronisation at the end), ``batch_ms`` p50/p99 (each run synchronised); for batch 9 also
``frame_ms`` p50/p99: one frame's 9 preprocessed tiles from host memory to the maps in host memory
(copies included, what the SDK's backend call does). Parity: the row's maps for the 9 tiles
against ONNX Runtime CPU fp32, max |Δ| (raw map), max |Δ| over the reference's range, smallest
per-tile cosine.

FLOPs per tile are counted from the ONNX graph (batch fixed to 1, ONNX shape inference with data
propagation): 2·M·N·K for every MatMul/Gemm, 2·(output elements)·(C_in/groups)·kh·kw for every
Conv; element-wise, normalisation, softmax and resize work is not counted (a few per cent). torch's
FlopCounterMode on the same module is reported beside it as a check.

    python benchmarks/gpu_bench.py --out OUT --work /tmp/robis-gpu        # ViT-B/518, all rows
    python benchmarks/gpu_bench.py --out OUT --arch tiny --seconds-per-row 0.3   # CPU dry run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PEAK_BF16_TFLOPS = {"H200": 790.0, "H100": 790.0}  # dense bf16; what the issue measures against
DEFAULT_PEAK = 790.0
FRAME_HW = (2048, 2448)
TORCH_ROWS = ("torch-fp32", "torch-tf32", "torch-bf16", "torch-fp16", "torch-compile-bf16",
              "torch-cudagraphs-bf16")
ORT_CUDA_ROWS = ("ort-cuda-fp32", "ort-cuda-tf32", "ort-cuda-fp16")
# CUDA EP options per row: strict fp32 matrix products, ONNX Runtime's default (TF32 allowed), fp16 copy.
ORT_CUDA_OPTIONS = {"ort-cuda-fp32": {"use_tf32": "0"}, "ort-cuda-tf32": {"use_tf32": "1"},
                    "ort-cuda-fp16": {}}
CPU_ROWS = ("ort-cpu-fp32", "ort-cpu-fp16", "torch-cpu-fp32")
ALL_ROWS = TORCH_ROWS + ORT_CUDA_ROWS + CPU_ROWS


def arch_of(name: str):
    from export.inpformer.arch import InpFormerArch, preset

    if name == "tiny":  # ViT-B's structure (10 used blocks, 8 decoder blocks) at width 64, S 98
        return preset("dinov2reg_vit_base_14", embed_dim=64, num_heads=4, img_size=98, map_size=64)
    if name.endswith(".json"):
        return InpFormerArch.from_json(name)
    return preset(name)


def frame_tiles(arch, seed: int = 0) -> np.ndarray:
    """The 9 preprocessed tiles (9, 3, S, S) of one synthetic 2448×2048 gray frame, as the SDK cuts them."""
    from sdk.bundle import PreprocessSpec
    from sdk.geometry import TilingPlan
    from sdk.preprocess import tile_preprocessor
    from sdk.tools.synthetic import make_frames

    frame = make_frames(1, *FRAME_HW, defect_rate=1.0, seed=seed)[0].image
    plan = TilingPlan(FRAME_HW[0], FRAME_HW[1], 1024, 0.1)
    return tile_preprocessor(PreprocessSpec(size=arch.img_size), plan.tile_hw)(plan.extract(frame))


def batch_of(tiles: np.ndarray, n: int) -> np.ndarray:
    reps = -(-n // len(tiles))
    return np.ascontiguousarray(np.concatenate([tiles] * reps)[:n])


# ---- FLOPs -----------------------------------------------------------------------------------
def onnx_flops(onnx_path: Path, size: int) -> dict:
    """Matrix-product FLOPs of one tile, from the ONNX graph's shapes: ONNX shape inference at batch 1
    where it resolves them, else the shapes of one ONNX Runtime CPU run at batch 1 (the inputs and
    outputs of the MatMul/Gemm/Conv nodes made graph outputs)."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.load(str(onnx_path))
    for i in m.graph.input:
        d = i.type.tensor_type.shape.dim[0]
        d.ClearField("dim_param")
        d.dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
    shapes: dict[str, list] = {}
    for vi in [*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info]:
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        if dims and None not in dims:
            shapes[vi.name] = dims
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    nodes = [n for n in m.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    missing = sorted({x for n in nodes for x in (n.input[0], n.output[0]) if x not in shapes})
    how = "onnx.shape_inference (batch 1)"
    if missing:
        import onnxruntime as ort

        known = {o.name for o in m.graph.output}
        for name in missing:
            if name not in known:
                m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 3
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        x = np.zeros((1, 3, size, size), np.float32)
        for name, v in zip(missing, sess.run(missing, {m.graph.input[0].name: x})):
            shapes[name] = list(v.shape)
        how = (f"onnx.shape_inference (batch 1), and one ONNX Runtime CPU run at batch 1 for the "
               f"{len(missing)} tensors it left open")
    total, by_op = 0, {}
    for n in nodes:
        a, out = shapes[n.input[0]], shapes[n.output[0]]
        if n.op_type == "MatMul":
            f = 2 * int(np.prod(out)) * a[-1]
        elif n.op_type == "Gemm":
            trans_a = next((x.i for x in n.attribute if x.name == "transA"), 0)
            f = 2 * int(np.prod(out)) * (a[0] if trans_a else a[-1])
        else:
            f = 2 * int(np.prod(out)) * int(np.prod(shapes[n.input[1]][1:]))
        by_op[n.op_type] = by_op.get(n.op_type, 0) + f
        total += f
    return {"gflop_per_tile": round(total / 1e9, 3),
            "by_op_gflop": {k: round(v / 1e9, 3) for k, v in by_op.items()}, "nodes": len(nodes),
            "method": f"ONNX graph: 2*M*N*K per MatMul/Gemm, 2*out*(Cin/g)*kh*kw per Conv "
                      f"({len(nodes)} nodes; shapes: {how}); element-wise/norm/softmax/resize not counted"}


def torch_flops(model, arch, device: str) -> dict:
    import torch

    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError as e:
        return {"error": str(e)}
    x = torch.zeros(1, 3, arch.img_size, arch.img_size, device=device)
    fc = FlopCounterMode(display=False)
    with fc:  # not under no_grad: its module tracking needs autograd
        model(x)
    return {"gflop_per_tile": round(fc.get_total_flops() / 1e9, 3), "method": "torch.utils.flop_counter"}


# ---- timing ----------------------------------------------------------------------------------
def _pct(v: list[float]) -> dict:
    a = np.asarray(v, np.float64)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "n": len(v)}


def time_runs(call, sync, seconds: float, warmup: int = 2, min_runs: int = 3, max_runs: int = 2000) -> dict:
    """``call()`` repeatedly: synchronised latencies (ms), then a back-to-back run of the same count."""
    for _ in range(warmup):
        call()
    sync()
    lat: list[float] = []
    t_end = time.perf_counter() + seconds
    while len(lat) < min_runs or (time.perf_counter() < t_end and len(lat) < max_runs):
        t0 = time.perf_counter()
        call()
        sync()
        lat.append((time.perf_counter() - t0) * 1000.0)
    n = max(min_runs, min(len(lat), 200))
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    sync()
    pipelined = (time.perf_counter() - t0) * 1000.0 / n
    return {"latency_ms": _pct(lat), "pipelined_ms": round(pipelined, 3)}


def parity(got: np.ndarray, ref: np.ndarray) -> dict:
    g = np.asarray(got, np.float64).reshape(len(ref), -1)
    r = np.asarray(ref, np.float64).reshape(len(ref), -1)
    cos = (g * r).sum(1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(r, axis=1) + 1e-30)
    d = float(np.abs(g - r).max())
    rng = float(r.max() - r.min())
    return {"max_abs_diff": d, "max_diff_over_range": d / rng if rng > 0 else None,
            "min_cosine": float(cos.min()), "finite": bool(np.isfinite(g).all())}


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.t_start = time.perf_counter()
        self.rows: list[dict] = []
        Path(args.work).mkdir(parents=True, exist_ok=True)
        self.log_path = Path(args.work) / "gpu_bench.log"

    def log(self, msg: str) -> None:
        line = f"[{time.perf_counter() - self.t_start:7.1f}s] {msg}"
        print(line, flush=True)
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def over_budget(self) -> bool:
        return self.args.budget_s > 0 and time.perf_counter() - self.t_start > self.args.budget_s

    def add(self, row: dict) -> None:
        self.rows.append(row)
        status = row["status"]
        if status == "ok":
            tps = ", ".join(f"b{b['batch']} {b['tiles_per_s']:.1f}/s" for b in row["batches"])
            par = row.get("parity") or {}
            self.log(f"{row['row']}: {tps}; parity max|d| {par.get('max_abs_diff', float('nan')):.3g}, "
                     f"min cos {par.get('min_cosine', float('nan')):.6f}")
        else:
            self.log(f"{row['row']}: {status.upper()} {row.get('reason', '')}")
        self.write()  # partial results survive a kill

    def write(self) -> None:
        res = self.result
        (self.out / "results.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
        if self.rows:
            (self.out / "results.md").write_text(markdown(res) + "\n")

    @property
    def result(self) -> dict:
        return {"environment": getattr(self, "env", {}), "model": getattr(self, "model_info", {}),
                "flops": getattr(self, "flops", {}), "rows": self.rows,
                "elapsed_s": round(time.perf_counter() - self.t_start, 1),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def environment() -> dict:
    import onnxruntime as ort

    env = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "numpy": np.__version__, "onnxruntime": ort.__version__, "onnxruntime_file": ort.__file__,
           "onnxruntime_providers": ort.get_available_providers()}
    try:
        import onnx

        env["onnx"] = onnx.__version__
    except ImportError:
        pass
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            env["gpu"] = p.name
            env["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
            env["compute_capability"] = f"{p.major}.{p.minor}"
            env["sm_count"] = p.multi_processor_count
            env["cudnn"] = torch.backends.cudnn.version()
    except ImportError as e:
        env["torch"] = f"unavailable: {e}"
    return env


def peak_tflops(env: dict) -> float:
    gpu = env.get("gpu") or ""
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu), DEFAULT_PEAK)


# ---- rows ------------------------------------------------------------------------------------
def finish_row(bench: Bench, name: str, batches: list[dict], out9, ref, extra: dict | None = None) -> None:
    gflop = (bench.flops.get("onnx") or {}).get("gflop_per_tile") or 0.0
    peak = peak_tflops(bench.env)
    for b in batches:
        b["tflops"] = round(b["tiles_per_s"] * gflop / 1e3, 2)
        b["peak_fraction"] = round(b["tflops"] / peak, 4)
    row = {"row": name, "status": "ok", "batches": batches, "peak_tflops": peak,
           "parity": parity(out9, ref) if out9 is not None and ref is not None else None}
    row.update(extra or {})
    bench.add(row)


def run_torch_row(bench: Bench, name: str, model, tiles9: np.ndarray, ref, device: str) -> None:
    import torch

    args = bench.args
    mode = name.replace("torch-cpu-", "torch-").split("-", 1)[1]  # fp32, tf32, bf16, fp16, compile-bf16, …
    torch.backends.cuda.matmul.allow_tf32 = mode != "fp32"
    torch.backends.cudnn.allow_tf32 = mode != "fp32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "compile-bf16": torch.bfloat16,
             "cudagraphs-bf16": torch.bfloat16}.get(mode)

    def forward(x):
        if dtype is None:
            return model(x)
        with torch.autocast(device_type=device, dtype=dtype):
            return model(x)

    fn = forward
    extra: dict = {"device": device, "autocast": str(dtype) if dtype else None,
                   "tf32": mode != "fp32" and device == "cuda"}
    if mode.startswith("compile") or mode.startswith("cudagraphs"):
        cmode = "reduce-overhead" if mode.startswith("cudagraphs") else "default"
        fn = torch.compile(forward, mode=cmode, dynamic=False)
        extra["compile_mode"] = cmode
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    batches = []
    out9 = None
    wanted = (args.cudagraph_batches if mode.startswith("cudagraphs") else
              args.compile_batches if mode.startswith("compile") else args.batches)
    with torch.inference_mode():
        for n in wanted:
            if bench.over_budget():
                extra.setdefault("skipped_batches", []).append({"batch": n, "reason": "time budget"})
                continue
            x = torch.from_numpy(batch_of(tiles9, n)).to(device)
            t0 = time.perf_counter()
            y = fn(x)
            sync()
            first_ms = (time.perf_counter() - t0) * 1000.0
            if n == 9:
                out9 = y.float().cpu().numpy()
            if mode.startswith("cudagraphs"):  # outputs are overwritten by the next replay
                def call(x=x):
                    torch.compiler.cudagraph_mark_step_begin()
                    fn(x)
            else:
                def call(x=x):
                    fn(x)
            t = time_runs(call, sync, args.seconds_per_row)
            b = {"batch": n, "first_call_ms": round(first_ms, 1), "batch_ms": t["latency_ms"],
                 "pipelined_batch_ms": t["pipelined_ms"],
                 "tiles_per_s": round(n * 1000.0 / t["pipelined_ms"], 2)}
            if n == 9:
                host = batch_of(tiles9, 9)

                def frame(host=host):
                    if mode.startswith("cudagraphs"):
                        torch.compiler.cudagraph_mark_step_begin()
                    return fn(torch.from_numpy(host).to(device)).float().cpu().numpy()

                b["frame_ms"] = time_runs(frame, sync, args.seconds_per_row)["latency_ms"]
            batches.append(b)
            del x, y
    if out9 is None and ref is not None and not bench.over_budget():
        with torch.inference_mode():
            if mode.startswith("cudagraphs"):
                torch.compiler.cudagraph_mark_step_begin()
            out9 = fn(torch.from_numpy(batch_of(tiles9, 9)).to(device)).float().cpu().numpy()
    if device == "cuda":
        extra["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    finish_row(bench, name, batches, out9, ref, extra)


def ort_session(path: Path, cuda: bool, options: dict | None = None):
    """An ONNX Runtime session (all graph optimisations) on the CUDA EP with ``options``, or the CPU;
    refused when ONNX Runtime started it on another provider (as sdk.backends.onnxruntime does)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    want = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
    providers = [(want, dict(options or {})), "CPUExecutionProvider"] if cuda else [want]
    sess = ort.InferenceSession(str(path), so, providers=providers)
    if sess.get_providers()[0] != want:
        raise RuntimeError(f"onnxruntime started {sess.get_providers()[0]}, not {want}")
    return sess


def run_ort_row(bench: Bench, name: str, onnx_path: Path, tiles9: np.ndarray, ref, cuda: bool,
                batches_wanted: list[int]) -> np.ndarray:
    import onnxruntime as ort

    args = bench.args
    t0 = time.perf_counter()
    options = ORT_CUDA_OPTIONS.get(name) if cuda else None
    rejected = None
    try:
        sess = ort_session(onnx_path, cuda, options)
    except Exception as e:  # an option this ONNX Runtime does not know: its defaults, and say so
        if not options:
            raise
        rejected = f"{type(e).__name__}: {e}"
        sess = ort_session(onnx_path, cuda, None)
    extra = {"provider": sess.get_providers()[0], "session_ms": round((time.perf_counter() - t0) * 1000.0, 1),
             "model_file": onnx_path.name, "options_rejected": rejected}
    if cuda:
        extra["requested_options"] = options
        extra["provider_options"] = sess.get_provider_options().get("CUDAExecutionProvider")
    host9 = batch_of(tiles9, 9)
    out9 = sess.run(["anomaly_map"], {"image": host9})[0]
    batches = []
    for n in batches_wanted:
        if bench.over_budget():
            extra.setdefault("skipped_batches", []).append({"batch": n, "reason": "time budget"})
            continue
        x = batch_of(tiles9, n)
        if cuda:
            io = sess.io_binding()
            io.bind_ortvalue_input("image", ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
            io.bind_output("anomaly_map", "cuda")

            def call(io=io):
                sess.run_with_iobinding(io)
        else:
            def call(x=x):
                sess.run(["anomaly_map"], {"image": x})
        t = time_runs(call, lambda: None, args.seconds_per_row, warmup=1 if not cuda else 2,
                      min_runs=1 if not cuda else 3)
        b = {"batch": n, "batch_ms": t["latency_ms"], "pipelined_batch_ms": t["pipelined_ms"],
             "tiles_per_s": round(n * 1000.0 / t["pipelined_ms"], 2),
             "inputs": "device (IOBinding)" if cuda else "host"}
        if n == 9 and cuda:
            b["frame_ms"] = time_runs(lambda: sess.run(["anomaly_map"], {"image": host9}), lambda: None,
                                      args.seconds_per_row)["latency_ms"]
        elif n == 9:
            b["frame_ms"] = b["batch_ms"]
        batches.append(b)
    finish_row(bench, name, batches, out9, ref, extra)
    return out9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="folder for results.json and results.md")
    ap.add_argument("--work", type=Path, help="folder for the log, checkpoint, fp16 copy, the bundle "
                    "(WORK/bundle) and the calibration frames (WORK/frames); default OUT/work")
    ap.add_argument("--arch", default="dinov2reg_vit_base_14",
                    help="preset name, 'tiny' (ViT-B's structure at width 64, S 98: dry runs) or a .json")
    ap.add_argument("--batches", type=int, nargs="+", default=[9, 18, 36])
    ap.add_argument("--compile-batches", type=int, nargs="+", default=[9, 36],
                    help="batches of the torch.compile row (each batch size is one compilation)")
    ap.add_argument("--cudagraph-batches", type=int, nargs="+", default=[9],
                    help="batches of the torch.compile CUDA-graph row")
    ap.add_argument("--seconds-per-row", type=float, default=2.0, help="timed seconds per row and batch")
    ap.add_argument("--skip", nargs="*", default=[], choices=ALL_ROWS, metavar="ROW",
                    help=f"rows to leave out: {', '.join(ALL_ROWS)}")
    ap.add_argument("--budget-s", type=float, default=0.0,
                    help="no new row or batch is started after this many seconds (0: no limit)")
    ap.add_argument("--frames", type=int, default=10, help="synthetic 2448x2048 PNG frames written to "
                    "WORK/frames for `robis-edge calibrate` (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-rows-on-cpu", action="store_true",
                    help="dry runs without CUDA: run the torch GPU rows' code on the CPU (tiny models only; "
                    "their numbers mean nothing)")
    args = ap.parse_args(argv)
    args.work = args.work or args.out / "work"
    if 9 not in args.batches:
        args.batches = [9, *args.batches]
    bench = Bench(args)
    bench.env = environment()
    bench.log(f"environment: {json.dumps(bench.env)}")
    import torch

    from export.inpformer.bundle_export import export_inpformer_bundle
    from export.inpformer.model import INPFormer
    from export.onnx_fp16 import convert_fp16

    torch.manual_seed(args.seed)
    cuda = bool(bench.env.get("cuda_available"))
    ort_cuda = "CUDAExecutionProvider" in bench.env["onnxruntime_providers"]
    arch = arch_of(args.arch)
    work = args.work

    # Model, checkpoint, bundle (the ONNX file `export inpformer` makes), fp16 copy.
    t0 = time.perf_counter()
    from vitb_bundle import random_upstream_state_dict  # benchmarks/, beside this script

    sd = random_upstream_state_dict(arch, args.seed)
    ckpt = work / "random_upstream.pth"
    torch.save(sd, ckpt)
    bundle_dir = work / "bundle"
    _, report = export_inpformer_bundle(ckpt, arch, bundle_dir, name=f"robis-{args.arch}-random", window=1024,
                                        overlap=0.1, overwrite=True, log=bench.log)
    onnx_path = bundle_dir / "anomaly_model.onnx"
    bench.log(f"exported {onnx_path} in {time.perf_counter() - t0:.1f} s "
              f"(ORT vs torch {report['max_abs_diff']:.2e})")
    model = INPFormer.from_upstream(sd, arch).eval()
    del sd
    import onnx

    t0 = time.perf_counter()
    m16, fp16_report = convert_fp16(onnx.load(str(onnx_path)))
    onnx16 = work / "anomaly_model.fp16.onnx"
    onnx.save(m16, str(onnx16))
    del m16
    bench.log(f"fp16 copy {onnx16} in {time.perf_counter() - t0:.1f} s: {fp16_report}")
    bench.model_info = {"arch_name": args.arch, "arch": arch.to_dict(),
                        "parameters": sum(p.numel() for p in model.parameters()),
                        "onnx": str(onnx_path), "onnx_mib": round(onnx_path.stat().st_size / 2**20, 1),
                        "export_check_max_abs_diff": report["max_abs_diff"], "onnx_ops": report["ops"],
                        "fp16_copy": fp16_report, "fp16_mib": round(onnx16.stat().st_size / 2**20, 1),
                        "bundle": str(bundle_dir), "tiles": "9 tiles of one synthetic 2448x2048 frame "
                        "(SDK tiling 1024/0.1 + preprocess), repeated for larger batches"}
    bench.flops = {"onnx": onnx_flops(onnx_path, arch.img_size)}
    bench.log(f"FLOPs: {bench.flops['onnx']}")
    try:
        dev = "cuda" if cuda else "cpu"
        bench.flops["torch"] = torch_flops(model.to(dev), arch, dev)
    except Exception as e:  # a cross-check only
        bench.flops["torch"] = {"error": f"{type(e).__name__}: {e}"}
    bench.log(f"FLOPs (torch check): {bench.flops['torch']}")
    bench.write()

    if args.frames > 0:
        from sdk.imageio import write_png
        from sdk.tools.synthetic import make_frames

        fdir = work / "frames"
        fdir.mkdir(exist_ok=True)
        for f in make_frames(args.frames, *FRAME_HW, defect_rate=0.0, seed=args.seed + 100):
            write_png(fdir / f"{f.name}.png", f.image)
        bench.log(f"{args.frames} defect-free 2448x2048 frames for calibration in {fdir}")

    tiles9 = frame_tiles(arch, args.seed)
    skip = set(args.skip)

    def guarded(name: str, fn, *a) -> object:
        if name in skip:
            bench.add({"row": name, "status": "skip", "reason": "--skip"})
            return None
        if bench.over_budget():
            bench.add({"row": name, "status": "skip", "reason": f"time budget {args.budget_s:g} s spent"})
            return None
        t0 = time.perf_counter()
        try:
            r = fn(*a)
            bench.rows[-1]["row_s"] = round(time.perf_counter() - t0, 1)
            return r
        except Exception as e:
            bench.add({"row": name, "status": "fail", "reason": f"{type(e).__name__}: {e}",
                       "traceback": traceback.format_exc()[-3000:]})
            if cuda:
                torch.cuda.empty_cache()
            return None

    # The reference: ONNX Runtime CPU fp32 on the 9 tiles (timed at batch 9 only: it is slow on a CPU).
    ref = guarded("ort-cpu-fp32", run_ort_row, bench, "ort-cpu-fp32", onnx_path, tiles9, None, False, [9])
    if ref is not None:
        bench.rows[-1]["parity"] = {"reference": True}
    guarded("ort-cpu-fp16", run_ort_row, bench, "ort-cpu-fp16", onnx16, tiles9, ref, False, [9])
    tdev = "cuda" if cuda else "cpu" if args.torch_rows_on_cpu else None
    if tdev:
        model = model.to(tdev)
        for name in TORCH_ROWS[:4]:
            guarded(name, run_torch_row, bench, name, model, tiles9, ref, tdev)
    else:
        for name in TORCH_ROWS[:4]:
            bench.add({"row": name, "status": "skip", "reason": "no CUDA device visible to torch "
                       f"({torch.__version__}, torch.cuda.is_available() is False)"})
    for name, path in zip(ORT_CUDA_ROWS, (onnx_path, onnx_path, onnx16)):
        if ort_cuda:
            guarded(name, run_ort_row, bench, name, path, tiles9, ref, True, args.batches)
        else:
            bench.add({"row": name, "status": "skip",
                       "reason": "this onnxruntime has no CUDAExecutionProvider "
                       f"({bench.env['onnxruntime']} at {bench.env['onnxruntime_file']}, providers "
                       f"{bench.env['onnxruntime_providers']})"})
    for name in TORCH_ROWS[4:]:
        if tdev:
            guarded(name, run_torch_row, bench, name, model, tiles9, ref, tdev)
        else:
            bench.add({"row": name, "status": "skip", "reason": "no CUDA device visible to torch"})
    if cuda:
        model = model.to("cpu")
        torch.cuda.empty_cache()
    guarded("torch-cpu-fp32", run_torch_row, bench, "torch-cpu-fp32", model, tiles9, ref, "cpu")

    bench.write()
    (args.out / "results.md").write_text(markdown(bench.result) + "\n")
    bench.log(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    print(markdown(bench.result))
    return 0


def markdown(res: dict) -> str:
    env, fl = res["environment"], res["flops"].get("onnx", {})
    model = res["model"]
    lines = [f"GPU {env.get('gpu', 'none')}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), "
             f"onnxruntime {env.get('onnxruntime')} {env.get('onnxruntime_providers')}, "
             f"Python {env.get('python')}",
             f"model {model.get('arch_name')}: {model.get('parameters', 0) / 1e6:.1f} M parameters, "
             f"{fl.get('gflop_per_tile')} GFLOP/tile ({fl.get('method')}); torch FlopCounterMode "
             f"{res['flops'].get('torch', {}).get('gflop_per_tile')} GFLOP/tile", "",
             "| row | batch | tiles/s | batch ms p50 / p99 | frame (9 tiles, host→host) ms p50 / p99 "
             "| TFLOP/s | of bf16 peak | parity max \\|Δ\\| / range, min cos |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['row']} | — | {r['status'].upper()} | {r.get('reason', '')[:160]} | | | | |")
            continue
        p = r.get("parity") or {}
        if p.get("reference"):
            par = "reference"
        elif p:
            par = f"{p['max_abs_diff']:.2e} / {p['max_diff_over_range'] or 0:.2e}, {p['min_cosine']:.6f}"
        else:
            par = "—"
        for b in r["batches"]:
            fr = b.get("frame_ms")
            frs = f"{fr['p50']:.2f} / {fr['p99']:.2f}" if fr else ""
            bm = b["batch_ms"]
            lines.append(f"| {r['row']} | {b['batch']} | {b['tiles_per_s']:.1f} | {bm['p50']:.2f} / "
                         f"{bm['p99']:.2f} | {frs} | {b['tflops']:.1f} | {100 * b['peak_fraction']:.1f} % "
                         f"| {par} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
