"""Build the committed demo bundle (examples/demo-bundle): a small classical anomaly model
exported with onnx.helper, calibrated on synthetic frames.

The model follows the bundle contract (``image`` N×3×S×S normalised → ``anomaly_map``
N×1×M×M): it undoes the ImageNet normalisation to gray, subtracts a local background
(31×31 mean), takes the absolute difference and smooths it. It is a stand-in detector for
the CPU demo until a trained INP-Former bundle is exported with ``robis-edge export``.

Run: ``.venv/bin/python examples/build_demo_bundle.py`` (needs the dev extra: onnx).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

SIZE, MAP, WINDOW, OVERLAP = 256, 128, 512, 0.1


def build_model(path: Path, size: int = SIZE, map_size: int = MAP) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from sdk.bundle import IMAGENET_MEAN, IMAGENET_STD

    std, mean = np.array(IMAGENET_STD, np.float32), np.array(IMAGENET_MEAN, np.float32)
    w_gray = (std / 3.0).reshape(1, 3, 1, 1).astype(np.float32)
    b_gray = np.array([mean.sum() / 3.0], np.float32)
    stride = size // map_size
    inits = [numpy_helper.from_array(w_gray, "w_gray"), numpy_helper.from_array(b_gray, "b_gray")]
    nodes = [
        helper.make_node("Conv", ["image", "w_gray", "b_gray"], ["gray"]),
        helper.make_node("AveragePool", ["gray"], ["background"], kernel_shape=[31, 31],
                         pads=[15, 15, 15, 15], count_include_pad=0),
        helper.make_node("Sub", ["gray", "background"], ["diff"]),
        helper.make_node("Abs", ["diff"], ["absdiff"]),
        helper.make_node("AveragePool", ["absdiff"], ["smooth"], kernel_shape=[5, 5], pads=[2, 2, 2, 2],
                         count_include_pad=0),
        helper.make_node("AveragePool", ["smooth"], ["anomaly_map"], kernel_shape=[stride, stride],
                         strides=[stride, stride]),
    ]
    graph = helper.make_graph(
        nodes, "robis_demo_local_contrast",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["N", 1, map_size, map_size])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="robis-edge examples/build_demo_bundle.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sdk import Inspector, create_bundle
    from sdk.bundle import PreprocessSpec, VerdictSpec
    from sdk.engines.reference import write_reference_tiles
    from sdk.tools.synthetic import make_frames

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "demo-bundle")
    ap.add_argument("--calibration-frames", type=int, default=24)
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    build_model(args.out / "model.onnx")
    bundle = create_bundle(args.out, "demo-surface", "model.onnx", MAP,
                           preprocess=PreprocessSpec(size=SIZE), window=WINDOW, overlap=OVERLAP,
                           verdict=VerdictSpec(min_area_px=100),
                           provenance={"builder": "examples/build_demo_bundle.py",
                                       "model": "classical local-contrast detector (demo only)"})
    # Calibrate like §5.3 asks: a production-like mix, defective frames included.
    frames = make_frames(args.calibration_frames, defect_rate=0.5, seed=1000)
    cal, tiles = Inspector(bundle, scope="rolling").calibrate_with_reference(
        [f.image for f in frames], ["gray"] * len(frames), source="sdk.tools.synthetic seed 1000",
        n_defective=sum(f.defective for f in frames), progress=True)
    bundle.set_calibration(cal)
    # reference tiles for the TensorRT parity gate (`robis-edge build`), and the camera's frame size
    write_reference_tiles(bundle, tiles, "sdk.tools.synthetic seed 1000 (calibration frames)")
    bundle.set_frame_hw(frames[0].image.shape[:2])
    bundle.save()
    print(f"demo bundle written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
