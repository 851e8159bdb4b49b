"""A random-weight RoBiS model (INP-Former ViT-B/14 at 518, preset ``dinov2reg_vit_base_14``)
exported to ONNX with export/inpformer and wrapped in a calibrated bundle with reference tiles.

Used by benchmarks/bench_backends.py and the slow OpenVINO tests; the ONNX export is cached in a
directory so that several runs share it.

    python benchmarks/vitb_bundle.py --out /tmp/robis-vitb
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def random_upstream_state_dict(arch, seed: int = 0) -> dict:
    """Every upstream key with random values scaled so activations stay in a realistic range."""
    import torch

    from export.inpformer.checkpoint import upstream_key_shapes

    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shp in upstream_key_shapes(arch, 37).items():
        r = torch.randn(shp, generator=gen)
        if k.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            v = 1 + 0.1 * r
        elif k.endswith("gamma"):
            v = 0.1 * r
        elif k.endswith("learn_scale"):
            v = 1 + 0.2 * r
        elif k == "prototype_token":
            v = r
        elif k in ("encoder.cls_token", "encoder.pos_embed", "encoder.register_tokens", "encoder.mask_token"):
            v = 0.5 * r
        else:
            v = 0.02 * r
        sd[k] = v
    return sd


def vitb_model(seed: int = 0):
    """The torch INP-Former ViT-B/518 with random weights (eval mode)."""
    from export.inpformer.arch import preset
    from export.inpformer.model import INPFormer

    arch = preset("dinov2reg_vit_base_14")
    return INPFormer.from_upstream(random_upstream_state_dict(arch, seed), arch)


def vitb_bundle(out: str | Path, seed: int = 0, calib_frames: int = 4, frame_hw=(2048, 2448)):
    """The bundle at ``out`` (made once): ONNX export, calibration on synthetic frames (which also
    stores 4 reference tiles). Returns the loaded bundle."""
    from sdk import Bundle, Inspector, create_bundle
    from sdk.bundle import VerdictSpec
    from sdk.engines.reference import choose_tiles, cut_tiles, write_reference_tiles
    from sdk.geometry import TilingPlan
    from sdk.preprocess import TilePreprocessor
    from sdk.tools.synthetic import make_frames

    out = Path(out)
    if (out / "bundle.json").is_file():
        return Bundle.load(out)
    from export.inpformer.onnx_export import export_onnx

    out.mkdir(parents=True, exist_ok=True)
    export_onnx(vitb_model(seed), out / "anomaly_model.onnx", tolerance=1e-4, check_batch=1)
    bundle = create_bundle(out, "vitb-random", "anomaly_model.onnx", 256, window=1024, overlap=0.1,
                           verdict=VerdictSpec(min_area_px=100))
    frames = [f.image for f in make_frames(calib_frames, frame_hw[0], frame_hw[1], seed=11)]
    insp = Inspector(bundle, backend="ort-cpu", scope="rolling", threads=2)
    # Calibration from whole frames is 9 tiles each; keep it to a few frames on slow CPUs.
    bundle.set_calibration(insp.calibrate(frames, ["gray"] * len(frames)))
    tiles = []
    for f in frames[:2]:
        tiles.extend(cut_tiles(f, TilingPlan(f.shape[0], f.shape[1], 1024, 0.1), 518))
    pre = TilePreprocessor(bundle.preprocess, tiles[0].shape[:2])
    scores = [float(insp.backend.run(pre(t[None])).max()) for t in tiles]
    write_reference_tiles(bundle, [tiles[i] for i in choose_tiles(scores, 4)], "synthetic frames seed 11")
    bundle.save()
    return Bundle.load(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    b = vitb_bundle(ap.parse_args().out)
    print(b.root, b.model.file)
