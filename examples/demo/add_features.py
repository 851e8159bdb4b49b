"""Give an INP-Former bundle exported before `export inpformer --features` its `features` output,
in place, without re-exporting: the graph already computes the tensor that `--features` exports
(the fused encoder tokens, the mean over the target layers: the first ReduceMean over a Concat of
len(target_layers) inputs); this adds a Transpose + Reshape to N×C×g×g and a graph output, and
changes nothing else, so the anomaly map is the same. Then it records the sha256, sets
anomaly_model.features and the demo's refine.ttt section (build_bundle.DEMO_TTT).

Used once for the committed demo bundle (examples/demo/bundle), whose full rebuild with
build_bundle.py (which now exports with features=True) takes longer than the CPUs allowed:
    .venv/bin/python examples/demo/add_features.py [BUNDLE]
Needs onnx (export or dev extra).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))


def add_features(root: Path) -> None:
    import onnx
    import onnxruntime as ort
    from build_bundle import DEMO_TTT
    from onnx import TensorProto, helper

    from sdk import Bundle

    b = Bundle.load(root)
    if b.model.features is not None:
        print(f"{root}: already has features output {b.model.features!r}")
        return
    arch = json.loads((root / "arch.json").read_text())
    c, g = arch["embed_dim"], arch["img_size"] // arch["patch_size"]
    model = onnx.load(str(b.model_path))
    prod = {o: n for n in model.graph.node for o in n.output}
    fused = next(n for n in model.graph.node if n.op_type == "ReduceMean" and n.input[0] in prod
                 and prod[n.input[0]].op_type == "Concat"
                 and len(prod[n.input[0]].input) == len(arch["target_layers"]))
    shape = helper.make_tensor("features_shape", TensorProto.INT64, [4], [-1, c, g, g])
    model.graph.initializer.append(shape)
    model.graph.node.extend([
        helper.make_node("Transpose", [fused.output[0]], ["features_nct"], perm=[0, 2, 1], name="features_t"),
        helper.make_node("Reshape", ["features_nct", "features_shape"], ["features"], name="features_r")])
    model.graph.output.append(helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", c, g, g]))
    onnx.checker.check_model(model)
    before = ort.InferenceSession(str(b.model_path), providers=["CPUExecutionProvider"])
    import numpy as np

    s = arch["img_size"]
    x = np.random.default_rng(0).standard_normal((2, 3, s, s)).astype(np.float32)
    want = before.run(["anomaly_map"], {"image": x})[0]
    onnx.save(model, str(b.model_path))
    after = ort.InferenceSession(str(b.model_path), providers=["CPUExecutionProvider"])
    got, feats = after.run(["anomaly_map", "features"], {"image": x})
    if not np.array_equal(got, want):
        raise SystemExit("the anomaly map changed: not writing the bundle")
    b.add_file(b.model.file)
    b.set_model_fields(features="features")
    b.set_ttt(DEMO_TTT)
    b.update_provenance(features_output={
        "added_by": "examples/demo/add_features.py", "tensor": fused.output[0],
        "what": "mean of the target layers' patch tokens (what export inpformer --features outputs)",
        "shape": ["N", c, g, g]})
    b.save()
    print(f"{root}: features {feats.shape[1:]} added; anomaly map unchanged on 2 random tiles")


if __name__ == "__main__":
    add_features(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "bundle")
