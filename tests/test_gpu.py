"""GPU tests (issue 6): run only where CUDA is usable, skipped cleanly elsewhere (CI has no GPU).

- ONNX Runtime's CUDA execution provider against its CPU provider on the demo bundle;
- with TensorRT and pycuda: `robis-edge selftest` builds and checks its engines, `robis-edge build`
  makes an engine for a copy of the demo bundle that passes the parity gate, and the Inspector on
  `tensorrt` gives the verdicts of ONNX Runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sdk import Bundle, Inspector
from sdk.backends.gpu import cuda_device, onnxruntime_providers, pycuda_probe, tensorrt_probe

pytestmark = pytest.mark.gpu
DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo-bundle"


def _frames():
    from sdk.tools.synthetic import make_frames

    return make_frames(6, defect_rate=0.5, seed=21)


needs_cuda_ep = pytest.mark.skipif("CUDAExecutionProvider" not in onnxruntime_providers(),
                                   reason="onnxruntime has no CUDA execution provider")
needs_tensorrt = pytest.mark.skipif(not (tensorrt_probe().present and pycuda_probe().present),
                                    reason="TensorRT and pycuda are not installed")


@needs_cuda_ep
def test_ort_cuda_matches_cpu():
    cpu = Inspector(DEMO, backend="ort-cpu")
    gpu = Inspector(DEMO, backend="ort-cuda")
    assert gpu.describe()["provider"] == "CUDAExecutionProvider"
    for f in _frames():
        a, b = cpu.inspect(f.image), gpu.inspect(f.image)
        assert a.verdict == b.verdict
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, atol=1e-2)  # 0..255 scale


@needs_tensorrt
def test_selftest_builds_and_checks_engines(tmp_path, capsys):
    import json

    from edge_runtime.cli import main as robis_edge

    if cuda_device()[0] is None:
        pytest.skip(cuda_device()[1])
    rc = robis_edge(["selftest", "--require", "tensorrt,gpu,pycuda", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    rows = {r["check"]: r["status"] for r in json.loads((tmp_path / "r.json").read_text())}
    assert rc == 0, out
    for step in ("fp32", "fp16"):
        assert rows[f"tensorrt {step}: self-test engine vs ort-cpu"] == "PASS", out


@needs_tensorrt
def test_build_gate_and_tensorrt_backend(tmp_path):
    from sdk.engines import engine_entries
    from sdk.engines.tensorrt.build import build_bundle_engines

    if cuda_device()[0] is None:
        pytest.skip(cuda_device()[1])
    shutil.copytree(DEMO, tmp_path / "b")
    b = Bundle.load(tmp_path / "b")
    insp = Inspector(b, backend="ort-cpu")
    cal, tiles = insp.calibrate_with_reference([f.image for f in _frames()], n_reference=6)
    from sdk.engines.reference import write_reference_tiles

    write_reference_tiles(b, tiles, "test")
    b.save()
    outcomes = build_bundle_engines(b.root, "fp16", frame_hw=(972, 1432), timing_cache=tmp_path / "t.cache")
    assert outcomes[0].entry is not None and outcomes[0].reports[-1].passed
    b = Bundle.load(b.root)
    assert engine_entries(b)[0].gpu_name == cuda_device()[0].name
    trt = Inspector(b, backend="auto")
    assert trt.describe()["backend"] == "tensorrt"
    for f in _frames():
        assert trt.inspect(f.image).verdict == insp.inspect(f.image).verdict
