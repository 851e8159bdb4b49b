"""Reading anomaly maps and writing masks: refusals, round trips, the folder reader's shortcut for
TIFFs laid out alike, and the binarize command's writer."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from edge_runtime.cli import main
from sdk.errors import InputError
from sdk.imageio import MASK_PNG, MapReader, read_map, write_png


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


def _same_map(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_the_folder_reader_reads_what_tifffile_reads(tmp_path):
    """Files laid out like the first take the shortcut; every other kind is parsed; the arrays are
    always tifffile's (read_map's), bit for bit."""
    rng = np.random.default_rng(5)
    f16 = [(rng.random((24, 40)) * 255).astype(np.float16) for _ in range(4)]
    files = []
    for i, m in enumerate(f16):  # one writer, one shape: one layout
        files.append(tmp_path / f"a{i}.tiff")
        tifffile.imwrite(files[-1], m)
    odd = {
        "transposed": f16[0].T.copy(),  # the same number of bytes, other tags
        "float32": f16[1].astype(np.float32),
        "compressed": f16[2],
        "big-endian": f16[3],
        "two pages": f16[0],
        "npy": f16[1],
    }
    for name, m in odd.items():
        path = tmp_path / (name.replace(" ", "_") + (".npy" if name == "npy" else ".tiff"))
        if name == "npy":
            np.save(path, m)
        elif name == "compressed":
            tifffile.imwrite(path, m, compression="zlib")
        elif name == "big-endian":
            tifffile.imwrite(path, m, byteorder=">")
        elif name == "two pages":  # a second series: tifffile.imread reads the first
            tifffile.imwrite(path, m)
            tifffile.imwrite(path, f16[1], append=True)
        else:
            tifffile.imwrite(path, m)
        files.append(path)
    files.append(tmp_path / "a_again.tiff")  # after the others: the layout read last still serves
    tifffile.imwrite(files[-1], f16[2])
    read = MapReader()
    for path in files:
        got = read(path)
        assert _same_map(got, read_map(path)), path.name
    assert read._layout is not None and read._layout.shape == (24, 40)
    assert read._layout.read(files[0]) is not None  # the shortcut is taken for the alike files
    assert read._layout.read(tmp_path / "transposed.tiff") is None  # and refused for the others
    assert read._layout.read(tmp_path / "float32.tiff") is None


def test_the_folder_reader_refuses_what_read_map_refuses(tmp_path):
    m = np.linspace(0, 255, 24 * 40).reshape(24, 40).astype(np.float16)
    tifffile.imwrite(tmp_path / "a.tiff", m)
    read = MapReader()
    read(tmp_path / "a.tiff")
    bad = m.copy()
    bad[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "nan.tiff", bad)  # laid out alike: the shortcut reads it
    assert read._layout.read(tmp_path / "nan.tiff") is not None
    with pytest.raises(InputError, match="NaN or infinite"):
        read(tmp_path / "nan.tiff")
    raw = (tmp_path / "a.tiff").read_bytes()
    (tmp_path / "short.tiff").write_bytes(raw[:-10])  # truncated: parsed, and refused as read_map does
    with pytest.raises(InputError, match="cannot read anomaly map"):
        read(tmp_path / "short.tiff")
    with pytest.raises(InputError, match="cannot read anomaly map"):
        read(tmp_path / "missing.tiff")
