"""sdk.resize: bit-exact against Pillow's BILINEAR (antialiased) resize, which is the oracle here."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sdk.resize import BilinearAntialiasResizer, _cached_resizer, resize_bilinear_antialias

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

PILLOW_VERSION = tuple(int(p) for p in PIL.__version__.split(".")[:2])
FAST = settings(max_examples=50, deadline=None)


def pil_resize(img: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """The oracle, for (H, W), (H, W, C) or (N, H, W, C) uint8 arrays.

    Gray and RGB go through Pillow's "L" and "RGB" modes; other channel counts are resized one
    channel at a time in "L" (channels are independent: that is the contract)."""
    h, w = out_hw
    if img.ndim == 4:
        return np.stack([pil_resize(x, out_hw) for x in img])
    if img.ndim == 2:
        return np.asarray(Image.fromarray(np.ascontiguousarray(img), "L").resize((w, h), Image.BILINEAR))
    if img.shape[2] == 3:
        return np.asarray(Image.fromarray(np.ascontiguousarray(img), "RGB").resize((w, h), Image.BILINEAR))
    return np.stack([pil_resize(img[:, :, c], out_hw) for c in range(img.shape[2])], axis=2)


def needs_pillow13(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> bool:
    """True where the result depends on Pillow >= 13's vertical-first pass order."""
    return BilinearAntialiasResizer(in_hw, out_hw).vertical_first


def skip_if_old_order(in_hw, out_hw) -> None:
    if needs_pillow13(in_hw, out_hw) and PILLOW_VERSION < (13, 0):
        pytest.skip("Pillow < 13 always resizes horizontally first")


def random_image(rng: np.random.Generator, shape) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def smooth_image(rng: np.random.Generator, h: int, w: int, c: int = 3) -> np.ndarray:
    """Gradients + blobs + a little noise: long flat-ish runs exercise exact rounding ties."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.empty((h, w, c), np.float64)
    for ch in range(c):
        fx, fy = rng.uniform(0.5, 6.0, 2)
        img[:, :, ch] = 127.5 + 100 * np.sin(2 * np.pi * fx * x / w) * np.cos(2 * np.pi * fy * y / h)
    img += rng.normal(0, 4, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def assert_same(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.dtype == np.uint8
    assert ours.shape == ref.shape
    if not np.array_equal(ours, ref):
        diff = np.abs(ours.astype(int) - ref.astype(int))
        raise AssertionError(f"{np.count_nonzero(diff)} pixels differ from Pillow, max |diff| {diff.max()}")


# --------------------------------------------------------------------------------------------
# Exact equality with Pillow
# --------------------------------------------------------------------------------------------


def test_hot_case_1024_to_518_rgb_batch():
    rng = np.random.default_rng(0)
    tiles = np.stack([random_image(rng, (1024, 1024, 3)), smooth_image(rng, 1024, 1024),
                      np.zeros((1024, 1024, 3), np.uint8), np.full((1024, 1024, 3), 255, np.uint8)])
    resizer = BilinearAntialiasResizer((1024, 1024), (518, 518))
    out = resizer(tiles)
    assert out.shape == (4, 518, 518, 3) and out.flags.c_contiguous
    assert_same(out, pil_resize(tiles, (518, 518)))
    assert_same(resizer(tiles[1]), pil_resize(tiles[1], (518, 518)))


SIZES = [
    # upscales (integer and not)
    ((7, 5), (13, 11)),
    ((31, 17), (100, 64)),
    ((2, 3), (256, 384)),
    ((16, 16), (32, 32)),
    # downscales by integer, non-integer and large factors
    ((64, 64), (32, 32)),
    ((1024, 768), (518, 389)),
    ((300, 200), (123, 77)),
    ((1000, 800), (3, 7)),
    ((517, 333), (5, 4)),
    ((256, 256), (1, 1)),
    # mixed: one axis up, the other down
    ((40, 300), (90, 30)),
    ((300, 40), (30, 90)),
    # one dimension unchanged (a single pass)
    ((64, 48), (64, 20)),
    ((64, 48), (17, 48)),
    ((20, 30), (20, 75)),
    ((20, 30), (55, 30)),
    # unchanged size (a copy)
    ((9, 13), (9, 13)),
    # 1-pixel images and outputs
    ((1, 1), (5, 7)),
    ((1, 1), (1, 1)),
    ((1, 9), (4, 3)),
    ((9, 1), (1, 1)),
    ((1, 50), (1, 7)),
    ((50, 1), (7, 1)),
    # height shrinks much more than width: Pillow >= 13 runs the vertical pass first
    ((100, 40), (10, 38)),
    ((2048, 612), (518, 518)),
    ((31, 13), (13, 5)),
    ((40, 20), (19, 10)),  # in_h - out_h == 2 * (in_w - out_w) + 1: vertical first
    ((40, 20), (20, 10)),  # in_h - out_h == 2 * (in_w - out_w): horizontal first
]


@pytest.mark.parametrize(("in_hw", "out_hw"), SIZES)
@pytest.mark.parametrize("channels", [None, 3])
def test_matches_pillow(in_hw, out_hw, channels):
    skip_if_old_order(in_hw, out_hw)
    rng = np.random.default_rng(hash((in_hw, out_hw, channels)) & 0xFFFF)
    shape = in_hw if channels is None else (*in_hw, channels)
    img = random_image(rng, shape)
    assert_same(BilinearAntialiasResizer(in_hw, out_hw)(img), pil_resize(img, out_hw))
    if channels == 3:
        smooth = smooth_image(rng, *in_hw)
        assert_same(resize_bilinear_antialias(smooth, out_hw), pil_resize(smooth, out_hw))


def test_pass_order_rule():
    assert BilinearAntialiasResizer((40, 20), (19, 10)).vertical_first
    assert not BilinearAntialiasResizer((40, 20), (20, 10)).vertical_first
    assert not BilinearAntialiasResizer((1024, 1024), (518, 518)).vertical_first
    assert BilinearAntialiasResizer((100, 40), (10, 60)).vertical_first  # width grows
    assert not BilinearAntialiasResizer((10, 40), (30, 60)).vertical_first  # height grows


@pytest.mark.skipif(PILLOW_VERSION < (13, 0), reason="pass order changed in Pillow 13")
def test_pass_order_is_observable():
    """The two pass orders really give different pixels here, and we match Pillow's choice."""
    rng = np.random.default_rng(5)
    img = random_image(rng, (40, 20, 3))
    vfirst = BilinearAntialiasResizer((40, 20), (19, 10))
    hfirst = BilinearAntialiasResizer((40, 20), (19, 10))
    hfirst.vertical_first = False
    assert not np.array_equal(vfirst(img), hfirst(img))
    assert_same(vfirst(img), pil_resize(img, (19, 10)))


def test_large_tap_counts_are_chunked():
    """Strong reductions: thousands of taps per output, processed in column chunks."""
    rng = np.random.default_rng(1)
    for in_hw, out_hw in [((3000, 200), (2, 200)), ((60, 3000), (60, 1)), ((2500, 2500), (3, 2))]:
        img = random_image(rng, (*in_hw, 3))
        assert_same(resize_bilinear_antialias(img, out_hw), pil_resize(img, out_hw))


def test_batches_and_ranks():
    rng = np.random.default_rng(2)
    resizer = BilinearAntialiasResizer((37, 53), (20, 29))
    batch = random_image(rng, (5, 37, 53, 3))
    out = resizer(batch)
    assert out.shape == (5, 20, 29, 3)
    assert_same(out, pil_resize(batch, (20, 29)))
    gray = random_image(rng, (37, 53))
    assert resizer(gray).shape == (20, 29)
    assert_same(resizer(gray), pil_resize(gray, (20, 29)))
    one = gray[:, :, None]
    assert_same(resizer(one), pil_resize(gray, (20, 29))[:, :, None])
    gray_batch = random_image(rng, (3, 37, 53, 1))
    ref = np.stack([pil_resize(g[..., 0], (20, 29))[..., None] for g in gray_batch])
    assert_same(resizer(gray_batch), ref)
    assert resizer(np.zeros((0, 37, 53, 3), np.uint8)).shape == (0, 20, 29, 3)


@pytest.mark.parametrize("channels", [2, 4, 5])
def test_other_channel_counts_are_independent(channels):
    rng = np.random.default_rng(channels)
    img = random_image(rng, (45, 33, channels))
    assert_same(resize_bilinear_antialias(img, (21, 50)), pil_resize(img, (21, 50)))


def test_cmyk_matches_pillow():
    """Four channels without alpha: Pillow's CMYK mode resizes them independently too."""
    rng = np.random.default_rng(4)
    img = random_image(rng, (60, 70, 4))
    ref = np.asarray(Image.frombytes("CMYK", (70, 60), img.tobytes()).resize((33, 27), Image.BILINEAR))
    assert_same(resize_bilinear_antialias(img, (27, 33)), ref)


def test_non_contiguous_inputs():
    rng = np.random.default_rng(3)
    base = random_image(rng, (2, 80, 90, 3))
    resizer = BilinearAntialiasResizer((80, 45), (31, 20))
    for view in (base[:, :, ::2], base[:, :, ::2, ::-1], base[..., 1:46, :]):
        assert_same(resizer(view), pil_resize(np.ascontiguousarray(view), (31, 20)))
    assert_same(resizer(base[0, :, ::2, 0]), pil_resize(np.ascontiguousarray(base[0, :, ::2, 0]), (31, 20)))


def test_input_is_not_modified_and_output_is_fresh():
    rng = np.random.default_rng(6)
    img = random_image(rng, (30, 30, 3))
    keep = img.copy()
    same = BilinearAntialiasResizer((30, 30), (30, 30))(img)
    assert np.array_equal(img, keep) and np.array_equal(same, img)
    assert not np.shares_memory(same, img)


def test_numpy_transpose_fallback(monkeypatch):
    """Without OpenCV (or for channel counts it cannot transpose) numpy does the transposes."""
    import sdk.resize as resize_module

    monkeypatch.setattr(resize_module, "cv2", None)
    rng = np.random.default_rng(8)
    for shape, out_hw in [((70, 90, 3), (33, 41)), ((70, 90), (33, 41)), ((90, 30, 3), (20, 29))]:
        img = random_image(rng, shape)
        assert_same(BilinearAntialiasResizer(shape[:2], out_hw)(img), pil_resize(img, out_hw))


@FAST
@given(
    in_h=st.integers(1, 40), in_w=st.integers(1, 40),
    out_h=st.integers(1, 40), out_w=st.integers(1, 40),
    channels=st.sampled_from([None, 1, 3]),
    batch=st.integers(1, 2),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_matches_pillow(in_h, in_w, out_h, out_w, channels, batch, seed):
    in_hw, out_hw = (in_h, in_w), (out_h, out_w)
    assume(PILLOW_VERSION >= (13, 0) or not needs_pillow13(in_hw, out_hw))
    rng = np.random.default_rng(seed)
    if channels is None:
        shape = in_hw
    elif batch == 1:
        shape = (*in_hw, channels)
    else:
        shape = (batch, *in_hw, channels)
    img = random_image(rng, shape)
    assert_same(resize_bilinear_antialias(img, out_hw), pil_resize(img, out_hw))


# --------------------------------------------------------------------------------------------
# Convenience function, caching, errors
# --------------------------------------------------------------------------------------------


def test_convenience_function_caches_resizers():
    _cached_resizer.cache_clear()
    rng = np.random.default_rng(7)
    img = random_image(rng, (50, 60, 3))
    first = resize_bilinear_antialias(img, (20, 25))
    second = resize_bilinear_antialias(img.copy(), [20, 25])
    assert np.array_equal(first, second)
    info = _cached_resizer.cache_info()
    assert info.misses == 1 and info.hits == 1


@pytest.mark.parametrize("bad", [
    np.zeros((10, 12, 3), np.float32),
    np.zeros((10, 12, 3), np.uint16),
    np.zeros((10, 12, 3), np.int8),
    np.zeros((10, 12, 3), bool),
])
def test_rejects_wrong_dtype(bad):
    with pytest.raises(ValueError, match="uint8"):
        BilinearAntialiasResizer((10, 12), (5, 6))(bad)


@pytest.mark.parametrize("shape", [(12,), (10, 12, 3, 1, 1), (11, 12, 3), (10, 13), (2, 12, 10, 3), ()])
def test_rejects_wrong_shape(shape):
    with pytest.raises(ValueError, match="shape"):
        BilinearAntialiasResizer((10, 12), (5, 6))(np.zeros(shape, np.uint8))


def test_rejects_non_arrays():
    with pytest.raises(ValueError, match="numpy"):
        BilinearAntialiasResizer((2, 2), (1, 1))([[0, 0], [0, 0]])
    with pytest.raises(ValueError, match="numpy"):
        resize_bilinear_antialias([[0, 0], [0, 0]], (1, 1))


@pytest.mark.parametrize("hw", [(0, 5), (5, 0), (-1, 3), (5,), (1, 2, 3), (2.5, 3), (True, 3), "ab", None])
def test_rejects_bad_sizes(hw):
    with pytest.raises(ValueError, match="hw"):
        BilinearAntialiasResizer(hw, (4, 4))
    with pytest.raises(ValueError, match="hw"):
        BilinearAntialiasResizer((4, 4), hw)


def test_resize_function_rejects_bad_output_size():
    with pytest.raises(ValueError, match="out_hw"):
        resize_bilinear_antialias(np.zeros((4, 4), np.uint8), (0, 2))
    with pytest.raises(ValueError, match="shape"):
        resize_bilinear_antialias(np.zeros((4,), np.uint8), (2, 2))
