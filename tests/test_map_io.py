"""Reading anomaly maps and writing masks: refusals, round trips, and the binarize command's writer."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from edge_runtime.cli import main
from sdk.errors import InputError
from sdk.imageio import MASK_PNG, read_map, write_png


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("suffix", [".npy", ".tiff"])
def test_maps_with_nan_or_infinity_are_refused(tmp_path, dtype, bad, suffix):
    m = np.linspace(0, 255, 40 * 30).reshape(40, 30).astype(dtype)
    path = tmp_path / f"m{suffix}"
    (np.save if suffix == ".npy" else tifffile.imwrite)(path, m)
    assert np.array_equal(read_map(path), m)
    m[17, 3] = bad
    (np.save if suffix == ".npy" else tifffile.imwrite)(path, m)
    with pytest.raises(InputError, match="NaN or infinite"):
        read_map(path)


def test_largest_and_smallest_float16_values_are_finite(tmp_path):
    m = np.array([[65504, -65504], [6e-8, -0.0]], np.float16).repeat(8, axis=1)
    np.save(tmp_path / "m.npy", m)
    assert np.array_equal(read_map(tmp_path / "m.npy"), m)


@pytest.mark.parametrize("kind", ["empty", "full", "noise", "blobs"])
def test_mask_pngs_read_back_identical_in_opencv_and_pillow(tmp_path, kind):
    rng = np.random.default_rng(3)
    mask = {"empty": np.zeros((50, 61), np.uint8), "full": np.full((50, 61), 255, np.uint8),
            "noise": (rng.random((50, 61)) < 0.5).astype(np.uint8) * 255,
            "blobs": (cv2.GaussianBlur(rng.random((50, 61)), (0, 0), 3) > 0.5).astype(np.uint8) * 255}[kind]
    write_png(tmp_path / "a" / "m.png", mask, MASK_PNG)
    assert np.array_equal(cv2.imread(str(tmp_path / "a" / "m.png"), cv2.IMREAD_UNCHANGED), mask)
    with Image.open(tmp_path / "a" / "m.png") as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), mask)
    assert not list((tmp_path / "a").glob(".*.tmp"))


def test_a_failed_mask_write_stops_binarize_with_one_line(tmp_path, capsys):
    maps = tmp_path / "maps"
    maps.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        np.save(maps / f"m{i}.npy", (rng.random((40, 50)) * 255).astype(np.float32))
    out = tmp_path / "out"
    (out / "m1.png").mkdir(parents=True)  # a folder where a mask goes: the write fails
    assert main(["binarize", "--maps", str(maps), "--out", str(out)]) != 0
    err = [x for x in capsys.readouterr().err.splitlines()
           if x.strip() and "map/s" not in x and "%|" not in x]  # not the progress bars
    assert len(err) == 1 and "m1.png" in err[0], err
    assert (out / "m1.png").is_dir()  # nothing replaced the folder
