"""sdk.refine: RoBiS' SAM_Finer on ONNX Runtime.

* the array steps against straightforward oracles written here (scipy's zoom, Pillow's resize,
  torch's interpolate where those are installed);
* the refiner's control flow with fake sessions (empty mask, top-N, one-pixel and border boxes,
  modes, hole filling, channel order);
* the whole refinement against a torch re-implementation of ``SamPredictor.predict(box=...)``
  on a small random SAM exported by export.sam.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdk.bundle import Bundle
from sdk.errors import BundleError, InputError
from sdk.postprocess.morphology import fill_holes
from sdk.refine import SamRefiner, load_sam_refiner
from sdk.refine.ops import (
    PIXEL_MEAN,
    PIXEL_STD,
    boxes_to_sam_frame,
    postprocess_masks,
    sam_input_size,
    sam_normalize_pad,
    sam_resize,
    topn_boxes,
    zoom_linear_uint8,
)


# ============================================================================ oracles (by hand)
def zoom_oracle(img: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """scipy.ndimage.zoom(img, (h/H, w/W[, 1]), order=1) for uint8, pixel by pixel: coordinate
    k·(in−1)/(out−1), linear weights (1−f, f), points past the last input sample → 0 (mode
    'constant'), round half up."""
    big_h, big_w = img.shape[:2]
    oh, ow = out_hw
    zy = (big_h - 1) / (oh - 1) if oh > 1 else 1.0
    zx = (big_w - 1) / (ow - 1) if ow > 1 else 1.0
    out = np.zeros((oh, ow, *img.shape[2:]), np.uint8)
    for i in range(oh):
        cy = i * zy
        if cy > big_h - 1:
            continue
        y0 = int(np.floor(cy))
        wy0 = 1.0 - (cy - y0)
        wy1 = 1.0 - wy0
        y1 = min(y0 + 1, big_h - 1)
        for j in range(ow):
            cx = j * zx
            if cx > big_w - 1:
                continue
            x0 = int(np.floor(cx))
            wx0 = 1.0 - (cx - x0)
            wx1 = 1.0 - wx0
            x1 = min(x0 + 1, big_w - 1)
            t = (img[y0, x0].astype(np.float64) * wy0) * wx0
            t = t + (img[y0, x1].astype(np.float64) * wy0) * wx1
            t = t + (img[y1, x0].astype(np.float64) * wy1) * wx0
            t = t + (img[y1, x1].astype(np.float64) * wy1) * wx1
            out[i, j] = np.minimum(np.floor(t + 0.5), 255)
    return out


def robis_topn_boxes(binary: np.ndarray, top_n: int = 3) -> list[list[int]]:
    """RoBiS get_topn_bounding_boxes, step by step."""
    num_labels, _, stats, _ = cv2.connectedComponentsWithStats(binary)
    if num_labels <= 1:
        return []
    top = np.argsort(stats[1:, cv2.CC_STAT_AREA])[-top_n:] + 1
    return [[int(stats[i, 0]), int(stats[i, 1]), int(stats[i, 0] + stats[i, 2]),
             int(stats[i, 1] + stats[i, 3])] for i in top]


def robis_fill_holes(image: np.ndarray) -> np.ndarray:
    """RoBiS fill_holes: one findContours per 8-connected component."""
    num_labels, labels = cv2.connectedComponents(image)
    mask = np.zeros_like(image)
    for label in range(1, num_labels):
        component = (labels == label).astype(np.uint8)
        contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if contours:
            cv2.drawContours(mask, contours, -1, 255, thickness=cv2.FILLED)
    return cv2.bitwise_or(image, mask)


def smooth_frame(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    low = rng.uniform(0, 255, (6, 8, 3)).astype(np.float32)
    img = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 10, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


# ============================================================================ zoom
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40), st.integers(1, 40),
       st.sampled_from([0, 1, 3]), st.integers(0, 2**31 - 1))
def test_zoom_matches_oracle(in_h, in_w, out_h, out_w, channels, seed):
    rng = np.random.default_rng(seed)
    shape = (in_h, in_w) if channels == 0 else (in_h, in_w, channels)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    np.testing.assert_array_equal(zoom_linear_uint8(img, (out_h, out_w)), zoom_oracle(img, (out_h, out_w)))


def test_zoom_quirks():
    # 127.5 rounds up to 128 (round half up, as scipy stores uint8)
    half = zoom_linear_uint8(np.array([[127, 128]], np.uint8), (1, 3))
    np.testing.assert_array_equal(half, [[127, 128, 128]])
    # corner aligned: first and last samples are the input's corners, no antialias
    img = np.arange(100, dtype=np.uint8).reshape(10, 10)
    out = zoom_linear_uint8(img, (4, 4))
    assert out[0, 0] == 0 and out[-1, -1] == 99 and out[0, -1] == 9 and out[-1, 0] == 90
    # 8 → 26: (26−1)·(7/25) rounds above 7 in float64, so scipy's 'constant' mode gives 0 there
    assert 25 * (7 / 25) > 7
    out = zoom_linear_uint8(np.full((8, 8), 200, np.uint8), (26, 26))
    assert (out[-1] == 0).all() and (out[:, -1] == 0).all() and (out[:-1, :-1] == 200).all()
    np.testing.assert_array_equal(out, zoom_oracle(np.full((8, 8), 200, np.uint8), (26, 26)))


def test_zoom_matches_scipy_when_installed():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(3)
    for (big_h, big_w), (h, w) in [((400, 490), (100, 122)), ((8, 8), (26, 26)), ((37, 23), (91, 5)),
                                   ((1056, 240), (264, 60))]:
        img = rng.integers(0, 256, (big_h, big_w, 3), dtype=np.uint8)
        ref = ndimage.zoom(img, (h / big_h, w / big_w, 1), order=1)
        np.testing.assert_array_equal(zoom_linear_uint8(img, (h, w)), ref)


# ============================================================================ SAM preprocessing
@pytest.mark.parametrize("hw, expected", [
    ((264, 1056), (256, 1024)), ((475, 350), (1024, 755)), ((512, 612), (857, 1024)),
    ((256, 558), (470, 1024)), ((380, 525), (741, 1024)), ((1024, 1024), (1024, 1024)), ((1, 3), (341, 1024)),
])
def test_sam_input_size_reference_pipeline_table(hw, expected):
    # upstream-robis.md §4.5: quarter-resolution mask sizes → SAM input sizes
    assert sam_input_size(*hw) == expected


@pytest.mark.parametrize("in_hw", [(128, 153), (66, 264), (475, 350)])
def test_sam_resize_is_pillow_bilinear(in_hw):
    image_mod = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    img = smooth_frame(rng, *in_hw)
    hw = sam_input_size(*in_hw)
    ref = np.asarray(image_mod.fromarray(img).resize((hw[1], hw[0]), image_mod.BILINEAR))
    np.testing.assert_array_equal(sam_resize(img, hw), ref)


def test_normalize_pad():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    x = sam_normalize_pad(img, size=64)
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    ref = (img.astype(np.float32) - np.float32(PIXEL_MEAN)) / np.float32(PIXEL_STD)
    np.testing.assert_array_equal(x[0, :, :30, :40], ref.transpose(2, 0, 1))
    assert not x[0, :, 30:, :].any() and not x[0, :, :, 40:].any()


def test_normalize_pad_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (50, 64, 3), dtype=np.uint8)
    x = torch.as_tensor(img).permute(2, 0, 1)[None]
    # Sam.preprocess: (x - pixel_mean) / pixel_std, then F.pad right/bottom
    ref = (x - torch.Tensor(PIXEL_MEAN).view(-1, 1, 1)) / torch.Tensor(PIXEL_STD).view(-1, 1, 1)
    ref = torch.nn.functional.pad(ref, (0, 64 - 64, 0, 64 - 50))
    np.testing.assert_array_equal(sam_normalize_pad(img, size=64), ref.numpy())


# ============================================================================ boxes
def test_topn_boxes_cases():
    m = np.zeros((20, 30), np.uint8)
    assert topn_boxes(m, 3).shape == (0, 4)
    m[4, 7] = 255  # one pixel
    np.testing.assert_array_equal(topn_boxes(m, 3), [[7, 4, 8, 5]])
    m[15:20, 25:30] = 255  # touches the bottom-right border: exclusive max = the mask size
    m[0:3, 0:2] = 255  # top-left border
    m[8:12, 10:18] = 255  # largest
    m[13, 0] = m[14, 1] = 255  # 8-connected diagonal pair: one component of area 2
    boxes = topn_boxes(m, 3)
    np.testing.assert_array_equal(boxes, [[0, 0, 2, 3], [25, 15, 30, 20], [10, 8, 18, 12]])  # ascending area
    assert boxes.tolist() == robis_topn_boxes(m, 3)
    assert len(topn_boxes(m, 10)) == 5 and topn_boxes(m, 1).tolist() == [[10, 8, 18, 12]]
    with pytest.raises(ValueError):
        topn_boxes(m, 0)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 5))
def test_topn_boxes_match_robis(seed, top_n):
    rng = np.random.default_rng(seed)
    m = ((rng.random((24, 32)) > 0.8) * 255).astype(np.uint8)
    assert topn_boxes(m, top_n).tolist() == robis_topn_boxes(m, top_n)


def test_boxes_to_sam_frame():
    boxes = np.array([[0, 0, 100, 80], [7, 4, 8, 5]])
    out = boxes_to_sam_frame(boxes, (80, 100))  # → 819×1024
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], [0, 0, 1024, 819])  # border boxes reach the resized edges
    np.testing.assert_allclose(out[1], [7 * 10.24, 4 * 819 / 80, 8 * 10.24, 5 * 819 / 80], rtol=1e-7)


# ============================================================================ masks
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([0.55, 0.7, 0.85]))
def test_fill_holes_matches_robis(seed, density):
    rng = np.random.default_rng(seed)
    m = ((rng.random((40, 48)) > density) * 255).astype(np.uint8)
    m = cv2.dilate(m, np.ones((2, 2), np.uint8)) if seed % 2 else m
    np.testing.assert_array_equal(fill_holes(m), robis_fill_holes(m))


def test_fill_holes_nested_and_border():
    m = np.zeros((30, 30), np.uint8)
    cv2.rectangle(m, (2, 2), (27, 27), 255, 2)  # a ring ...
    cv2.rectangle(m, (10, 10), (19, 19), 255, 1)  # ... with a ring inside its hole
    m[0:5, 0] = 255  # touching the border
    out = fill_holes(m)
    np.testing.assert_array_equal(out, robis_fill_holes(m))
    assert out[2:28, 2:28].all() and out[0:5, 0].all()


def test_postprocess_matches_torch_interpolate():
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    rng = np.random.default_rng(0)
    low = cv2.GaussianBlur(rng.normal(0, 1, (3, 256, 256)).astype(np.float32).transpose(1, 2, 0), (0, 0), 6)
    low = np.ascontiguousarray(low.transpose(2, 0, 1) * 20)
    for hw in [(80, 100), (264, 1056), (475, 350), (512, 612)]:
        in_hw = sam_input_size(*hw)
        # Sam.postprocess_masks, then > mask_threshold
        t = functional.interpolate(torch.from_numpy(low)[None], (1024, 1024), mode="bilinear",
                                   align_corners=False)
        t = t[..., :in_hw[0], :in_hw[1]]
        ref = (functional.interpolate(t, hw, mode="bilinear", align_corners=False) > 0)[0].numpy()
        got = postprocess_masks(low, in_hw, hw)
        assert got.shape == ref.shape
        assert (got != ref).mean() < 1e-4, hw


# ============================================================================ refiner, fake sessions
class _IO:
    def __init__(self, name):
        self.name = name


class FakeEncoder:
    """Records the image; returns zero embeddings."""

    def __init__(self, fail=False):
        self.calls, self.images, self.fail = 0, [], fail

    def get_inputs(self):
        return [_IO("image")]

    def get_outputs(self):
        return [_IO("embeddings")]

    def run(self, names, feeds):
        if self.fail:
            raise AssertionError("the encoder must not run")
        self.calls += 1
        self.images.append(feeds["image"])
        assert feeds["image"].shape == (1, 3, 1024, 1024) and feeds["image"].dtype == np.float32
        return [np.zeros((1, 256, 64, 64), np.float32)]


class FakeDecoder:
    """Per box (1024 frame, /4 on the 256 grid): token 0 = the box filled; token 1 = the box's
    outline (a ring, 2 low-res pixels thick); token 2 = an 8×8 square at the grid origin; token 3
    = nothing. Logits ±10."""

    def __init__(self, fail=False):
        self.calls, self.boxes, self.fail = 0, [], fail

    def get_inputs(self):
        return [_IO("embeddings"), _IO("boxes")]

    def get_outputs(self):
        return [_IO("masks"), _IO("iou")]

    def run(self, names, feeds):
        if self.fail:
            raise AssertionError("the decoder must not run")
        self.calls += 1
        boxes = feeds["boxes"]
        self.boxes.append(boxes.copy())
        out = np.full((len(boxes), 4, 256, 256), -10.0, np.float32)
        for i, (x0, y0, x1, y1) in enumerate(boxes / 4.0):
            c0, r0, c1, r1 = int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))
            out[i, 0, r0:r1, c0:c1] = 10.0
            out[i, 1, r0:r1, c0:c1] = 10.0
            out[i, 1, r0 + 2:r1 - 2, c0 + 2:c1 - 2] = -10.0
            out[i, 2, :8, :8] = 10.0
        return [out, np.zeros((len(boxes), 4), np.float32)]


def fake_refiner(mode="single", top_n=3, channel_order="bgr_as_rgb", fail=False, **kw):
    return SamRefiner.from_sessions(FakeEncoder(fail), FakeDecoder(fail), mode, top_n, channel_order, **kw)


def test_empty_mask_skips_the_models():
    r = fake_refiner(fail=True)
    frame = np.zeros((40, 60, 3), np.uint8)
    mask, timings = r.refine(frame, np.zeros((10, 15), np.uint8))
    assert mask.shape == (10, 15) and mask.dtype == np.uint8 and not mask.any()
    assert timings["sam_encoder"] == 0.0 and timings["sam_decoder"] == 0.0
    assert set(timings) == {"sam_pre", "sam_encoder", "sam_decoder", "sam_post"}


def test_one_encoder_and_one_decoder_call_per_frame_top_n():
    r = fake_refiner(top_n=3)
    m = np.zeros((80, 100), np.uint8)
    areas = []
    for k, (x, y, s) in enumerate([(2, 2, 3), (20, 5, 6), (40, 40, 9), (70, 10, 4), (60, 60, 12)]):
        m[y:y + s, x:x + s] = 255
        areas.append((s * s, k))
    out = r.refine_verbose(smooth_frame(np.random.default_rng(0), 320, 400), m)
    assert r.encoder.calls == 1 and r.decoder.calls == 1
    expected = [[20, 5, 26, 11], [40, 40, 49, 49], [60, 60, 72, 72]]
    assert out.boxes.tolist() == robis_topn_boxes(m, 3) == expected
    np.testing.assert_array_equal(r.decoder.boxes[0], boxes_to_sam_frame(out.boxes, (80, 100)))
    # single: the filled boxes (token 0) come back at mask scale; the two smaller regions are dropped
    assert out.mask[62:70, 62:70].all() and out.mask[42:47, 42:47].all() and not out.mask[3:5, 3:5].any()


def test_one_pixel_and_border_regions():
    r = fake_refiner(top_n=5)
    m = np.zeros((80, 100), np.uint8)
    m[40, 50] = 255  # one pixel
    m[70:80, 90:100] = 255  # touches bottom/right
    out = r.refine_verbose(smooth_frame(np.random.default_rng(1), 320, 400), m)
    assert sorted(out.boxes.tolist()) == [[50, 40, 51, 41], [90, 70, 100, 80]]
    sam_boxes = r.decoder.boxes[0]
    assert sam_boxes[:, 2].max() == 1024 and sam_boxes[:, 3].max() == 819  # 80×100 → 819×1024
    assert out.mask[72:80, 92:100].all()


def test_single_vs_multi_or_and_hole_filling():
    m = np.zeros((80, 100), np.uint8)
    m[30:60, 40:80] = 255
    frame = smooth_frame(np.random.default_rng(2), 320, 400)
    single = fake_refiner("single").refine(frame, m)[0]
    multi = fake_refiner("multi_or").refine(frame, m)[0]
    multi_nofill = fake_refiner("multi_or", fill_holes=False).refine(frame, m)[0]
    # token 2 (grid-origin square, 8 low-res px = 32 px in the 1024 frame ≈ 2.5 mask px) only in multi_or
    assert not single[:2, :2].any() and multi[:2, :2].all()
    # token 1 is a ring: hole filling (RoBiS) closes it; without filling its inside stays empty
    assert single[35:55, 45:75].all() and multi[35:55, 45:75].all()
    assert not multi_nofill[35:55, 45:75].any() and multi_nofill[30:60, 40].all()
    np.testing.assert_array_equal(multi, fill_holes(multi_nofill))


def test_channel_order():
    frame_rgb = np.zeros((40, 40, 3), np.uint8)
    frame_rgb[..., 0], frame_rgb[..., 1], frame_rgb[..., 2] = 200, 100, 50  # R, G, B
    m = np.zeros((10, 10), np.uint8)
    m[2:5, 2:5] = 255

    def first_pixel(refiner, frame, color):
        refiner.refine(frame, m, color=color)
        x = refiner.encoder.images[-1][0, :, 0, 0]
        return np.rint(x * np.float32(PIXEL_STD) + np.float32(PIXEL_MEAN)).astype(int).tolist()

    parity = fake_refiner(channel_order="bgr_as_rgb")
    assert first_pixel(parity, frame_rgb, "rgb") == [50, 100, 200]  # BGR bytes in SAM's RGB slots
    assert first_pixel(parity, np.ascontiguousarray(frame_rgb[..., ::-1]), "bgr") == [50, 100, 200]
    true_rgb = fake_refiner(channel_order="rgb")
    assert first_pixel(true_rgb, frame_rgb, "rgb") == [200, 100, 50]
    assert first_pixel(true_rgb, np.ascontiguousarray(frame_rgb[..., ::-1]), "bgr") == [200, 100, 50]
    gray = np.full((40, 40), 77, np.uint8)
    assert first_pixel(parity, gray, "gray") == [77, 77, 77]
    assert first_pixel(parity, gray.astype(np.uint16) << 8, "gray") == [77, 77, 77]


def test_input_errors():
    with pytest.raises(InputError):
        fake_refiner(mode="off")
    with pytest.raises(InputError):
        fake_refiner(top_n=0)
    with pytest.raises(InputError):
        fake_refiner(channel_order="bgr")
    r = fake_refiner()
    with pytest.raises(InputError):
        r.refine(np.zeros((10, 10, 3), np.uint8), np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(InputError):
        r.refine(np.zeros((10, 10, 3), np.float32), np.full((4, 4), 255, np.uint8))


# ============================================================================ bundle loader
def _tiny_sam_onnx(encoder_path, decoder_path):
    """Contract-shaped stand-ins built with onnx.helper (no torch): embeddings = 1×1 conv of a
    16× average pool; masks = the first 4 embedding channels ×4 nearest-upsampled, + 0·boxes."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((256, 3, 1, 1), np.float32)
    w[:, 0] = 1.0
    enc = helper.make_graph(
        [helper.make_node("AveragePool", ["image"], ["p"], kernel_shape=[16, 16], strides=[16, 16]),
         helper.make_node("Conv", ["p", "w"], ["embeddings"])], "enc",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 1024, 1024])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [1, 256, 64, 64])],
        [numpy_helper.from_array(w, "w")])
    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
              [("starts", [0]), ("ends", [4]), ("axes", [1]), ("shape", [-1, 4, 1, 1])]]
    consts.append(numpy_helper.from_array(np.array([1, 1, 4, 4], np.float32), "scales"))
    consts.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    dec = helper.make_graph(
        [helper.make_node("Slice", ["embeddings", "starts", "ends", "axes"], ["s"]),
         helper.make_node("Resize", ["s", "", "scales"], ["u"], mode="nearest"),
         helper.make_node("Mul", ["boxes", "zero"], ["z"]),
         helper.make_node("Reshape", ["z", "shape"], ["z4"]),
         helper.make_node("Add", ["u", "z4"], ["masks"]),
         helper.make_node("Identity", ["z"], ["iou"])], "dec",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [1, 256, 64, 64]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["B", 4])],
        [helper.make_tensor_value_info("masks", TensorProto.FLOAT, ["B", 4, 256, 256]),
         helper.make_tensor_value_info("iou", TensorProto.FLOAT, ["B", 4])], consts)
    for g, p in ((enc, encoder_path), (dec, decoder_path)):
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        onnx.save(m, str(p))


def _add_section(bundle: Bundle, **over):
    _tiny_sam_onnx(bundle.root / "sam_encoder.onnx", bundle.root / "sam_decoder.onnx")
    bundle.add_file("sam_encoder.onnx")
    bundle.add_file("sam_decoder.onnx")
    section = {"encoder": {"file": "sam_encoder.onnx"}, "decoder": {"file": "sam_decoder.onnx"},
               "mode": "single", "top_n": 3, "channel_order": "bgr_as_rgb", "mask_threshold": 0.0}
    section.update(over)
    bundle._raw.setdefault("refine", {})["sam"] = section
    bundle.save()
    return Bundle.load(bundle.root)


def test_load_from_bundle(make_bundle):
    b = make_bundle()
    assert load_sam_refiner(b) is None  # no refine.sam section
    b = _add_section(b, mode="multi_or", top_n=2)
    r = load_sam_refiner(b, backend="ort-cpu")
    assert isinstance(r, SamRefiner) and r.mode == "multi_or" and r.top_n == 2
    assert r.provider == "CPUExecutionProvider"
    frame = np.full((64, 64, 3), 255, np.uint8)  # channel 0 bright: positive "logits" everywhere
    m = np.zeros((16, 16), np.uint8)
    m[4:8, 4:8] = 255
    mask, timings = r.refine(frame, m)
    assert mask.shape == (16, 16) and mask.all() and timings["sam_encoder"] > 0
    assert load_sam_refiner(b, mode="off") is None
    assert load_sam_refiner(b.root, mode="single").mode == "single"


def test_bundle_section_errors(make_bundle):
    b = _add_section(make_bundle(), mode="off")
    assert load_sam_refiner(b) is None
    base = json.loads((b.root / "bundle.json").read_text())

    def write(section=None, drop_file=None):
        raw = json.loads(json.dumps(base))
        if section is not None:
            raw["refine"]["sam"] = section
        if drop_file:
            del raw["files"][drop_file]
        (b.root / "bundle.json").write_text(json.dumps(raw))
        return Bundle.load(b.root)

    files = {"encoder": {"file": "sam_encoder.onnx"}, "decoder": {"file": "sam_decoder.onnx"}}
    bads = ({"mode": "best"}, {"top_n": 0}, {"top_n": 2.5}, {"channel_order": "BGR"}, {"connectivity": 4})
    for bad in bads:
        with pytest.raises(BundleError):
            load_sam_refiner(write({**files, **bad}))
    with pytest.raises(BundleError, match="encoder.file"):
        load_sam_refiner(write({"decoder": {"file": "sam_decoder.onnx"}}))
    with pytest.raises(BundleError, match="not listed"):
        load_sam_refiner(write(files, drop_file="sam_decoder.onnx"))
    assert load_sam_refiner(write(files)).mode == "single"  # defaults: single, top 3, bgr_as_rgb


# ============================================================================ parity with torch
@pytest.fixture(scope="module")
def small_sam(tmp_path_factory):
    """A small random SAM (ViT encoder dim 64, depth 2, window 14, global block 1; the real 1024
    input, 64×64 embedding and full-size decoder) and its ONNX export."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from export.sam.model import SamArch, random_sam
    from export.sam.onnx_export import export_decoder, export_encoder

    sam = random_sam(SamArch(64, 2, 2, (1,), 14), seed=3)  # seed 3: tokens 1..3 not all-positive
    d = tmp_path_factory.mktemp("sam_small")
    export_encoder(sam, d / "enc.onnx")
    export_decoder(sam, d / "dec.onnx", check_batches=(2,))
    return sam, d / "enc.onnx", d / "dec.onnx"


def torch_sam_finer(sam, frame_bgr: np.ndarray, coarse: np.ndarray, multimask: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
    """RoBiS _samfiner for one image, on the segment-anything modules, with SamPredictor's steps
    written out (SamPredictor itself imports torchvision). Returns (final mask, union before
    hole filling)."""
    import torch
    from PIL import Image

    try:  # RoBiS: scipy.ndimage.zoom(image, zoom_factors, order=1)
        from scipy.ndimage import zoom

        h, w = coarse.shape
        image = zoom(frame_bgr, (h / frame_bgr.shape[0], w / frame_bgr.shape[1], 1), order=1)
    except ImportError:
        image = zoom_oracle(frame_bgr, coarse.shape)
    boxes = robis_topn_boxes(coarse, 3)
    if not boxes:
        return np.zeros_like(coarse), np.zeros_like(coarse)
    h, w = image.shape[:2]
    # ResizeLongestSide.get_preprocess_shape
    scale = 1024 * 1.0 / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    # ResizeLongestSide.apply_image: torchvision resize(to_pil_image(image), (nh, nw)) = PIL BILINEAR
    resized = np.array(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    with torch.no_grad():
        # SamPredictor.set_image (image_format RGB = model format: the BGR data is not flipped)
        x = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None, :, :, :]
        # SamPredictor.set_torch_image: Sam.preprocess (normalise, pad) + image_encoder
        features = sam.image_encoder(sam.preprocess(x))
        masks_list = []
        for bbox in boxes:
            # SamPredictor.predict: ResizeLongestSide.apply_boxes (float64), then float32 (1, 1, 4)
            box = np.array(bbox).reshape(-1, 2, 2).astype(float)
            box[..., 0] = box[..., 0] * (nw / w)
            box[..., 1] = box[..., 1] * (nh / h)
            box_torch = torch.as_tensor(box.reshape(-1, 4), dtype=torch.float)[None, :]
            # SamPredictor.predict_torch: PromptEncoder, MaskDecoder, Sam.postprocess_masks, > threshold
            sparse, dense = sam.prompt_encoder(points=None, boxes=box_torch, masks=None)
            low_res, _ = sam.mask_decoder(image_embeddings=features,
                                          image_pe=sam.prompt_encoder.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=multimask)
            masks = sam.postprocess_masks(low_res, (nh, nw), (h, w)) > sam.mask_threshold
            # RoBiS: masks.sum(0); masks[masks > 0] = 255
            m = masks[0].numpy().sum(0)
            m[m > 0] = 255
            masks_list.append(m.astype(np.uint8))
    union = np.array(masks_list).max(0)  # RoBiS: np.array(mask_list).max(0), then fill_holes
    return robis_fill_holes(union), union


def _scene(seed: int):
    rng = np.random.default_rng(seed)
    frame = smooth_frame(rng, 320, 400)
    coarse = np.zeros((80, 100), np.uint8)
    cv2.circle(coarse, (30, 30), 10, 255, -1)
    cv2.rectangle(coarse, (60, 50), (99, 79), 255, -1)  # touches the border
    cv2.circle(coarse, (20, 65), 4, 255, -1)
    coarse[5, 95] = 255  # one pixel: the 4th region, dropped by top-3
    return frame, coarse


@pytest.mark.parametrize("mode, seed", [("single", 0), ("multi_or", 1)])
def test_refinement_matches_torch_predictor(small_sam, mode, seed):
    pytest.importorskip("PIL")
    sam, enc, dec = small_sam
    refiner = SamRefiner(enc, dec, mode=mode, top_n=3)
    frame_bgr, coarse = _scene(seed)
    out = refiner.refine_verbose(frame_bgr, coarse, color="bgr")
    ref, ref_union = torch_sam_finer(sam, frame_bgr, coarse, multimask=(mode == "multi_or"))
    assert out.boxes.tolist() == robis_topn_boxes(coarse, 3) and len(out.boxes) == 3
    assert float((out.unfilled == ref_union).mean()) >= 0.999
    assert float((out.mask == ref).mean()) >= 0.999
    assert 0.05 < (ref_union > 0).mean() < 0.95  # random weights, but a non-trivial mask
    assert set(np.unique(out.mask)) <= {0, 255} and out.timings_ms["sam_encoder"] > 0


def test_inspector_runs_the_refine_stage(make_bundle):
    """The bundle's refine.sam section puts SAM-Finer into the Inspector's one code path: the
    refined mask replaces the coarse one, its timings are reported, the ROI still holds."""
    from sdk import InputError, Inspector
    from sdk.postprocess.stats import BinStats, Calibration, NormStats

    b = make_bundle()
    b.set_calibration(Calibration(NormStats(-3.0, 3.0), BinStats(100.0, 200.0, 0.5, 0.01), 1))
    b.save()
    frame = np.full((128, 128), 20, np.uint8)
    frame[64:96, 16:48] = 250  # one bright square: a coarse region
    plain = Inspector(b, backend="ort-cpu").inspect(frame)
    assert plain.regions and not any(k.startswith("sam_") for k in plain.timings_ms)
    with pytest.raises(InputError, match="refine.sam"):
        Inspector(b, backend="ort-cpu", refine=True)
    b = _add_section(b)
    insp = Inspector(b, backend="ort-cpu")
    assert insp.describe()["refine"] is not None
    res = insp.inspect(frame)
    assert res.timings_ms["sam_encoder"] > 0 and res.timings_ms["sam_decoder"] > 0
    # The stand-in decoder says "anomalous" wherever image channel 0 is bright: the whole square.
    assert (res.mask > 0).sum() > (plain.mask > 0).sum()
    assert Inspector(b, backend="ort-cpu", refine=False).inspect(frame).mask.tolist() == plain.mask.tolist()
    b._raw["verdict"]["roi"] = [0, 0, 32, 128]  # left quarter only: SAM may not grow past it
    b.save()
    res = Inspector(b, backend="ort-cpu").inspect(frame)
    assert not res.mask[:, 8:].any()
    empty = Inspector(b, backend="ort-cpu").inspect(np.full((128, 128), 20, np.uint8))
    assert not empty.mask.any() and empty.timings_ms.get("sam_encoder", 0) == 0
