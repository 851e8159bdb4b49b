"""The TTT4AS refiner (sdk/refine/ttt.py) against its dense oracle (tests/oracles.py), on its own and
inside the Inspector with a model that has a features output."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest

pytest.importorskip("sklearn")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402
from oracles import ttt_oracle  # noqa: E402

from sdk import Bundle, Inspector  # noqa: E402
from sdk.bundle import TttRefineSpec, create_bundle  # noqa: E402
from sdk.bundle.schema import PreprocessSpec  # noqa: E402
from sdk.errors import BundleError, InputError  # noqa: E402
from sdk.geometry import TilingPlan  # noqa: E402
from sdk.refine.ttt import TttRefiner, pseudo_labels  # noqa: E402

SPEC = TttRefineSpec()


@pytest.mark.parametrize("h, w, window, g, scale", [(1000, 1300, 512, 16, None), (700, 900, 256, 7, 0.3),
                                                    (300, 500, None, 9, 0.5)])
def test_sample_equals_merge(h, w, window, g, scale):
    plan = TilingPlan(h, w, window, 0.1)
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((plan.num_tiles, 5, g, g)).astype(np.float32)
    scale = scale if scale is not None else 128 / window
    dense = np.stack([plan.merge(feats[:, k], scale) for k in range(5)], axis=-1)
    ys = rng.integers(0, dense.shape[0], 400)
    xs = rng.integers(0, dense.shape[1], 400)
    np.testing.assert_array_equal(plan.sample(feats, ys, xs, scale), dense[ys, xs])


def _scene(seed: int = 0, h: int = 120, w: int = 160, g: int = 12, c: int = 6):
    """One 120×160 map (a single tile of 160, map scale 1): a small square defect the features
    know exactly, and a score map that is a wide blur of it (the too-wide coarse mask)."""
    import cv2

    rng = np.random.default_rng(seed)
    plan = TilingPlan(h, w, None, 0.1)  # untiled, non-square: merge stretches the g×g map
    truth = np.zeros((h, w), bool)
    truth[50:62, 70:84] = True
    feats = rng.standard_normal((1, c, g, g)).astype(np.float32) * 0.3
    # channel 0 rises where the defect is, at the feature grid
    small = cv2.resize(truth.astype(np.float32), (g, g), interpolation=cv2.INTER_AREA)
    feats[0, 0] += 4.0 * small
    score = cv2.GaussianBlur(truth.astype(np.float32) * 255, (0, 0), 12)
    score = (score / score.max() * 255 + rng.random((h, w)) * 2).astype(np.float32)
    coarse = np.where(score > 0.3 * score.max(), 255, 0).astype(np.uint8)
    return plan, feats, score, coarse, truth


def test_pseudo_labels_match_the_oracle():
    plan, feats, score, coarse, _ = _scene()
    for spec in (SPEC, replace(SPEC, percentile=95.0, hard_radius=0, nominal_stride=5)):
        pos, neg = pseudo_labels(score, spec)
        ref = ttt_oracle(score, plan, feats, 1.0, spec)
        assert pos.size and neg.size
        np.testing.assert_array_equal(pos, np.flatnonzero(ref["anomalous"]))
        np.testing.assert_array_equal(neg, np.flatnonzero(ref["nominal"]))


@pytest.mark.parametrize("seed, spec", [
    (0, SPEC), (1, SPEC), (2, replace(SPEC, normalize="l2")),
    (3, replace(SPEC, within_coarse=True, percentile=99.5, hard_radius=0, class_weight="none", svm_c=0.1))])
def test_refine_matches_the_dense_oracle(seed, spec):
    plan, feats, score, coarse, _ = _scene(seed)
    mask, timings = TttRefiner(spec).refine(score, coarse, plan, feats, 1.0)
    ref = ttt_oracle(score, plan, feats, 1.0, spec, coarse)
    sure = np.abs(ref["decision"]) > 1e-4
    assert sure.mean() > 0.99
    np.testing.assert_array_equal(mask[sure], ref["mask"][sure])
    assert timings["ttt_fit"] > 0 and set(timings) == {"ttt_labels", "ttt_fit", "ttt_predict"}


def test_refine_sharpens_a_wide_mask():
    plan, feats, score, coarse, truth = _scene()

    def f1(mask):
        m = mask > 0
        tp = np.count_nonzero(m & truth)
        return 2 * tp / (np.count_nonzero(m) + np.count_nonzero(truth))

    mask, _ = TttRefiner(SPEC).refine(score, coarse, plan, feats, 1.0)
    # the features live on a 12×12 grid stretched over 120×160: their edges are 10-13 px blurry
    assert f1(coarse) < 0.3 and f1(mask) > 0.65, (f1(coarse), f1(mask))


def test_empty_mask_costs_nothing():
    plan, feats, score, _, _ = _scene()
    empty = np.zeros_like(score, np.uint8)
    mask, timings = TttRefiner(SPEC).refine(score, empty, plan, feats, 1.0)
    assert mask is empty and not any(timings.values())


# -- inside the Inspector ------------------------------------------------------------------------
S, M, G = 64, 32, 8


def model_with_features(path):
    """image → anomaly_map = (pooled channel 0)² at M, features = the channels pooled to G."""
    nodes = [helper.make_node("AveragePool", ["image"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Slice", ["p", "s0", "s1", "ax"], ["c0"]),
             helper.make_node("Mul", ["c0", "c0"], ["anomaly_map"]),
             helper.make_node("AveragePool", ["image"], ["features"], kernel_shape=[8, 8], strides=[8, 8])]
    inits = [helper.make_tensor("s0", TensorProto.INT64, [1], [0]),
             helper.make_tensor("s1", TensorProto.INT64, [1], [1]),
             helper.make_tensor("ax", TensorProto.INT64, [1], [1])]
    g = helper.make_graph(nodes, "with_features",
                          [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, S, S])],
                          [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["N", 1, M, M]),
                           helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3, G, G])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


@pytest.fixture()
def ttt_bundle(tmp_path):
    model_with_features(tmp_path / "model.onnx")
    b = create_bundle(tmp_path, "ttt-demo", "model.onnx", M, window=S, overlap=0.25,
                      preprocess=PreprocessSpec(size=S, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))
    b.set_model_fields(features="features")
    b.set_ttt({**asdict(SPEC), "percentile": 98.0, "nominal_stride": 4})
    b.save()
    return Bundle.load(tmp_path)


def _frame(seed: int = 0):
    rng = np.random.default_rng(seed)
    frame = (rng.random((150, 200, 3)) * 40 + 20).astype(np.uint8)
    frame[60:76, 90:110] = 230
    return frame


def test_inspector_runs_ttt_as_the_bundle_says(ttt_bundle):
    frame = _frame()
    with pytest.warns(UserWarning):
        plain = Inspector(ttt_bundle, backend="ort-cpu", refine="none")
    with pytest.warns(UserWarning):
        insp = Inspector(ttt_bundle, backend="ort-cpu")
    assert insp.refine_mode == "ttt" and plain.refine_mode == "none"
    assert insp.describe()["refine"]["percentile"] == 98.0
    r0, r1 = plain.inspect(frame, "rgb"), insp.inspect(frame, "rgb")
    assert r0.mask.any()
    assert "ttt_fit" in r1.timings_ms and r1.timings_ms["refine"] > 0 and "ttt_fit" not in r0.timings_ms
    np.testing.assert_array_equal(r0.anomaly_map, r1.anomaly_map)  # the map path is untouched
    raw = insp._infer(frame, "rgb")
    spec = ttt_bundle.ttt
    unclipped = raw.plan.merge(raw.tiles)  # the pseudo-labels come from the raw merged map
    ref = ttt_oracle(unclipped, raw.plan, raw.features, r1.map_scale, spec, r0.mask)
    sure = np.abs(ref["decision"]) > 1e-4
    assert sure.mean() > 0.99
    np.testing.assert_array_equal(r1.mask[sure], ref["mask"][sure])
    # here the coarse mask is a 6×6-eroded core of the bright square; TTT recovers the square
    truth = np.zeros_like(r1.mask, bool)
    truth[30:38, 45:55] = True  # frame rows 60:76, columns 90:110 at the map scale 1/2
    assert r1.map_scale == 0.5
    assert np.count_nonzero((r1.mask > 0) & truth) >= 0.9 * truth.sum() > np.count_nonzero(r0.mask)


def test_frames_the_coarse_mask_passes_cost_nothing(ttt_bundle):
    ttt_bundle.set_verdict(min_area_px=10**6)  # no region is large enough to fail the part
    with pytest.warns(UserWarning):
        r = Inspector(ttt_bundle, backend="ort-cpu").inspect(_frame(), "rgb")
    assert r.verdict == "pass" and r.mask.any() and "ttt_fit" not in r.timings_ms


def test_refine_choices_and_refusals(ttt_bundle, tmp_path):
    with pytest.warns(UserWarning):
        assert Inspector(ttt_bundle, backend="ort-cpu", refine="ttt").ttt is not None
    with pytest.raises(InputError, match="no active refine.sam"):
        Inspector(ttt_bundle, backend="ort-cpu", refine="sam")
    with pytest.raises(InputError, match="refine must be one of"):
        Inspector(ttt_bundle, backend="ort-cpu", refine="fancy")
    # A bundle without features: TTT is refused with what to do; refine.ttt cannot be added.
    raw = ttt_bundle.to_json()
    del raw["anomaly_model"]["features"], raw["refine"]
    (tmp_path / "bundle.json").write_text(json.dumps(raw))
    plain = Bundle.load(tmp_path)
    with pytest.raises(InputError, match="--features"):
        Inspector(plain, backend="ort-cpu", refine="ttt")
    with pytest.raises(BundleError, match="features"):
        plain.set_ttt(asdict(SPEC))
    raw["refine"] = {"ttt": asdict(SPEC)}
    (tmp_path / "bundle.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="anomaly_model.features"):
        Bundle.load(tmp_path)


def test_ttt_section_is_checked(ttt_bundle):
    with pytest.raises(BundleError, match="refine.ttt.percentile"):
        ttt_bundle.set_ttt({"percentile": 100.0})
    with pytest.raises(BundleError, match="refine.ttt.class_weight"):
        ttt_bundle.set_ttt({"class_weight": "auto"})
    assert ttt_bundle.ttt.percentile == 98.0  # unchanged after the refusals


def test_inspect_cli_refine(ttt_bundle, tmp_path, capsys):
    import cv2

    from edge_runtime.cli import main

    cv2.imwrite(str(tmp_path / "f.png"), _frame()[:, :, ::-1])
    for mode in ("none", "ttt"):
        assert main(["inspect", "--bundle", str(ttt_bundle.root), "--image", str(tmp_path / "f.png"),
                     "--out", str(tmp_path / mode), "--backend", "ort-cpu", "--no-overlays",
                     "--refine", mode]) == 0
    rec = {m: json.loads((tmp_path / m / "results.jsonl").read_text()) for m in ("none", "ttt")}
    assert "ttt_fit" in rec["ttt"]["timings_ms"] and "ttt_fit" not in rec["none"]["timings_ms"]
    capsys.readouterr()
    assert main(["inspect", "--bundle", str(ttt_bundle.root), "--image", str(tmp_path / "f.png"),
                 "--out", str(tmp_path / "x"), "--refine", "sam"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refine.sam" in err[0]


def test_verdict_from(ttt_bundle):
    frame = _frame()
    with pytest.warns(UserWarning):
        coarse = Inspector(ttt_bundle, backend="ort-cpu", refine="none").inspect(frame, "rgb")
    for verdict_from in ("refined", "coarse"):
        ttt_bundle.set_ttt({**ttt_bundle.to_json()["refine"]["ttt"], "verdict_from": verdict_from})
        with pytest.warns(UserWarning):
            r = Inspector(ttt_bundle, backend="ort-cpu").inspect(frame, "rgb")
        assert r.verdict == coarse.verdict == "fail" and "ttt_fit" in r.timings_ms
        assert r.reason.startswith("coarse mask: ") == (verdict_from == "coarse"), r.reason
        assert r.regions and r.mask.tolist() != coarse.mask.tolist()


def test_serve_takes_refine(ttt_bundle):
    import argparse

    from edge_runtime import commands
    from edge_runtime.bundles import load_bundles

    p = argparse.ArgumentParser()
    commands.register(p.add_subparsers(dest="c"))
    assert p.parse_args(["serve", "--bundle", "x", "--refine", "none"]).refine == "none"
    assert p.parse_args(["serve", "--bundle", "x"]).refine is None
    for refine, mode in ((None, "ttt"), ("none", "none"), ("ttt", "ttt")):
        entries = load_bundles([(None, str(ttt_bundle.root))], "ort-cpu", 1, None, refine)
        assert entries["ttt-demo"].inspector.refine_mode == mode
