"""export/onnx_fp16.py: the float16 copy the GPU benchmark runs on ONNX Runtime CUDA (issue 16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from export.onnx_fp16 import convert_fp16  # noqa: E402
from sdk.engines.tensorrt import plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = [ROOT / "sdk" / "engines" / "data" / "selftest_tile.onnx",
          ROOT / "examples" / "demo" / "bundle" / "anomaly_model.onnx"]
F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def _types(model) -> dict[str, int]:
    m = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    t = {v.name: v.type.tensor_type.elem_type for v in [*m.graph.input, *m.graph.output, *m.graph.value_info]}
    t.update({i.name: i.data_type for i in m.graph.initializer})
    return t


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.parent.name)
def test_fp16_copy_pins_the_plan_layers_and_matches(path):
    src = onnx.load(str(path))
    m16, report = convert_fp16(src)
    assert report["untyped_tensors"] == 0 and report["casts"] > 0 and report["fp16_nodes"] > 0
    types = _types(m16)
    # The contract is unchanged: float32 image in, float32 anomaly_map (and features, when exported) out.
    assert [types[i.name] for i in m16.graph.input] == [F32]
    assert [types[o.name] for o in m16.graph.output] == [F32] * len(src.graph.output)
    pinned = {layer.name for layer in plan.onnx_layers(src) if plan.is_fragile(layer)}
    by_name = {n.name: n for n in m16.graph.node}
    ops = {n.name: n.op_type for n in src.graph.node}
    for name in pinned:  # every fragile layer computes in float32, the matrix products in float16
        n = by_name.get(name)
        if n is None:  # a float Constant, now an initializer
            assert ops[name] in ("Constant", "Identity"), name
            continue
        assert all(types[i] == F32 for i in n.input[:1] if i and types[i] in (F32, F16)), name
    mm = [n for n in m16.graph.node if n.op_type in ("MatMul", "Conv") and n.name not in pinned]
    assert mm and all(types[n.input[0]] == F16 for n in mm)
    s = src.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    x = np.random.default_rng(0).standard_normal((2, 3, s, s)).astype(np.float32)

    def run(model):
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"image": x})[0]

    a, b = run(src), run(m16)
    assert b.dtype == np.float32 and b.shape == a.shape
    assert np.abs(a - b).max() <= 0.02 * (a.max() - a.min())
