"""Shared fixtures: small ONNX anomaly models built here with onnx.helper (not by project code),
bundles around them, and the location of ../shared."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is not available")
    return p


def build_blockmean_model(path: Path, size: int, map_size: int, channel: int = 0,
                          batch: int | str = "N", out_name: str = "anomaly_map") -> None:
    """anomaly_map = block mean (size/map_size)² of input channel ``channel``: a model whose output
    a test can compute by hand."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    k = size // map_size
    w = np.zeros((1, 3, 1, 1), np.float32)
    w[0, channel] = 1.0
    g = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["c"]),
         helper.make_node("AveragePool", ["c"], [out_name], kernel_shape=[k, k], strides=[k, k])],
        "blockmean",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch, 1, map_size, map_size])],
        [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def run_command(argv: list[str]) -> int:
    """One ``robis-edge`` command through the console script's own parser
    (``edge_runtime.cli.build_parser``); robis-edge errors propagate, where ``edge_runtime.cli.main``
    would print them and return 2."""
    from edge_runtime.cli import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args)


@pytest.fixture
def make_bundle(tmp_path):
    """Factory: a bundle around a block-mean model; tiling window 64 (overlap 0.25: integral
    quarter-scale placements), model size 32, map 16 unless told otherwise."""
    from sdk import create_bundle
    from sdk.bundle import PreprocessSpec, VerdictSpec

    def make(name="t", size=32, map_size=16, window=64, overlap=0.25, batch="N", verdict=None,
             channel=0, **kw):
        root = tmp_path / name
        root.mkdir()
        build_blockmean_model(root / "m.onnx", size, map_size, channel=channel, batch=batch)
        return create_bundle(root, name, "m.onnx", map_size, preprocess=PreprocessSpec(size=size),
                             window=window, overlap=overlap, verdict=verdict or VerdictSpec(), **kw)

    return make


@pytest.fixture
def demo_bundle(tmp_path):
    """A copy of the committed demo bundle."""
    src = Path(__file__).resolve().parents[1] / "examples" / "demo-bundle"
    if not (src / "bundle.json").exists():
        pytest.fail("examples/demo-bundle is missing: run examples/build_demo_bundle.py")
    dst = tmp_path / "demo-bundle"
    shutil.copytree(src, dst)
    return dst
