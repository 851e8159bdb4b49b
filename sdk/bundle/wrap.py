"""``robis-edge bundle new``: wrap any anomaly-map ONNX model into a bundle (docs/bundle.md).

The copy written into the bundle differs from the original only at its edges: the image input is
renamed ``image`` (an Identity node feeds the original name), the map output is reshaped to
N×1×M×M (N×M×M: Unsqueeze; N×M×M×1: Transpose; float16/float64: Cast) and published as
``anomaly_map``; other outputs are dropped. The copy is then run with ONNX Runtime on a random
batch against the original and must reproduce its map. ``onnx`` is imported here only (the
``export`` or ``dev`` extra).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, InputError
from .schema import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec
from .store import Bundle, create_bundle, sha256_file

MODEL_FILE = "anomaly_model.onnx"
INPUT_NAME, OUTPUT_NAME = "image", "anomaly_map"
_FLOAT, _FLOAT16, _DOUBLE = 1, 10, 11  # onnx.TensorProto element types
_TYPE_NAMES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
               10: "float16", 11: "float64", 16: "bfloat16"}


@dataclass(frozen=True)
class WrapReport:
    """What ``wrap_onnx`` found and did."""

    source_input: str
    source_output: str
    layout: str  # "N1MM", "NMM" or "NMM1"
    map_size: int
    fixed_batch: int | None
    max_abs_diff: float
    check_batch: int


def _require_onnx():
    try:
        import onnx
    except ModuleNotFoundError:
        raise InputError("`robis-edge bundle new` needs the onnx package: install the 'export' or 'dev' "
                         "extra (pip install 'robis-edge[export]'), or just `pip install onnx`") from None
    return onnx


def _dims(value_info) -> list[int | str]:
    """A tensor's shape as ints (fixed) and strings (symbolic or unknown)."""
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]


def _pick(items, name: str | None, what: str, flag: str, path: Path):
    names = [i.name for i in items]
    if name is not None:
        for i in items:
            if i.name == name:
                return i
        raise InputError(f"{path}: no {what} named {name!r} (it has {names})")
    if len(items) != 1:
        raise InputError(f"{path}: the model has {len(items)} {what}s {names}; say which with {flag}")
    return items[0]


def _check_input(inp, size: int, path: Path) -> int | None:
    """The image input must be float32 N×3×S×S (symbolic sides allowed); returns its fixed batch."""
    elem = inp.type.tensor_type.elem_type
    dims = _dims(inp)
    if len(dims) != 4 or (isinstance(dims[1], int) and dims[1] != 3):
        raise InputError(f"{path}: input {inp.name!r} is not image-like: shape {dims}, expected N×3×S×S "
                         "(float32, channels first)")
    if elem != _FLOAT:
        raise InputError(f"{path}: input {inp.name!r} is {_TYPE_NAMES.get(elem, elem)}, expected float32 "
                         "N×3×S×S")
    for d in dims[2:]:
        if isinstance(d, int) and d != size:
            raise InputError(f"{path}: input {inp.name!r} is {dims}, which does not take --size {size} tiles")
    return dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None


def _layout(shape: tuple[int, ...], name: str, path: Path) -> tuple[str, int]:
    """The map layout of an output of ``shape`` (as ONNX Runtime returned it) and its side M."""
    if len(shape) == 4 and shape[1] == 1 and shape[2] == shape[3]:
        return "N1MM", shape[2]
    if len(shape) == 3 and shape[1] == shape[2]:
        return "NMM", shape[1]
    if len(shape) == 4 and shape[3] == 1 and shape[1] == shape[2]:
        return "NMM1", shape[1]
    raise InputError(f"{path}: output {name!r} has shape {list(shape)}; a map must be N×1×M×M, N×M×M or "
                     "N×M×M×1 with a square M×M")


def _session(model_bytes_or_path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model_bytes_or_path, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise InputError(f"onnxruntime cannot load the model: {exc}") from exc


def _rewire(onnx, model, inp_name: str, out_name: str, elem: int, layout: str, batch: int | None,
            size: int, m: int) -> None:
    """Rename the edges of ``model``'s graph in place to the contract (see module docstring)."""
    from onnx import TensorProto, helper

    g = model.graph
    taken = {n for node in g.node for n in (*node.input, *node.output)} | {i.name for i in g.initializer}
    for new in (INPUT_NAME, OUTPUT_NAME):
        if new in taken and new not in (inp_name, out_name):
            raise InputError(f"the model already uses the tensor name {new!r} inside its graph; rename it "
                             "in the original, or export with other internal names")
    nodes = []
    inp = next(i for i in g.input if i.name == inp_name)
    if inp_name != INPUT_NAME:
        nodes.append(helper.make_node("Identity", [INPUT_NAME], [inp_name], name="robis_input"))
    bdim: int | str = batch if batch else "N"
    new_in = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [bdim, 3, size, size])
    tail, cur = [], out_name
    if elem != _FLOAT:
        tail.append(helper.make_node("Cast", [cur], ["robis_cast"], to=TensorProto.FLOAT, name="robis_cast"))
        cur = "robis_cast"
    if layout == "NMM":
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        if opset >= 13:  # axes became an input in opset 13
            g.initializer.append(helper.make_tensor("robis_axes", TensorProto.INT64, [1], [1]))
            tail.append(helper.make_node("Unsqueeze", [cur, "robis_axes"], ["robis_unsq"], name="robis_unsq"))
        else:
            tail.append(helper.make_node("Unsqueeze", [cur], ["robis_unsq"], axes=[1], name="robis_unsq"))
        cur = "robis_unsq"
    elif layout == "NMM1":
        tail.append(helper.make_node("Transpose", [cur], ["robis_nchw"], perm=[0, 3, 1, 2],
                                     name="robis_nchw"))
        cur = "robis_nchw"
    if cur == out_name and out_name != OUTPUT_NAME:
        tail.append(helper.make_node("Identity", [cur], [OUTPUT_NAME], name="robis_output"))
    elif cur != out_name:
        tail[-1].output[0] = OUTPUT_NAME
    new_out = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [bdim, 1, m, m])
    others = [i for i in g.input if i.name != inp_name]
    del g.input[:]
    g.input.extend([new_in, *others])
    del g.output[:]
    g.output.append(new_out)
    old = list(g.node)
    del g.node[:]
    g.node.extend([*nodes, *old, *tail])
    if inp_name != INPUT_NAME:  # the original input's shape stays known to shape inference
        g.value_info.append(inp)


def wrap_onnx(onnx_path: str | os.PathLike, out: str | os.PathLike, size: int, *,
              input_name: str | None = None, output_name: str | None = None,
              mean: tuple[float, float, float] = IMAGENET_MEAN,
              std: tuple[float, float, float] = IMAGENET_STD,
              channel_order: str = "RGB", window: int | None = 1024, overlap: float = 0.1,
              name: str | None = None, overwrite: bool = False, seed: int = 0,
              log: Callable[[str], None] = print) -> tuple[Bundle, WrapReport]:
    """Wrap the anomaly-map model ``onnx_path`` into a new bundle at ``out``; returns it and a report."""
    onnx = _require_onnx()
    src, out = Path(onnx_path), Path(out)
    if not src.is_file():
        raise InputError(f"{src}: no such ONNX file")
    if size < 1:
        raise InputError(f"--size must be a positive tile side, got {size}")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out} exists and is not empty; choose another --out")
        shutil.rmtree(out)
    try:
        model = onnx.load(str(src))
    except Exception as exc:  # protobuf decode errors and missing external data
        raise InputError(f"{src}: cannot be read as an ONNX model ({exc})") from exc
    g = model.graph
    inits = {i.name for i in g.initializer}
    inp = _pick([i for i in g.input if i.name not in inits], input_name, "input", "--input", src)
    outp = _pick(list(g.output), output_name, "output", "--output", src)
    batch = _check_input(inp, size, src)
    elem = outp.type.tensor_type.elem_type
    if elem not in (_FLOAT, _FLOAT16, _DOUBLE):
        raise InputError(f"{src}: output {outp.name!r} is {_TYPE_NAMES.get(elem, elem)}, not a float map "
                         "of anomaly scores")
    others = [i for i in g.input if i.name not in inits and i.name != inp.name]
    if others:
        raise InputError(f"{src}: the model has further inputs {[i.name for i in others]}; the SDK feeds "
                         "only the image")

    n = batch or 2
    x = np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)
    original = _session(str(src))
    try:
        ref = original.run([outp.name], {inp.name: x})[0]
    except Exception as exc:
        raise InputError(f"{src}: onnxruntime cannot run it on a {n}×3×{size}×{size} batch: {exc}") from exc
    layout, m = _layout(tuple(ref.shape), outp.name, src)
    if ref.shape[0] != n:
        raise InputError(f"{src}: output {outp.name!r} has {ref.shape[0]} maps for {n} tiles")

    _rewire(onnx, model, inp.name, outp.name, elem, layout, batch, size, m)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise BundleError(f"the wrapped copy of {src} does not pass onnx.checker: {exc}") from exc
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / MODEL_FILE))
    got = _session(str(out / MODEL_FILE)).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    want = (ref[:, None] if layout == "NMM" else ref.transpose(0, 3, 1, 2) if layout == "NMM1" else ref)
    want = want.astype(np.float32)
    if got.shape != want.shape:
        raise BundleError(f"the wrapped copy returns {got.shape}, expected {want.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if got.size else 0.0
    if not np.array_equal(got, want, equal_nan=True):
        raise BundleError(f"the wrapped copy does not reproduce {src.name} (max |diff| {diff:.3g})")
    report = WrapReport(inp.name, outp.name, layout, m, batch, diff, n)
    import onnxruntime as ort

    provenance: dict[str, Any] = {
        "exporter": "robis-edge bundle new", "source_model": src.name,
        "source_model_sha256": sha256_file(src),
        "source_input": inp.name, "source_output": outp.name, "source_output_layout": layout,
        "source_output_type": _TYPE_NAMES.get(elem, str(elem)),
        "wrap_check": {"batch": n, "max_abs_diff": diff, "exact": True},
        "onnx": onnx.__version__, "onnxruntime": ort.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    pre = PreprocessSpec(size=size, mean=tuple(mean), std=tuple(std), channel_order=channel_order)
    bundle = create_bundle(out, name or out.name, MODEL_FILE, m, preprocess=pre, window=window,
                           overlap=overlap, provenance=provenance)
    if batch:
        bundle.set_model_fields(max_batch=batch)
        bundle.save()
    log(f"wrapped {src.name}: input {inp.name!r} → 'image' ({'batch ' + str(batch) if batch else 'N'}×3×"
        f"{size}×{size}), output {outp.name!r} {layout} → 'anomaly_map' N×1×{m}×{m}; reproduced exactly on "
        f"{n} random tiles")
    if batch:
        log(f"the model has a fixed batch of {batch}: tiles run {batch} at a time (anomaly_model.max_batch)")
    log(f"bundle {bundle.name!r} written to {out} (uncalibrated: run `robis-edge calibrate`)")
    return bundle, report
