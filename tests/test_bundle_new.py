"""`robis-edge bundle new|show|verify`: foreign anomaly-map models built here with onnx.helper
(their own tensor names, 3-D and channels-last outputs, a fixed batch, BGR input) wrapped into
bundles and run end to end; models that do not fit are refused with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sdk.preprocess import tile_preprocessor

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_runtime.cli import main  # noqa: E402
from sdk import Bundle, Inspector  # noqa: E402
from sdk.bundle import sha256_file  # noqa: E402
from sdk.errors import InputError  # noqa: E402

S, M = 64, 16


def foreign_model(path: Path, *, layout: str = "NMM", batch: int | str = 1, in_name: str = "input.1",
                  out_name: str = "scores", in_shape=None, out_type: int = TensorProto.FLOAT,
                  weights=(0.3, -0.5, 0.2), extra_output: bool = False, opset: int = 17) -> Path:
    """A small detector: average-pool S×S to M×M, weight the channels, square; its map in ``layout``
    (N1MM, NMM, NMM1, or 'wide' for a non-square N×M×2M map)."""
    k = S // M
    nodes = [helper.make_node("AveragePool", [in_name], ["pooled"], kernel_shape=[k, k], strides=[k, k]),
             helper.make_node("Conv", ["pooled", "w"], ["mixed"]),
             helper.make_node("Mul", ["mixed", "mixed"], ["sq"])]
    inits = [numpy_helper.from_array(np.array(weights, np.float32).reshape(1, 3, 1, 1), "w"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    last = "sq"
    if layout == "wide":
        nodes.append(helper.make_node("Concat", ["sq", "sq"], ["wide"], axis=3))
        last, shape = "wide", [batch, 1, M, 2 * M]
    else:
        shape = {"N1MM": [batch, 1, M, M], "NMM": [batch, M, M], "NMM1": [batch, M, M, 1]}[layout]
    if layout == "NMM":
        nodes.append(helper.make_node("Squeeze", [last, "axis1"], ["map3"]) if opset >= 13 else
                     helper.make_node("Squeeze", [last], ["map3"], axes=[1]))
        last = "map3"
    elif layout == "NMM1":
        nodes.append(helper.make_node("Transpose", [last], ["nhwc"], perm=[0, 2, 3, 1]))
        last = "nhwc"
    if out_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [last], ["cast"], to=out_type))
        last = "cast"
    nodes.append(helper.make_node("Identity", [last], [out_name]))
    outputs = [helper.make_tensor_value_info(out_name, out_type, shape)]
    if extra_output:
        nodes.append(helper.make_node("ReduceMax", ["sq"], ["pred_score"], keepdims=0))
        outputs.append(helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, None))
    inp = helper.make_tensor_value_info(in_name, TensorProto.FLOAT, in_shape or [batch, 3, S, S])
    graph = helper.make_graph(nodes, "foreign", [inp], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset >= 13 else 6
    onnx.save(model, str(path))
    return path


def run_original(path: Path, name_in: str, name_out: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run([name_out], {name_in: x[i:i + 1]})[0] for i in range(len(x))]) \
        if sess.get_inputs()[0].shape[0] == 1 else sess.run([name_out], {name_in: x})[0]


def wrap(tmp_path: Path, model: Path, *extra: str, out: str = "bundle") -> Path:
    dest = tmp_path / out
    assert main(["bundle", "new", "--onnx", str(model), "--out", str(dest), "--size", str(S), *extra]) == 0
    return dest


def test_fixed_batch_3d_output_wrapped_and_inspected(tmp_path, capsys):
    src = foreign_model(tmp_path / "efficientad_like.onnx", layout="NMM", batch=1)
    dest = wrap(tmp_path, src, "--window", "128", "--overlap", "0.5", "--name", "foreign")
    out = capsys.readouterr().out
    assert "fixed batch of 1" in out and "'input.1'" in out and "'scores'" in out
    bundle = Bundle.load(dest)
    assert bundle.model.max_batch == 1 and bundle.map_size == M and bundle.name == "foreign"
    assert bundle.provenance["source_output_layout"] == "NMM"
    assert bundle.provenance["source_model_sha256"] == sha256_file(src)

    # The bundle's model reproduces the original on every tile of a real frame, run tile by tile.
    frame = np.random.default_rng(3).integers(0, 256, (200, 260, 3), dtype=np.uint8)
    with pytest.warns(UserWarning, match="no calibration"):
        insp = Inspector(bundle, backend="ort-cpu")
    assert "fixed batch of 1" in insp.describe()["reason"]
    raw = insp._infer(frame, "rgb")
    assert raw.plan.num_tiles > 1
    tiles = tile_preprocessor(insp.preprocess_spec, raw.plan.tile_hw)(raw.plan.extract(frame))
    want = run_original(src, "input.1", "scores", tiles)
    np.testing.assert_array_equal(raw.tiles, want)

    # And the console script runs it end to end.
    cv2.imwrite(str(tmp_path / "frame.png"), frame[:, :, ::-1])
    rc = main(["inspect", "--bundle", str(dest), "--image", str(tmp_path / "frame.png"),
               "--out", str(tmp_path / "out"), "--backend", "ort-cpu", "--no-overlays"])
    assert rc == 0
    rec = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])
    assert rec["verdict"] in ("pass", "fail") and rec["scope"] == "rolling"
    assert (tmp_path / "out" / "masks" / "frame.png").is_file()


@pytest.mark.parametrize("layout, opset", [("N1MM", 17), ("NMM1", 17), ("NMM", 11)])
def test_dynamic_batch_layouts_reproduced(tmp_path, layout, opset):
    src = foreign_model(tmp_path / f"{layout}.onnx", layout=layout, batch="batch", in_name="x",
                        out_name="amap", extra_output=True, opset=opset)
    dest = wrap(tmp_path, src, "--output", "amap")
    bundle = Bundle.load(dest)
    assert bundle.model.max_batch is None
    x = np.random.default_rng(1).standard_normal((3, 3, S, S)).astype(np.float32)
    want = run_original(src, "x", "amap", x)
    if layout == "NMM1":
        want = want.transpose(0, 3, 1, 2)
    elif layout == "NMM":
        want = want[:, None]
    from sdk.backends import create_backend

    be = create_backend(str(bundle.model_path), input_size=S, map_size=M, backend="ort-cpu", bundle=bundle)
    np.testing.assert_array_equal(be.run(x), want[:, 0])


def test_bgr_model_gets_bgr_tiles(tmp_path):
    # Weights only on the first channel: a model that takes BGR sees blue there.
    src = foreign_model(tmp_path / "bgr.onnx", layout="N1MM", batch="N", weights=(1.0, 0.0, 0.0))
    dest = wrap(tmp_path, src, "--channel-order", "BGR", "--mean", "0", "0", "0", "--std", "1", "1", "1",
                "--window", "none")
    bundle = Bundle.load(dest)
    assert bundle.preprocess.channel_order == "BGR" and bundle.tiling == (None, 0.1)
    frame = np.zeros((S, S, 3), np.uint8)
    frame[..., 2] = 200  # blue in RGB order
    with pytest.warns(UserWarning):
        insp = Inspector(bundle, backend="ort-cpu")
    raw = insp._infer(frame, "rgb")
    np.testing.assert_allclose(raw.tiles, (200 / 255) ** 2, rtol=1e-6)
    frame[..., 2], frame[..., 0] = 0, 200  # red only: the model sees nothing
    np.testing.assert_array_equal(insp._infer(frame, "rgb").tiles, 0.0)


def test_show_and_verify(tmp_path, capsys):
    dest = wrap(tmp_path, foreign_model(tmp_path / "m.onnx", layout="NMM", batch=1))
    capsys.readouterr()
    assert main(["bundle", "show", str(dest)]) == 0
    text = capsys.readouterr().out
    assert "fixed batch 1" in text and "calibration    none" in text and "refiners       none" in text
    assert main(["bundle", "show", str(dest), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["anomaly_model"]["io"]["outputs"]["anomaly_map"][1] == [1, 1, M, M]
    assert main(["bundle", "verify", str(dest)]) == 0
    assert "run tile by tile" in capsys.readouterr().out
    # A changed model file fails the hash check: one line, exit status 2.
    with open(dest / "anomaly_model.onnx", "ab") as f:
        f.write(b"\0")
    assert main(["bundle", "verify", str(dest)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupted or was changed" in err[0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(in_shape=["N", 1, S, S]), "not image-like"),
    (dict(in_shape=["N", 3 * S * S]), "not image-like"),
    (dict(layout="wide", batch="N"), "square"),
    (dict(layout="N1MM", batch="N", out_type=TensorProto.INT64), "not a float map"),
])
def test_refusals(tmp_path, capsys, kwargs, message):
    if kwargs.get("in_shape") == ["N", 3 * S * S]:
        # a flat input: build a graph that takes a vector
        x = helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["N", 3 * S * S])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3 * S * S])
        g = helper.make_graph([helper.make_node("Relu", ["flat"], ["y"])], "flat", [x], [y])
        src = tmp_path / "flat.onnx"
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    else:
        src = foreign_model(tmp_path / "bad.onnx", **kwargs)
    rc = main(["bundle", "new", "--onnx", str(src), "--out", str(tmp_path / "b"), "--size", str(S)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "b" / "bundle.json").exists()


def test_refusals_of_names_and_sizes(tmp_path):
    from sdk.bundle.wrap import wrap_onnx

    src = foreign_model(tmp_path / "m.onnx", layout="NMM", batch="N", extra_output=True)
    with pytest.raises(InputError, match="say which with --output"):
        wrap_onnx(src, tmp_path / "a", S, log=lambda m: None)
    with pytest.raises(InputError, match="no output named 'nope'"):
        wrap_onnx(src, tmp_path / "b", S, output_name="nope", log=lambda m: None)
    with pytest.raises(InputError, match="does not take --size 32"):
        wrap_onnx(src, tmp_path / "c", 32, output_name="scores", log=lambda m: None)
    with pytest.raises(InputError, match="no such ONNX file"):
        wrap_onnx(tmp_path / "missing.onnx", tmp_path / "d", S, log=lambda m: None)


def test_bundle_command_definitions_import_no_numpy():
    import subprocess
    import sys

    code = ("import sys, argparse; import sdk.bundle.cli as c; p = argparse.ArgumentParser(); "
            "c.register(p.add_subparsers(dest='c')); "
            "a = p.parse_args(['bundle', 'new', '--onnx', 'm', '--out', 'o', '--size', '4', "
            "'--window', 'none']); "
            "assert a.window is None and a.channel_order == 'RGB'; "
            "print([m for m in ('numpy', 'cv2', 'onnxruntime', 'onnx') if m in sys.modules])")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_fixed_batch_engine_plan(tmp_path):
    """`robis-edge build` plans a fixed-batch model's TensorRT profile at exactly that batch."""
    from sdk.engines.tensorrt.plan import model_plans

    f = foreign_model(tmp_path / "f.onnx", layout="NMM", batch=1)
    d = foreign_model(tmp_path / "d.onnx", layout="NMM", batch="N")
    fixed = Bundle.load(wrap(tmp_path, f, "--window", "128", out="fixed"))
    dynamic = Bundle.load(wrap(tmp_path, d, "--window", "128", out="dynamic"))
    one = (1, 3, S, S)
    assert model_plans(fixed, frame_hw=(300, 300))[0].shapes["image"] == (one, one, one)
    lo, opt, hi = model_plans(dynamic, frame_hw=(300, 300))[0].shapes["image"]
    assert lo == one and opt == hi and hi[0] == 9  # 3×3 tiles of 128 with overlap 0.1
