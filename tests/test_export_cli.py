"""`robis-edge export inpformer` end to end on the golden upstream checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_path

from edge_runtime.cli import main

pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")


def test_export_golden_checkpoint_to_bundle(tmp_path, capsys):
    g = shared_path("golden", "inpformer_tiny")
    out = tmp_path / "tiny"
    from sdk.imageio import write_png
    from sdk.tools.synthetic import make_frames

    for f in make_frames(2, defect_rate=0.5, seed=4):
        write_png(tmp_path / "ref" / f"{f.name}.png", f.image)
    rc = main(["export", "inpformer", "--checkpoint", str(g / "model.pth"), "--arch", str(g / "config.json"),
               "--out", str(out), "--name", "tiny", "--window", "196",
               "--reference-images", str(tmp_path / "ref")])
    assert rc == 0
    log = capsys.readouterr().out
    assert "[1/3]" in log and "max |ORT - torch|" in log
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["format"] == "robis-bundle/1" and meta["name"] == "tiny"
    assert meta["anomaly_model"]["map_size"] == 256 and meta["preprocess"]["size"] == 98
    assert meta["tiling"] == {"window": 196, "overlap": 0.1}
    prov = meta["provenance"]
    import hashlib

    assert prov["source_checkpoint_sha256"] == hashlib.sha256((g / "model.pth").read_bytes()).hexdigest()
    assert {"torch", "onnx", "opset", "exporter"} <= set(prov)
    # reference tiles for the TensorRT parity gate, listed with their sha256
    from sdk import Bundle
    from sdk.engines.reference import load_reference_tiles

    tiles, _ = load_reference_tiles(Bundle.load(out))
    assert len(tiles) == 4 and all(t.shape[:2] == (196, 196) for t in tiles)
    # The bundle's ONNX model reproduces the upstream code's anomaly map.
    sess = ort.InferenceSession(str(out / meta["anomaly_model"]["file"]), providers=["CPUExecutionProvider"])
    x = np.load(g / "input.npy").astype(np.float32)
    got = sess.run(["anomaly_map"], {"image": x})[0]
    assert np.max(np.abs(got - np.load(g / "amap256.npy"))) < 1e-5
    # And the SDK runs the bundle on a frame.
    from sdk import Inspector

    with pytest.warns(UserWarning, match="no calibration"):
        insp = Inspector(out, backend="ort-cpu")
    res = insp.inspect(np.random.default_rng(0).integers(0, 255, (300, 250), dtype=np.uint8))
    assert res.anomaly_map.shape == (int(300 * 256 / 196), int(250 * 256 / 196))


def test_export_errors_are_one_clear_line(tmp_path, capsys):
    g = shared_path("golden", "inpformer_tiny")
    rc = main(["export", "inpformer", "--checkpoint", str(g / "model.pth"), "--preset",
               "dinov2reg_vit_base_14", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2 and "robis-edge export: error:" in err and "embed_dim" in err
    rc = main(["export", "inpformer", "--checkpoint", str(tmp_path / "nope.pth"), "--preset",
               "dinov2reg_vit_base_14", "--out", str(tmp_path / "b")])
    assert rc == 2 and "no such checkpoint" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    rc = main(["export", "inpformer", "--checkpoint", str(g / "model.pth"), "--arch", str(g / "config.json"),
               "--out", str(tmp_path / "full")])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "full" / "x").read_text() == "keep me"
