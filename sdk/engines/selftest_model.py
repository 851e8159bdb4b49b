"""The small ONNX model ``robis-edge selftest`` builds into an engine on the device.

It meets the anomaly-model contract of bundle.md (``image`` N×3×56×56 → ``anomaly_map``
N×1×16×16, dynamic N) and contains every kind of layer the real models pin to fp32: a patch
convolution, LayerNormalization, attention with softmax, an L2 normalisation (ReduceL2, Clip,
Div) and a cosine head, then a bilinear resize. Node names follow the exported INP-Former's
("/blocks.0/attn/Softmax", "/head/Div") so the same fp32 rules apply. Weights are seeded random.

The file ships in the package (data/selftest_tile.onnx, so the device needs no onnx package);
``python -m sdk.engines.selftest_model`` regenerates it, and a test checks they are the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SIZE, PATCH, DIM, MAP = 56, 14, 16, 16
GRID = SIZE // PATCH
SHIPPED = Path(__file__).with_name("data") / "selftest_tile.onnx"


def build_model(seed: int = 0):
    """The self-test model as an ``onnx.ModelProto`` (opset 17)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def const(name: str, arr: np.ndarray):
        return numpy_helper.from_array(np.asarray(arr), name)

    f32 = np.float32
    inits = [
        const("patch.w", rng.normal(0, 0.05, (DIM, 3, PATCH, PATCH)).astype(f32)),
        const("patch.b", rng.normal(0, 0.1, DIM).astype(f32)),
        const("ln.g", (1 + rng.normal(0, 0.1, DIM)).astype(f32)),
        const("ln.b", rng.normal(0, 0.1, DIM).astype(f32)),
        const("q.w", rng.normal(0, 0.3, (DIM, DIM)).astype(f32)),
        const("k.w", rng.normal(0, 0.3, (DIM, DIM)).astype(f32)),
        const("v.w", rng.normal(0, 0.3, (DIM, DIM)).astype(f32)),
        const("scale", np.array(np.sqrt(DIM), f32)),
        const("proto", rng.normal(0, 1.0, (DIM, 1)).astype(f32)),
        const("eps", np.array(1e-12, f32)),
        const("one", np.array(1.0, f32)),
        const("tok_shape", np.array([0, DIM, GRID * GRID], np.int64)),
        const("map_shape", np.array([0, 1, GRID, GRID], np.int64)),
        const("roi", np.zeros(0, f32)),
        const("scales", np.array([1, 1, MAP / GRID, MAP / GRID], f32)),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["image", "patch.w", "patch.b"], ["emb"], name="/patch_embed/proj/Conv",
          kernel_shape=[PATCH, PATCH], strides=[PATCH, PATCH]),
        n("Reshape", ["emb", "tok_shape"], ["emb_flat"], name="/patch_embed/Reshape"),
        n("Transpose", ["emb_flat"], ["tokens"], name="/patch_embed/Transpose", perm=[0, 2, 1]),
        n("LayerNormalization", ["tokens", "ln.g", "ln.b"], ["x"], name="/blocks.0/norm1/LayerNormalization",
          axis=-1, epsilon=1e-6),
        n("MatMul", ["x", "q.w"], ["q"], name="/blocks.0/attn/q/MatMul"),
        n("MatMul", ["x", "k.w"], ["k"], name="/blocks.0/attn/k/MatMul"),
        n("MatMul", ["x", "v.w"], ["v"], name="/blocks.0/attn/v/MatMul"),
        n("Transpose", ["k"], ["kt"], name="/blocks.0/attn/Transpose", perm=[0, 2, 1]),
        n("MatMul", ["q", "kt"], ["qk"], name="/blocks.0/attn/MatMul"),
        n("Div", ["qk", "scale"], ["qk_s"], name="/blocks.0/attn/Div"),
        n("Softmax", ["qk_s"], ["att"], name="/blocks.0/attn/Softmax", axis=-1),
        n("MatMul", ["att", "v"], ["av"], name="/blocks.0/attn/MatMul_1"),
        n("Add", ["tokens", "av"], ["feat"], name="/blocks.0/Add"),
        n("ReduceL2", ["feat"], ["norm"], name="/head/ReduceL2", axes=[-1], keepdims=1),
        n("Clip", ["norm", "eps"], ["norm_c"], name="/head/Clip"),
        n("Div", ["feat", "norm_c"], ["unit"], name="/head/Div"),
        n("ReduceL2", ["proto"], ["pnorm"], name="/head/ReduceL2_1", keepdims=1),
        n("Div", ["proto", "pnorm"], ["punit"], name="/head/Div_1"),
        n("MatMul", ["unit", "punit"], ["cos"], name="/head/MatMul"),
        n("Sub", ["one", "cos"], ["dist"], name="/head/Sub"),
        n("Reshape", ["dist", "map_shape"], ["small"], name="/head/Reshape"),
        n("Resize", ["small", "roi", "scales"], ["anomaly_map"], name="/head/Resize", mode="linear",
          coordinate_transformation_mode="align_corners"),
    ]
    graph = helper.make_graph(
        nodes, "robis_selftest_tile",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["N", 1, MAP, MAP])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="robis-edge selftest")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def model_bytes(seed: int = 0) -> bytes:
    return build_model(seed).SerializeToString()


def main() -> int:
    SHIPPED.parent.mkdir(parents=True, exist_ok=True)
    SHIPPED.write_bytes(model_bytes())
    print(f"wrote {SHIPPED} ({SHIPPED.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
