"""Inspector end to end against a straightforward pipeline written here, plus bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from oracles import binarize_batch_oracle, level_counts_oracle, stable_end_oracle

from sdk import BundleError, CalibrationError, InputError, Inspector
from sdk.bundle import Bundle, VerdictSpec
from sdk.postprocess.stats import BinStats, Calibration, NormStats

PIL = pytest.importorskip("PIL.Image")
ort = pytest.importorskip("onnxruntime")


def oracle_raw(frame: np.ndarray, color: str, bundle: Bundle) -> tuple[list[np.ndarray], tuple]:
    """Tiles → PIL resize → ToTensor/Normalize → the bundle's model, one tile at a time."""
    f = frame >> 8 if frame.dtype == np.uint16 else frame
    f = f.astype(np.uint8)
    rgb = np.dstack([f] * 3) if color == "gray" else (f[..., ::-1] if color == "bgr" else f)
    window, overlap = bundle.tiling
    step = int(window * (1 - overlap))
    h, w = rgb.shape[:2]
    ny = 1 if h <= window else math.ceil((h - window) / step) + 1
    nx = 1 if w <= window else math.ceil((w - window) / step) + 1
    spec = bundle.preprocess
    sess = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    maps = []
    for iy in range(ny):
        for ix in range(nx):
            tile = np.zeros((window, window, 3), np.uint8)
            part = rgb[iy * step:iy * step + window, ix * step:ix * step + window]
            tile[:part.shape[0], :part.shape[1]] = part
            small = np.asarray(PIL.fromarray(tile).resize((spec.size, spec.size), PIL.BILINEAR))
            x = small.astype(np.float32) / np.float32(255.0)
            x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
            x = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
            maps.append(sess.run(["anomaly_map"], {"image": x})[0][0, 0])
    return maps, (ny, nx, step)


def oracle_merge(maps: list[np.ndarray], grid: tuple, frame_hw: tuple, window: int, m: int) -> np.ndarray:
    """Plain sum/count placement; valid where ``step * m / window`` is an integer."""
    ny, nx, step = grid
    q = step * m // window
    assert q * window == step * m, "the test geometry must have integral placements"
    oh, ow = int(frame_hw[0] * m / window), int(frame_hw[1] * m / window)
    acc = np.zeros((oh + m * 2, ow + m * 2), np.float32)
    cnt = np.zeros_like(acc)
    for i, t in enumerate(maps):
        iy, ix = divmod(i, nx)
        acc[iy * q:iy * q + m, ix * q:ix * q + m] += t
        cnt[iy * q:iy * q + m, ix * q:ix * q + m] += 1
    return acc[:oh, :ow] / cnt[:oh, :ow]


def smooth_frame(rng, h, w, channels=None, dtype=np.uint8):
    """Smooth noise with one bright disc of random brightness (frames differ in their maximum)."""
    import cv2

    base = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 3)
    base = (base - base.min()) / (base.max() - base.min() + 1e-9)
    cv2.circle(base, (w // 3, h // 2), min(h, w) // 6, float(rng.uniform(1.05, 1.4)), -1)
    img = np.clip(base * 150 + 40, 0, 255)
    if dtype == np.uint16:
        img = img * 257
    img = img.astype(dtype)
    if channels:
        img = np.dstack([img, np.roll(img, 3, 1), np.roll(img, 5, 0)][:channels])
    return img


@pytest.mark.parametrize("color,channels,dtype,hw", [
    ("gray", None, np.uint8, (150, 130)),
    ("bgr", 3, np.uint8, (100, 170)),
    ("rgb", 3, np.uint16, (64, 64)),
    ("gray", None, np.uint8, (40, 50)),  # smaller than a window: one padded tile
])
def test_inspect_matches_straightforward_pipeline(make_bundle, color, channels, dtype, hw):
    rng = np.random.default_rng(hash((color, hw)) % 2**32)
    bundle = make_bundle()
    calib_frames = [smooth_frame(rng, *hw, channels, dtype) for _ in range(4)]
    insp = Inspector(bundle, backend="ort-cpu", scope="rolling")
    cal = insp.calibrate(calib_frames, [color] * 4)
    bundle.set_calibration(cal)
    insp = Inspector(bundle, backend="ort-cpu")
    assert insp.scope == "calibrated"
    frame = smooth_frame(rng, *hw, channels, dtype)
    res = insp.inspect(frame, color)

    raw, grid = oracle_raw(frame, color, bundle)
    norm = [np.clip((t - np.float32(cal.norm.amap_min)) / (np.float32(cal.norm.amap_max)
            - np.float32(cal.norm.amap_min) + np.float32(1e-8)) * np.float32(255), 0, 255) for t in raw]
    merged = oracle_merge(norm, grid, hw, 64, 16)
    assert np.array_equal(res.anomaly_map, merged)
    m16 = merged.astype(np.float16)
    lo, hi = np.float16(cal.bins.mebin_min_th), np.float16(cal.bins.mebin_max_th)
    end = stable_end_oracle(level_counts_oracle(m16, lo, hi), 4) if hi > lo else None
    import cv2

    k = np.ones((6, 6), np.uint8)
    t_ms = (np.float32(cal.bins.ms_mean) + np.float32(3) * np.float32(cal.bins.ms_std)) * np.float32(255)
    mask = cv2.erode((m16 > t_ms).astype(np.uint8), k)
    if end is not None:
        thr = int((255 - end * 4) * (hi - lo) / 255 + lo)
        mask |= cv2.erode((m16 > thr).astype(np.uint8), k)
    assert np.array_equal(res.mask, mask * 255)
    assert res.frame_hw == hw and res.map_scale == 0.25
    assert set(res.timings_ms) >= {"preprocess", "infer", "merge", "binarize", "total"}


def test_batch_scope_equals_robis_binarisation(make_bundle):
    """inspect_batch(scope='batch') = RoBiS over the set: one min/max, then MEBin ∪ mean+3std."""
    rng = np.random.default_rng(3)
    bundle = make_bundle()
    frames = [smooth_frame(rng, 150, 130) for _ in range(5)]
    insp = Inspector(bundle, backend="ort-cpu", scope="rolling")
    results = insp.inspect_batch(frames, ["gray"] * 5, scope="batch")
    raws = [oracle_raw(f, "gray", bundle)[0] for f in frames]
    lo = min(float(np.min(t)) for r in raws for t in r)
    hi = max(float(np.max(t)) for r in raws for t in r)
    grid = oracle_raw(frames[0], "gray", bundle)[1]
    merged = [oracle_merge([(t - np.float32(lo)) / (np.float32(hi) - np.float32(lo) + np.float32(1e-8))
                            * np.float32(255) for t in r], grid, (150, 130), 64, 16) for r in raws]
    masks, thresholds, (lo16, hi16), _ = binarize_batch_oracle([m.astype(np.float16) for m in merged])
    assert hi16 > lo16 and any(t != 255 for t in thresholds)  # MEBin really ran
    for res, m, mk in zip(results, merged, masks):
        assert res.scope == "batch"
        np.testing.assert_allclose(res.anomaly_map, m, atol=1e-4)
        assert np.array_equal(res.mask, mk)


def test_rolling_scope_and_verdict(make_bundle):
    rng = np.random.default_rng(5)
    bundle = make_bundle(verdict=VerdictSpec(min_area_px=0))
    insp = Inspector(bundle, backend="ort-cpu", scope="rolling", rolling_window=3)
    for _ in range(5):
        res = insp.inspect(smooth_frame(rng, 150, 130), "gray")
        assert res.scope == "rolling" and res.verdict in ("pass", "fail")
        assert (res.verdict == "fail") == bool(res.regions)
    assert len(insp._rolling) == 3
    with pytest.raises(InputError, match="runs scope 'rolling'"):
        insp.inspect_batch([np.zeros((70, 70), np.uint8)], scope="calibrated")


def test_regions_in_frame_pixels_roi_and_score_threshold(make_bundle):
    bundle = make_bundle()
    cal = Calibration(NormStats(-3.0, 3.0), BinStats(100.0, 200.0, 0.5, 0.01), 1)
    bundle.set_calibration(cal)
    frame = np.full((128, 128), 20, np.uint8)
    frame[64:96, 16:48] = 250  # a bright square: high channel-0 values
    res = Inspector(bundle, backend="ort-cpu").inspect(frame)
    assert res.verdict == "fail" and len(res.regions) == 1
    # Square at frame x 16..47, y 64..95 → map (1/4) x 4..11, y 16..23; the 6×6 erosion (anchor 3)
    # trims 3 map pixels top/left and 2 bottom/right → x 7..9, y 19..21 → frame bbox below.
    assert res.regions[0].bbox == (28, 76, 40, 88)
    assert res.regions[0].area_px == 9 * 16 and res.regions[0].max <= res.score
    bundle._raw["verdict"]["roi"] = [64, 0, 128, 128]  # right half only: the defect is outside
    res = Inspector(bundle, backend="ort-cpu").inspect(frame)
    assert res.verdict == "pass" and res.regions == []
    bundle._raw["verdict"]["score_threshold"] = 0.0
    res = Inspector(bundle, backend="ort-cpu").inspect(frame)
    assert res.verdict == "fail" and "score" in res.reason


def test_mask_scale_full_resolution(make_bundle):
    bundle = make_bundle()
    bundle.set_calibration(Calibration(NormStats(-3.0, 3.0), BinStats(100.0, 200.0, 0.5, 0.01), 1))
    frame = np.full((130, 150), 20, np.uint8)
    frame[60:90, 20:50] = 250
    res = Inspector(bundle, backend="ort-cpu", mask_scale=1.0).inspect(frame)
    assert res.mask.shape == (130, 150) and res.mask_scale == 1.0 and res.mask.max() == 255


def test_fixed_batch_model_runs_in_chunks(make_bundle):
    bundle = make_bundle(batch=1)
    bundle.set_calibration(Calibration(NormStats(-3.0, 3.0), BinStats(100.0, 200.0, 0.5, 0.01), 1))
    res = Inspector(bundle, backend="ort-cpu").inspect(np.zeros((150, 130), np.uint8))
    assert res.anomaly_map.shape == (37, 32)


@pytest.mark.parametrize("frame,color,msg", [
    (np.zeros((10, 10), np.float32), None, "uint8 or uint16"),
    (np.zeros((0, 10), np.uint8), None, "empty"),
    (np.zeros((10, 10, 4), np.uint8), None, "H×W"),
    (np.zeros((10, 10, 2), np.uint8), None, "H×W"),
    (np.zeros((10, 10), np.uint8), "bgr", "single-channel"),
    (np.zeros((10, 10, 3), np.uint8), "gray", "3-channel"),
    ("not an array", None, "numpy array"),
])
def test_bad_frames_raise_input_error(make_bundle, frame, color, msg):
    bundle = make_bundle()
    insp = Inspector(bundle, backend="ort-cpu", scope="rolling")
    with pytest.raises(InputError, match=msg):
        insp.inspect(frame, color)
    insp.inspect(np.zeros((70, 70), np.uint8))  # still works afterwards


def test_uncalibrated_bundle_runs_rolling_and_says_so(make_bundle):
    bundle = make_bundle()
    with pytest.warns(UserWarning, match="no calibration"):
        insp = Inspector(bundle, backend="ort-cpu")
    assert insp.scope == "rolling" and "no calibration" in insp.describe()["scope_reason"]
    assert insp.inspect(np.zeros((70, 70), np.uint8)).scope == "rolling"
    with pytest.raises(CalibrationError, match="calibrate"):
        Inspector(bundle, backend="ort-cpu", scope="calibrated")
    with pytest.raises(InputError):
        Inspector(bundle, backend="ort-cpu", scope="batch")


def test_bundle_integrity_checks(make_bundle, tmp_path):
    bundle = make_bundle()
    Bundle.load(bundle.root)
    (bundle.root / "m.onnx").write_bytes((bundle.root / "m.onnx").read_bytes() + b"x")
    with pytest.raises(BundleError, match="corrupted"):
        Bundle.load(bundle.root)
    Bundle.load(bundle.root, verify=False)
    (bundle.root / "m.onnx").write_bytes((bundle.root / "m.onnx").read_bytes()[:-1])
    Bundle.load(bundle.root)
    bundle._raw["format"] = "robis-bundle/2"
    with pytest.raises(BundleError, match="not supported"):
        bundle.save()  # never writes a bundle it could not read back
    (bundle.root / "bundle.json").write_text(json.dumps(bundle._raw))  # as another tool would
    with pytest.raises(BundleError, match="not supported"):
        Bundle.load(bundle.root)
    with pytest.raises(BundleError, match="no bundle.json"):
        Bundle.load(tmp_path / "nowhere")
    bundle._raw["format"] = "robis-bundle/1"
    bundle._raw["files"]["../escape"] = "0"
    (bundle.root / "bundle.json").write_text(json.dumps(bundle._raw))
    with pytest.raises(BundleError, match="outside"):
        Bundle.load(bundle.root)


def test_model_contract_is_checked(tmp_path):
    from conftest import build_blockmean_model

    from sdk import create_bundle
    from sdk.bundle import PreprocessSpec

    build_blockmean_model(tmp_path / "m.onnx", 32, 16, out_name="scores")
    b = create_bundle(tmp_path, "bad", "m.onnx", 16, preprocess=PreprocessSpec(size=32), window=64)
    from sdk import BackendError

    with pytest.raises(BackendError, match="anomaly_map"):
        Inspector(b, backend="ort-cpu", scope="rolling")
    with pytest.raises(BackendError, match="unknown backend"):
        Inspector(b, backend="cuda-magic", scope="rolling")


def test_explicit_gpu_backend_is_never_a_silent_fallback(make_bundle):
    from sdk import BackendError

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is present here")
    with pytest.raises(BackendError, match="CUDAExecutionProvider"):
        Inspector(make_bundle(), backend="ort-cuda", scope="rolling")
    insp = Inspector(make_bundle(name="u"), backend="auto", scope="rolling")
    assert insp.describe()["provider"] == "CPUExecutionProvider" and "CPU" in insp.describe()["reason"]


def test_untiled_bundle_takes_non_square_frames(make_bundle):
    bundle = make_bundle(window=None)
    insp = Inspector(bundle, backend="ort-cpu", scope="rolling")
    res = insp.inspect(np.zeros((60, 90), np.uint8))
    assert res.anomaly_map.shape == (10, 16) and res.map_scale == 16 / 90

