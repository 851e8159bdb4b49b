"""A float16 copy of an fp32 ONNX graph, with the fragile layers kept in float32 (onnx + numpy only).

Which nodes stay fp32 is decided by the TensorRT builder's rules (``sdk.engines.tensorrt.plan``:
LayerNorm, softmax, the reductions/divisions/powers/square roots of the L2 normalisations and the
whole ``/head/`` scope, docs/gpu.md), applied to the ONNX nodes with ``plan.onnx_layers``, so
ONNX Runtime's fp16 copy and a TensorRT fp16 engine pin the same layers.

Every other compute node runs in float16; data-movement nodes (reshape, transpose, slicing, …)
keep the precision of their input. A ``Cast`` is inserted wherever a float tensor crosses from one
precision to the other (one per tensor and direction); float initializers and ``Constant`` values
are stored in the precision of their consumers. The graph's inputs and outputs keep their fp32
type, so the copy takes the same ``image`` and gives the same ``anomaly_map`` as the original.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

# Nodes that only move, select or reshape data: they run in the precision of their first float input.
PASS_OPS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Gather", "Slice",
            "Split", "Concat", "Expand", "Tile", "Shape", "Size", "Where", "Pad", "GatherElements",
            "ScatterND", "Equal", "Constant", "ConstantOfShape"}
# Inputs whose type is fixed by the operator whatever the data type (never cast).
FIXED_INPUTS = {"Resize": {1, 2}, "Pad": {1}, "Reshape": {1}, "Expand": {1}, "Slice": {1, 2, 3, 4},
                "Tile": {1}, "Split": {1}, "Squeeze": {1}, "Unsqueeze": {1}, "Where": {0}}


def _fp32_names(model) -> set[str]:
    from sdk.engines.tensorrt import plan

    return {layer.name for layer in plan.onnx_layers(model) if plan.is_fragile(layer)}


def convert_fp16(model, keep_fp32: set[str] | None = None) -> tuple[Any, dict]:
    """``(fp16 model, report)``; ``keep_fp32`` overrides the node names kept in fp32 (default: the
    plan's fragile layers). The input model is not modified."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
    src = onnx.shape_inference.infer_shapes(model)
    g = src.graph
    elem: dict[str, int] = {}
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.HasField("tensor_type"):
            elem[vi.name] = vi.type.tensor_type.elem_type
    keep = _fp32_names(model) if keep_fp32 is None else set(keep_fp32)

    # Float constants become initializers (their precision is decided per consumer below).
    inits: dict[str, np.ndarray] = {}
    other_inits = []
    for t in g.initializer:
        if t.data_type == F32:
            inits[t.name] = numpy_helper.to_array(t)
        else:
            other_inits.append(t)
        elem[t.name] = t.data_type
    nodes = []
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value" \
                and n.attribute[0].t.data_type == F32:
            inits[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
            elem[n.output[0]] = F32
        elif n.op_type == "Identity" and n.input[0] in inits:  # an alias of a weight
            inits[n.output[0]] = inits[n.input[0]]
            elem[n.output[0]] = F32
        else:
            nodes.append(n)

    dtype: dict[str, int] = {i.name: i.type.tensor_type.elem_type for i in g.input}
    dtype.update({t.name: t.data_type for t in other_inits})
    used_inits: dict[tuple[str, int], str] = {}
    casts: dict[tuple[str, int], str] = {}
    out_nodes = []
    counts: Counter = Counter()
    unknown: set[str] = set()

    def is_float(name: str) -> bool:
        if name in inits:
            return True
        t = dtype.get(name, elem.get(name))
        if t is None:
            unknown.add(name)
        return t in (F32, F16)

    def as_type(name: str, want: int) -> str:
        if name in inits:
            key = (name, want)
            if key not in used_inits:
                used_inits[key] = name if want == F32 else f"{name}__fp16"
            return used_inits[key]
        have = dtype.get(name, elem.get(name))
        if have == want:
            return name
        key = (name, want)
        if key not in casts:
            out = f"{name}__to_{'fp16' if want == F16 else 'fp32'}"
            out_nodes.append(helper.make_node("Cast", [name], [out], to=want, name=f"{out}/Cast"))
            dtype[out] = want
            casts[key] = out
            counts["casts"] += 1
        return casts[key]

    for n in nodes:
        fixed = FIXED_INPUTS.get(n.op_type, set())
        float_in = [i for k, i in enumerate(n.input) if i and k not in fixed and is_float(i)]
        name = n.name or n.output[0]
        if name in keep:
            want = F32
            counts["fp32_nodes"] += 1
        elif n.op_type in PASS_OPS:
            first = float_in[0] if float_in else None
            want = F32 if first is None or first in inits else dtype.get(first, elem.get(first, F32))
            counts["pass_nodes"] += 1
        else:
            want = F16
            counts["fp16_nodes"] += 1
        new = onnx.NodeProto()
        new.CopyFrom(n)
        del new.input[:]
        for k, i in enumerate(n.input):
            if i and k in fixed and i in inits:  # e.g. Resize's scales: float32 whatever the data
                new.input.append(as_type(i, F32))
            else:
                new.input.append(as_type(i, want) if i and k not in fixed and is_float(i) else i)
        if n.op_type == "Cast":
            to = next(a for a in new.attribute if a.name == "to")
            if to.i in (F32, F16) and name not in keep:
                to.i = F16
            for o in n.output:
                dtype[o] = to.i
        else:
            for o in n.output:
                t = elem.get(o)
                dtype[o] = want if t in (F32, F16) else t
        out_nodes.append(new)

    # Graph outputs keep their declared type.
    for o in g.output:
        want = o.type.tensor_type.elem_type
        if dtype.get(o.name) != want:
            inner = f"{o.name}__inner"
            for n in out_nodes:
                n.output[:] = [inner if x == o.name else x for x in n.output]
                n.input[:] = [inner if x == o.name else x for x in n.input]
            out_nodes.append(helper.make_node("Cast", [inner], [o.name], to=want, name=f"{o.name}/Cast"))
            counts["casts"] += 1

    new_inits = list(other_inits)
    for (name, want), new_name in used_inits.items():
        arr = inits[name]
        new_inits.append(numpy_helper.from_array(arr if want == F32 else arr.astype(np.float16), new_name))
    graph = helper.make_graph(out_nodes, g.name, list(g.input), list(g.output), new_inits)
    out = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="robis-edge fp16")
    out.ir_version = model.ir_version
    onnx.checker.check_model(out)
    report = {"fp16_nodes": counts["fp16_nodes"], "fp32_nodes": counts["fp32_nodes"],
              "pass_nodes": counts["pass_nodes"], "casts": counts["casts"],
              "fp16_initializers": sum(1 for (_, w) in used_inits if w == F16),
              "fp32_initializers": sum(1 for (_, w) in used_inits if w == F32),
              "untyped_tensors": len(unknown),
              "rule": "sdk.engines.tensorrt.plan.is_fragile on plan.onnx_layers (the TensorRT fp16 pins)"}
    return out, report
