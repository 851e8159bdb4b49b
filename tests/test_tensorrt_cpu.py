"""The GPU path without a GPU (issue 6): build plans and fp32 pins from real exported graphs, engine
metadata and refusals, backend selection and its reasons, the parity gate's decisions on outputs
recorded with ONNX Runtime, reference tiles, and `robis-edge selftest` / `build` on a CPU host.
Nothing here stands in for TensorRT's numerics; tests/test_gpu.py runs those where TensorRT exists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.cli import main as robis_edge
from sdk import Bundle, Inspector
from sdk.backends import create_backend
from sdk.engines import EngineEntry, check_engine, engine_entries, gate, select_engine, upsert_engine
from sdk.engines.reference import choose_tiles, load_reference_tiles, write_reference_tiles
from sdk.engines.tensorrt import plan
from sdk.errors import BackendError, BundleError, InputError
from sdk.geometry import parse_frame_size

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo-bundle"  # classical model, window 512, S 256, calibrated
INP_DEMO = ROOT / "examples" / "demo" / "bundle"  # a real exported INP-Former graph


onnx_layers = plan.onnx_layers  # the plan's rules on the exported graph


@pytest.fixture
def demo_copy(tmp_path) -> Bundle:
    shutil.copytree(DEMO, tmp_path / "b")
    return Bundle.load(tmp_path / "b")


def _entry(bundle: Bundle, **kw) -> EngineEntry:
    f = bundle._raw["anomaly_model"]["file"]
    base = dict(model="anomaly_model", file="engines/a.engine", onnx_file=f,
                onnx_sha256=bundle._raw["files"][f], precision="fp16", tensorrt_version="10.7.0",
                gpu_name="NVIDIA RTX A2000", compute_capability="8.6", profiles=2, max_batch=12)
    base.update(kw)
    return EngineEntry(**base)


def _add_engine(bundle: Bundle, entry: EngineEntry) -> None:
    p = bundle.root / entry.file
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"serialised engine of another machine")
    bundle.add_file(entry.file)
    upsert_engine(bundle, entry)
    bundle.save()


# ---------------------------------------------------------------------------------- plans
def test_profiles_follow_the_bundle_tiling(demo_copy):
    # window 512, overlap 0.1 (step 460): 1432×972 → 3×2 tiles; 2448×2048 → 6×5 tiles
    p = plan.model_plans(demo_copy, "fp16", frame_hw=(972, 1432))
    assert [x.model for x in p] == ["anomaly_model"]
    assert p[0].shapes == {"image": ((1, 3, 256, 256), (6, 3, 256, 256), (6, 3, 256, 256))}
    assert p[0].ladder == ("fp16", "fp16-safe", "fp32") and p[0].profiles == 2
    assert demo_copy._raw["tiling"]["frame_hw"] == [972, 1432]  # the demo camera's frames: 6 tiles
    assert plan.model_plans(demo_copy, "fp32")[0].shapes["image"][2][0] == 6
    del demo_copy._raw["tiling"]["frame_hw"]  # unknown camera: 2448×2048
    assert plan.model_plans(demo_copy, "fp32")[0].shapes["image"][2][0] == 30
    assert plan.model_plans(demo_copy, "int8")[0].ladder == ("int8", "fp16", "fp16-safe", "fp32")
    demo_copy._raw["tiling"]["frame_hw"] = [512, 512]
    assert plan.model_plans(demo_copy)[0].max_batch == 1


def test_sam_plans_keep_the_decoder_fp32(demo_copy):
    demo_copy._raw["refine"] = {"sam": {"mode": "single", "top_n": 3, "encoder": {"file": "e.onnx"},
                                       "decoder": {"file": "d.onnx"}}}
    p = {x.model: x for x in plan.model_plans(demo_copy, "int8", contexts=3)}
    assert p["sam_encoder"].ladder == ("fp16", "fp16-safe", "fp32")
    assert p["sam_encoder"].shapes == {"image": ((1, 3, 1024, 1024),) * 3}
    assert p["sam_decoder"].ladder == ("fp32",) and p["sam_decoder"].profiles == 3
    assert p["sam_decoder"].shapes["boxes"] == ((1, 4), (3, 4), (16, 4))
    only = plan.model_plans(demo_copy, models=["sam_decoder"])
    assert [x.model for x in only] == ["sam_decoder"]
    demo_copy._raw["refine"]["sam"]["mode"] = "off"
    with pytest.raises(InputError, match="no sam_decoder"):
        plan.model_plans(demo_copy, models=["sam_decoder"])


@pytest.mark.parametrize("bad", [dict(precision="bf16"), dict(contexts=0), dict(max_boxes=0)])
def test_plan_rejects_bad_options(demo_copy, bad):
    kw = {"precision": "fp16", **bad}
    with pytest.raises(InputError):
        plan.model_plans(demo_copy, kw.pop("precision"), **kw)


def test_parse_frame_size():
    assert parse_frame_size("2448x2048") == (2048, 2448)
    assert parse_frame_size(" 1432 X 972 ") == (972, 1432)
    for bad in ("2448", "0x10", "axb", ""):
        with pytest.raises(InputError):
            parse_frame_size(bad)


def test_fp32_pins_on_the_exported_inpformer_graph():
    onnx = pytest.importorskip("onnx")
    b = Bundle.load(INP_DEMO)
    layers = onnx_layers(onnx.load(str(b.model_path), load_external_data=False))
    by_name = {x.name: x for x in layers}
    fp16 = set(plan.fp32_layers(layers, "fp16"))
    safe = set(plan.fp32_layers(layers, "fp16-safe"))
    assert plan.fp32_layers(layers, "fp32") == []
    # every LayerNorm, softmax, L2 normalisation (ReduceL2 + Div) and the whole head is fp32 ...
    for x in layers:
        op = plan.op_of(x.name)
        if op in ("LayerNormalization", "Softmax", "ReduceL2") or (x.name.startswith("/head/")
                                                                  and x.kind in plan.COMPUTE_KINDS):
            assert x.name in fp16, x.name
    assert "/decoder.0/attn/Div" in fp16 and "/head/Conv" in fp16 and "/head/ReduceSum" in fp16
    # ... while the matrix products of the MLPs and attention stay fp16 at the first step
    mlp = [n for n in by_name if "/mlp/" in n and by_name[n].kind == "MATRIX_MULTIPLY"]
    attn = [n for n in by_name if "/attn/" in n and by_name[n].kind == "MATRIX_MULTIPLY"]
    assert mlp and attn and not (set(mlp) | set(attn)) & fp16
    # the safer step also pins attention, still not the MLPs nor the patch embedding
    assert set(attn) <= safe and not set(mlp) & safe and "/patch_embed/proj/Conv" not in safe
    assert fp16 < safe
    # data movement is never pinned (it has no precision)
    assert not any(by_name[n].kind in ("SHUFFLE", "CONSTANT", "RESHAPE") for n in safe)


def test_op_of_reads_trt_and_onnx_names():
    assert plan.op_of("/blocks.0/attn/Div_1") == "Div"
    assert plan.op_of("/head/ReduceL2_3") == "ReduceL2"
    assert plan.op_of("/blocks.11/norm1/LayerNormalization") == "LayerNormalization"
    assert plan.is_fragile(plan.LayerInfo("/x/MatMul", "NORMALIZATION"))
    assert not plan.is_fragile(plan.LayerInfo("/blocks.0/mlp/fc1/MatMul", "MATRIX_MULTIPLY"))


# ---------------------------------------------------------------------------------- engines
def test_engine_metadata_round_trip_and_refusals(demo_copy):
    e = _entry(demo_copy)
    _add_engine(demo_copy, e)
    b = Bundle.load(demo_copy.root)
    assert engine_entries(b) == [e] and engine_entries(b, "sam_encoder") == []
    check_engine(e, b, "10.7.0", "NVIDIA RTX A2000", "8.6")  # matches: no error
    cases = {("10.3.0", "NVIDIA RTX A2000", "8.6"): "built by TensorRT 10.7.0, this host has 10.3.0",
             ("10.7.0", "Orin (nvgpu)", "8.7"): "built for NVIDIA RTX A2000 (compute capability 8.6)",
             (None, None, None): "TensorRT is not installed here"}
    for (v, g, cc), words in cases.items():
        with pytest.raises(BackendError) as ei:
            check_engine(e, b, v, g, cc)
        assert words in str(ei.value)
        assert f"robis-edge build --bundle {b.root} --precision fp16" in str(ei.value)
    # the ONNX file changed after the build
    b._raw["files"][e.onnx_file] = "0" * 64
    with pytest.raises(BackendError, match="changed since the build"):
        check_engine(e, b, "10.7.0", "NVIDIA RTX A2000", "8.6")


def test_select_engine_picks_this_devices_engine(demo_copy):
    a = _entry(demo_copy)
    o = _entry(demo_copy, file="engines/o.engine", gpu_name="Orin (nvgpu)", compute_capability="8.7",
               tensorrt_version="10.3.0", precision="fp16-safe")
    _add_engine(demo_copy, a)
    _add_engine(demo_copy, o)
    b = Bundle.load(demo_copy.root)
    assert select_engine(b, "anomaly_model", "10.3.0", "Orin (nvgpu)", "8.7")[0] == o
    assert select_engine(b, "anomaly_model", "10.7.0", "NVIDIA RTX A2000", "8.6")[0] == a
    none, why = select_engine(b, "anomaly_model", "10.8.0", "NVIDIA H100 80GB HBM3", "9.0")
    assert none is None and "engines/a.engine" in why and "engines/o.engine" in why and "rebuild" in why
    # rebuilding for the same device replaces its entry, keeps the other
    upsert_engine(b, _entry(b, precision="fp32"))
    assert sorted(x.precision for x in engine_entries(b)) == ["fp16-safe", "fp32"]


def test_malformed_engine_entries_are_bundle_errors(demo_copy):
    demo_copy._raw["engines"] = [{"model": "anomaly_model"}]
    with pytest.raises(BundleError, match="malformed 'engines' item"):
        engine_entries(demo_copy)
    demo_copy._raw["engines"] = [dict(_entry(demo_copy).to_json(), model="yolo")]
    with pytest.raises(BundleError, match="unknown model 'yolo'"):
        engine_entries(demo_copy)
    demo_copy._raw["engines"] = {"a": 1}
    with pytest.raises(BundleError, match="must be a list"):
        engine_entries(demo_copy)


# ---------------------------------------------------------------------------------- selection
def _backend(bundle: Bundle, name: str):
    return create_backend(str(bundle.model_path), input_size=bundle.preprocess.size,
                          map_size=bundle.map_size, backend=name, bundle=bundle)


def test_auto_without_engines_says_so(demo_copy):
    be = _backend(demo_copy, "auto")
    assert be.name == "onnxruntime" and be.provider == "CPUExecutionProvider"
    assert "no GPU execution provider" in be.reason and "has no TensorRT engine" in be.reason
    with pytest.raises(BackendError, match="needs a TensorRT engine.*robis-edge build"):
        _backend(demo_copy, "tensorrt")


def test_auto_with_an_engine_for_another_host_falls_to_ort_with_the_reason(demo_copy):
    _add_engine(demo_copy, _entry(demo_copy))
    b = Bundle.load(demo_copy.root)
    insp = Inspector(b, backend="auto")
    d = insp.describe()
    assert d["backend"] == "onnxruntime"
    assert "TensorRT engine not used" in d["reason"] and "TensorRT is not installed here" in d["reason"]
    assert "robis-edge build --bundle" in d["reason"]
    with pytest.raises(BackendError, match="TensorRT is not installed here"):
        Inspector(b, backend="tensorrt")


def test_a_matching_engine_is_chosen_before_onnxruntime(demo_copy, monkeypatch):
    """With TensorRT and the GPU reported as the engine's, auto goes to the TensorRT backend, which
    on this host then fails to import pycuda/tensorrt with the install hint (never silently ORT)."""
    from sdk.backends import gpu

    _add_engine(demo_copy, _entry(demo_copy))
    b = Bundle.load(demo_copy.root)
    monkeypatch.setattr(gpu, "tensorrt_probe", lambda: gpu.Probe("TensorRT", "10.7.0"))
    monkeypatch.setattr(gpu, "cuda_device", lambda index=0: (gpu.GpuInfo("NVIDIA RTX A2000", "8.6", 6000,
                                                                         "12.4"), ""))
    for name in ("auto", "tensorrt"):
        with pytest.raises(BackendError, match="needs tensorrt and pycuda"):
            _backend(b, name)
    assert _backend(b, "ort-cpu").name == "onnxruntime"  # an explicit ONNX Runtime choice stays


def test_unknown_backend_lists_the_choices(demo_copy):
    with pytest.raises(BackendError, match="auto, tensorrt, onnxruntime"):
        _backend(demo_copy, "cuda")


# ---------------------------------------------------------------------------------- reference tiles
def test_choose_tiles_spreads_over_the_scores():
    s = np.array([0.5, 0.9, 0.1, 0.3, 0.7, 0.2])
    # ranks by score: 1 (0.9), 4 (0.7), 0 (0.5), 3 (0.3), 5 (0.2), 2 (0.1)
    assert choose_tiles(s, 1) == [1]
    assert choose_tiles(s, 2) == [1, 2]
    assert choose_tiles(s, 3) == [1, 4, 2]
    assert choose_tiles(s, 4) == [1, 4, 5, 2]
    assert sorted(choose_tiles(s, 10)) == list(range(6))
    assert choose_tiles(s, 0) == [] and choose_tiles(np.array([]), 3) == []


def test_calibrate_stores_reference_tiles_the_gate_reads(demo_copy, tmp_path):
    from sdk.imageio import write_png
    from sdk.tools.synthetic import make_frames

    frames = make_frames(4, defect_rate=0.5, seed=3)
    for f in frames:
        write_png(tmp_path / "imgs" / f"{f.name}.png", f.image)
    rc = robis_edge(["calibrate", "--bundle", str(demo_copy.root), "--images", str(tmp_path / "imgs"),
                     "--reference-tiles", "3", "--min-images", "1"])
    assert rc == 0
    b = Bundle.load(demo_copy.root)  # sha256 of the tiles verified
    tiles, color = load_reference_tiles(b)
    assert len(tiles) == 3 and color == ("gray" if frames[0].image.ndim == 2 else "rgb")
    assert all(t.shape[:2] == (512, 512) and t.dtype == np.uint8 for t in tiles)
    # the tiles are cut from these frames: the first is the highest-scoring tile of the whole set,
    # and every one is one of the frames' tiles, pixel for pixel
    from sdk.geometry import TilingPlan

    every = [t for f in frames for t in TilingPlan(*f.image.shape[:2], 512, 0.1).extract(f.image)]
    insp = Inspector(b, backend="ort-cpu")
    _, top = insp.calibrate_with_reference([f.image for f in frames], n_reference=1)
    assert np.array_equal(tiles[0], top[0])
    assert all(any(np.array_equal(t, e) for e in every) for t in tiles)
    # a second calibration replaces them (old files and entries gone)
    rc = robis_edge(["calibrate", "--bundle", str(demo_copy.root), "--images", str(tmp_path / "imgs"),
                     "--reference-tiles", "2", "--min-images", "1"])
    b = Bundle.load(demo_copy.root)
    assert rc == 0 and len(b._raw["reference"]["tiles"]) == 2
    assert sorted(p.name for p in (b.root / "reference").iterdir()) == ["tile_00.png", "tile_01.png"]


def test_rgb_reference_tiles_round_trip(demo_copy):
    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(2)]
    write_reference_tiles(demo_copy, tiles, "test")
    demo_copy.save()
    got, color = load_reference_tiles(Bundle.load(demo_copy.root))
    assert color == "rgb" and all(np.array_equal(a, b) for a, b in zip(tiles, got))


def test_missing_reference_tiles_say_how_to_get_them(demo_copy):
    assert len(load_reference_tiles(demo_copy)[0]) == 4  # the demo bundle ships its tiles
    del demo_copy._raw["reference"]
    with pytest.raises(BundleError, match="robis-edge calibrate"):
        load_reference_tiles(demo_copy)


# ---------------------------------------------------------------------------------- the gate
def _variant(bundle: Bundle, tmp_path: Path, how: str) -> Path:
    """A copy of the bundle's ONNX with its weights changed: rounded to float16 (what fp16 weights
    do to a model), or perturbed by 20 % (a miscompile-sized error)."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    m = onnx.load(str(bundle.model_path))
    rng = np.random.default_rng(1)
    for i, t in enumerate(m.graph.initializer):
        a = numpy_helper.to_array(t)
        if a.dtype != np.float32:
            continue
        if how == "fp16":
            a = a.astype(np.float16).astype(np.float32)
        else:
            a = a * (1 + 0.2 * rng.standard_normal(a.shape))
        m.graph.initializer[i].CopyFrom(numpy_helper.from_array(a.astype(np.float32), t.name))
    out = tmp_path / f"{how}.onnx"
    onnx.save(m, str(out))
    return out


def _recorded(bundle: Bundle, model: Path, tiles, color):
    from sdk.backends.onnxruntime import OrtBackend
    from sdk.engines.gate import pipeline_outputs

    be = OrtBackend(str(model), ["CPUExecutionProvider"], "test", input_size=bundle.preprocess.size,
                    map_size=bundle.map_size)
    return pipeline_outputs(bundle, be, tiles, color)


def test_gate_decisions_on_recorded_outputs(demo_copy, tmp_path):
    from sdk.tools.synthetic import make_frames

    insp = Inspector(demo_copy, backend="ort-cpu")
    frames = make_frames(6, defect_rate=0.5, seed=11)
    cal, tiles = insp.calibrate_with_reference([f.image for f in frames], n_reference=6)
    color = "gray" if tiles[0].ndim == 2 else "rgb"
    ref = _recorded(demo_copy, demo_copy.model_path, tiles, color)
    assert {"pass", "fail"} <= set(ref[1]), "the reference tiles should include both verdicts"
    same = gate.compare("fp32", *_interleave(ref, ref), scale=255.0)
    assert same.passed and same.cosine == pytest.approx(1.0) and same.max_abs == 0.0
    # weights rounded to fp16: small differences, within the fp16 tolerances
    half = _recorded(demo_copy, _variant(demo_copy, tmp_path, "fp16"), tiles, color)
    r16 = gate.compare("fp16", *_interleave(ref, half), scale=255.0)
    assert r16.passed, r16.line()
    assert gate.next_step(plan.LADDERS["fp16"], "fp16", r16) is None
    # a 20 % weight error: the gate fails at every precision and the ladder runs out after fp32
    bad = _recorded(demo_copy, _variant(demo_copy, tmp_path, "broken"), tiles, color)
    for step, nxt in (("fp16", "fp16-safe"), ("fp16-safe", "fp32"), ("fp32", None)):
        r = gate.compare(step, *_interleave(ref, bad), scale=255.0)
        assert not r.passed and r.failures
        assert gate.next_step(plan.LADDERS["fp16"], step, r) == nxt
    assert json.loads(json.dumps(r.to_json()))["passed"] is False


def _interleave(ref, other):
    return ref[0], other[0], ref[1], other[1], ref[2], other[2]


def test_gate_verdict_and_mask_rules():
    m = [np.zeros((4, 4), np.float32)]
    mask_a = [np.zeros((4, 4), np.uint8)]
    mask_b = [np.full((4, 4), 255, np.uint8)]
    r = gate.compare("fp16", m, m, ["pass"], ["fail"], mask_a, mask_b, scale=255.0)
    assert not r.passed and "verdicts differ on tile(s) [0]" in r.failures[0]
    assert any("mask IoU 0.000" in f for f in r.failures)
    nan = [np.full((4, 4), np.nan, np.float32)]
    r = gate.compare("fp32", [np.ones((4, 4), np.float32)], nan, ["pass"], ["pass"], mask_a, mask_a)
    assert not r.passed and r.cosine == 0.0
    with pytest.raises(ValueError):
        gate.compare("fp32", m, [], ["pass"], [], mask_a, [])
    t = gate.compare_tensors("fp32", [np.array([1.0, -1.0])], [np.array([1.0, 1.0])], sign_iou=True)
    assert not t.passed and t.mask_iou == 0.5


# ---------------------------------------------------------------------------------- commands
def test_build_without_tensorrt_is_a_clear_error(demo_copy, capsys):
    rc = robis_edge(["build", "--bundle", str(demo_copy.root), "--precision", "fp16"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs TensorRT's Python bindings" in err and "robis-edge selftest" in err


def test_selftest_on_a_cpu_host(demo_copy, tmp_path, capsys):
    rc = robis_edge(["selftest", "--bundle", str(demo_copy.root), "--frame-size", "1432x972",
                     "--frames", "1", "--json", str(tmp_path / "rows.json")])
    out = capsys.readouterr().out
    rows = {r["check"]: r for r in json.loads((tmp_path / "rows.json").read_text())}
    assert rc == 0 and "selftest: PASS" in out
    assert rows["ort-cpu: self-test model"]["status"] == "PASS"
    assert rows["tensorrt"]["status"] == "SKIP" and "cannot import tensorrt" in rows["tensorrt"]["detail"]
    assert rows["tensorrt: build + run the self-test model"]["status"] == "SKIP"
    assert rows["frame 1432x972 on ort-cpu"]["status"] == "PASS"
    assert "CPUExecutionProvider" in rows["frame 1432x972 on ort-cpu"]["detail"]
    # demanding TensorRT turns its absence into a failure and the exit status into 1
    rc = robis_edge(["selftest", "--quick", "--require", "tensorrt,gpu"])
    out = capsys.readouterr().out
    assert rc == 1 and "selftest: FAIL (2 failed" in out
    assert robis_edge(["selftest", "--quick", "--require", "flux-capacitor"]) == 2


def test_selftest_reports_a_foreign_engine(demo_copy, capsys):
    _add_engine(demo_copy, _entry(demo_copy))
    rc = robis_edge(["selftest", "--quick", "--bundle", str(demo_copy.root)])
    out = capsys.readouterr().out
    assert rc == 1 and "engines/a.engine" in out and "rebuild: robis-edge build" in out


def test_shipped_selftest_model_is_the_generated_one():
    pytest.importorskip("onnx")
    import onnxruntime as ort
    from oracles import selftest_model_oracle

    from sdk.engines.selftest_model import SHIPPED, model_bytes

    assert SHIPPED.read_bytes() == model_bytes(), "regenerate: python -m sdk.engines.selftest_model"
    x = np.random.default_rng(5).normal(0, 1, (3, 3, 56, 56)).astype(np.float32)
    out = ort.InferenceSession(str(SHIPPED), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    np.testing.assert_allclose(out, selftest_model_oracle(x), atol=2e-6)
    layers = onnx_layers(__import__("onnx").load(str(SHIPPED)))
    pinned = set(plan.fp32_layers(layers, "fp16"))
    assert {"/blocks.0/norm1/LayerNormalization", "/blocks.0/attn/Softmax", "/head/ReduceL2",
            "/head/Div", "/head/Resize"} <= pinned
    assert "/blocks.0/attn/q/MatMul" not in pinned and "/patch_embed/proj/Conv" not in pinned


def test_runtime_backend_help_is_the_vocabulary_s():
    """edge_runtime.commands (standard library only) and the SDK read one vocabulary module."""
    from edge_runtime import commands
    from sdk import vocabulary
    from sdk.backends import BACKEND_HELP, BACKENDS

    assert commands.BACKEND_HELP is vocabulary.BACKEND_HELP is BACKEND_HELP
    assert all(name in BACKEND_HELP for name in BACKENDS)


# ---- onnxruntime-gpu without TensorRT (the GPU machine of issue 16) -----------------------------
def _gpu_wheel_without_tensorrt(monkeypatch):
    """onnxruntime-gpu lists the TensorRT and CUDA EPs whether their libraries load or not; here
    TensorRT's does not, and (this host having no GPU) the CUDA EP falls back to the CPU."""
    import onnxruntime as ort

    from sdk.backends import onnxruntime as ort_backend

    listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    monkeypatch.setattr(ort_backend, "provider_library_problem",
                        lambda p: "libnvinfer.so.10: cannot open shared object file"
                        if p == "TensorrtExecutionProvider" else "")


def test_auto_skips_a_listed_tensorrt_ep_that_cannot_load(monkeypatch):
    from sdk.backends.onnxruntime import choose_providers

    _gpu_wheel_without_tensorrt(monkeypatch)
    providers, reason = choose_providers("auto")
    assert providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert "TensorrtExecutionProvider is listed but cannot load: libnvinfer.so.10" in reason


def test_auto_steps_down_when_a_gpu_ep_cannot_start(monkeypatch, demo_copy):
    _gpu_wheel_without_tensorrt(monkeypatch)
    be = _backend(demo_copy, "auto")  # the CUDA EP cannot start on this host: auto says so, runs on CPU
    assert be.provider == "CPUExecutionProvider"
    assert "CUDAExecutionProvider could not start" in be.reason and "using CPUExecutionProvider" in be.reason
    with pytest.raises(BackendError, match="could not start CUDAExecutionProvider"):
        _backend(demo_copy, "ort-cuda")  # an explicit request never steps down


def test_selftest_skips_a_tensorrt_ep_that_cannot_load(monkeypatch):
    from sdk.engines import selftest

    _gpu_wheel_without_tensorrt(monkeypatch)
    rows, facts = selftest.environment([])
    ort_rows, _ = selftest.ort_checks(facts, [])
    by = {r.check: r for r in ort_rows}
    trt = by["ort-tensorrt: self-test model vs CPU"]
    assert trt.status == "SKIP" and "cannot load it: libnvinfer.so.10" in trt.detail
