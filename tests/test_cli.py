"""The robis-edge commands, run in-process as a user would run them."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import shared_path

from edge_runtime.cli import main
from sdk.postprocess.stats import BinStats, Calibration, NormStats


def test_binarize_golden_folder_nested(tmp_path):
    src = shared_path("golden", "post", "binarize")
    maps = tmp_path / "maps" / "walnuts" / "test_public"
    for i, f in enumerate(sorted((src / "maps").glob("*.tiff"))):
        dst = maps / ("good" if i < 8 else "bad") / f.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
    out = tmp_path / "out"
    assert main(["binarize", "--maps", str(tmp_path / "maps"), "--out", str(out)]) == 0
    ref = json.loads((src / "ref.json").read_text())
    th = json.loads((out / "thresholds.json").read_text())
    got = [v["mebin"] if v["mebin"] is not None else 255 for _, v in sorted(th["maps"].items(),
                                                                                key=lambda kv: kv[0][-8:])]
    assert got == ref["mebin_thresholds"]
    assert th["statistics"]["mebin_min_th"] == ref["mebin_min_th"]
    for i, f in enumerate(sorted((src / "ref_masks").glob("*.png"))):
        mine = cv2.imread(str(out / "walnuts" / "test_public" / ("good" if i < 8 else "bad") / f.name), 0)
        assert np.array_equal(mine, cv2.imread(str(f), 0)), f.name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["maps"] == 16 and summary["timings_ms"]["binarize_per_map"]["mean"] > 0


def test_binarize_npy_fixed_and_calibrated(tmp_path, make_bundle):
    rng = np.random.default_rng(0)
    maps = tmp_path / "maps"
    maps.mkdir()
    for i in range(3):
        smooth = cv2.GaussianBlur(rng.random((40, 50)), (0, 0), 2)
        np.save(maps / f"m{i}.npy", (smooth * 255).astype(np.float32))
    out = tmp_path / "fixed"
    assert main(["binarize", "--maps", str(maps), "--out", str(out), "--method", "fixed",
                 "--fixed-threshold", "128", "--precision", "float32"]) == 0
    m = np.load(maps / "m0.npy")
    expect = cv2.erode(((m > 128) * 255).astype(np.uint8), np.ones((6, 6), np.uint8))
    assert np.array_equal(cv2.imread(str(out / "m0.png"), 0), expect)
    bundle = make_bundle()
    bundle.set_calibration(Calibration(NormStats(0, 1), BinStats(100.0, 200.0, 0.4, 0.1), 3))
    bundle.save()
    assert main(["binarize", "--maps", str(maps), "--out", str(tmp_path / "cal"), "--scope", "calibrated",
                 "--bundle", str(bundle.root)]) == 0
    th = json.loads((tmp_path / "cal" / "thresholds.json").read_text())
    assert th["statistics"]["mebin_max_th"] == 200.0
    # no bundle with calibrated scope: a clear error, exit code 2
    assert main(["binarize", "--maps", str(maps), "--out", str(tmp_path / "x"), "--scope", "calibrated"]) == 2


def test_binarize_calibrated_binarises_maps_as_they_are_read(tmp_path, make_bundle, capsys):
    """With the statistics frozen, maps are binarised while the next are read (8 ahead): with the
    golden split's own statistics the masks are the upstream code's, each under its own name; a bad
    file stops the command there, with one line naming it, after the masks before it."""
    import tifffile

    src = shared_path("golden", "post", "binarize")
    files = sorted((src / "maps").glob("*.tiff"))
    maps = tmp_path / "maps"
    maps.mkdir()
    for f in files:
        shutil.copy(f, maps / f.name)
    bundle = make_bundle()
    stats = BinStats.from_maps([tifffile.imread(f) for f in files])
    bundle.set_calibration(Calibration(NormStats(0, 1), stats, len(files)))
    bundle.save()
    out = tmp_path / "out"
    assert main(["binarize", "--maps", str(maps), "--out", str(out), "--scope", "calibrated",
                 "--bundle", str(bundle.root)]) == 0
    ref = json.loads((src / "ref.json").read_text())
    th = json.loads((out / "thresholds.json").read_text())["maps"]
    assert [th[f.name]["mebin"] if th[f.name]["mebin"] is not None else 255 for f in files] \
        == ref["mebin_thresholds"]
    for f, r in zip(files, sorted((src / "ref_masks").glob("*.png")), strict=True):
        mine = cv2.imread(str(out / f.with_suffix(".png").name), 0)
        assert np.array_equal(mine, cv2.imread(str(r), 0)), f.name
    bad = tifffile.imread(files[11]).copy()
    bad[5, 5] = np.nan
    tifffile.imwrite(maps / files[11].name, bad)
    capsys.readouterr()
    out2 = tmp_path / "out2"
    assert main(["binarize", "--maps", str(maps), "--out", str(out2), "--scope", "calibrated",
                 "--bundle", str(bundle.root)]) == 2
    err = [x for x in capsys.readouterr().err.splitlines()
           if x.strip() and "map/s" not in x and "%|" not in x]  # not the progress bars
    assert len(err) == 1 and files[11].name in err[0] and "NaN" in err[0], err
    assert all((out2 / f.with_suffix(".png").name).is_file() for f in files[:11])


@pytest.mark.parametrize("kind", ["alike", "same-bytes-other-size", "mixed"])
def test_binarize_batch_statistics_while_reading_equal_those_of_the_maps(tmp_path, kind, monkeypatch):
    """The mean's pass runs while the maps are read when the files' sizes promise the maps'
    sizes; a file that breaks the promise (as many bytes, fewer pixels) or an unknown size
    (another layout, .npy) falls back to the maps read. Either way: the statistics of the maps."""
    import tifffile

    from sdk.imageio import read_map
    from sdk.postprocess.binarize import as_map

    rng = np.random.default_rng(7)
    maps = tmp_path / "maps"
    maps.mkdir()
    for i in range(12):
        m = cv2.GaussianBlur(rng.random((48, 60)), (0, 0), 3) * 180 + rng.random((48, 60)) * 40
        tifffile.imwrite(maps / f"m{i:02d}.tiff", m.astype(np.float16))
    if kind == "same-bytes-other-size":  # float32 with half the rows: a file of the same size
        tifffile.imwrite(maps / "m05.tiff", (rng.random((24, 60)) * 255).astype(np.float32))
        assert (maps / "m05.tiff").stat().st_size == (maps / "m04.tiff").stat().st_size
    if kind == "mixed":
        (maps / "m03.tiff").unlink()
        np.save(maps / "m03.npy", (rng.random((30, 20)) * 255).astype(np.float32))
        m08 = (rng.random((48, 60)) * 255).astype(np.float16)
        tifffile.imwrite(maps / "m08.tiff", m08, compression="zlib")
    files = sorted(maps.iterdir())
    expect = BinStats.from_maps([as_map(read_map(f), "float16") for f in files])
    calls, from_maps = [], BinStats.from_maps.__func__

    def spy(cls, maps, sizes=None):
        calls.append("while reading" if sizes is not None else "after")
        return from_maps(cls, maps, sizes)

    monkeypatch.setattr(BinStats, "from_maps", classmethod(spy))
    out = tmp_path / "out"
    assert main(["binarize", "--maps", str(maps), "--out", str(out)]) == 0
    assert calls == {"alike": ["while reading"], "same-bytes-other-size": ["while reading", "after"],
                     "mixed": ["after"]}[kind]
    got = json.loads((out / "thresholds.json").read_text())["statistics"]
    assert (got["mebin_min_th"], got["mebin_max_th"], got["ms_mean"], got["ms_std"]) == \
        (expect.mebin_min_th, expect.mebin_max_th, expect.ms_mean, expect.ms_std)


def test_binarize_empty_folder_is_an_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["binarize", "--maps", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no .tif" in capsys.readouterr().err


def test_inspect_magnetic_tiles_odd_sized_gray(tmp_path, demo_bundle):
    """Real industrial images (odd sizes, grayscale JPEG) through `inspect`."""
    data = shared_path("data", "magnetic_tile")
    imgs = tmp_path / "imgs"
    for cls in ("MT_Free", "MT_Blowhole", "MT_Crack"):
        for f in sorted((data / cls / "Imgs").glob("*.jpg"))[:2]:
            (imgs / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, imgs / cls / f.name)
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    rc = main(["inspect", "--bundle", str(demo_bundle), "--images", str(imgs), "--out", str(out),
               "--backend", "ort-cpu"])
    assert rc == 1  # one unreadable file; the others were processed
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 7
    errors = [x for x in lines if x["verdict"] == "error"]
    assert len(errors) == 1 and errors[0]["file"] == "broken.jpg"
    for x in lines:
        if x["verdict"] == "error":
            continue
        src = cv2.imread(str(imgs / x["file"]), cv2.IMREAD_UNCHANGED)
        assert src.ndim == 2 and x["frame_hw"] == list(src.shape)
        mask = cv2.imread(str(out / "masks" / x["file"].replace(".jpg", ".png")), 0)
        assert mask is not None and set(np.unique(mask)) <= {0, 255}
        ov = cv2.imread(str(out / "overlays" / x["file"].replace(".jpg", ".png")))
        assert ov.shape[:2] == src.shape


def test_inspect_batch_scope_and_single_image(tmp_path, demo_bundle):
    from sdk.tools.synthetic import make_frames

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for f in make_frames(3, 600, 700, seed=2):
        cv2.imwrite(str(imgs / f"{f.name}.png"), f.image)
    assert main(["inspect", "--bundle", str(demo_bundle), "--images", str(imgs), "--out",
                 str(tmp_path / "b"), "--scope", "batch", "--no-overlays"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert [x["scope"] for x in lines] == ["batch"] * 3
    assert not (tmp_path / "b" / "overlays").exists()
    one = sorted(imgs.iterdir())[0]
    assert main(["inspect", "--bundle", str(demo_bundle), "--image", str(one), "--out",
                 str(tmp_path / "s"), "--mask-scale", "1"]) == 0
    mask = cv2.imread(str(tmp_path / "s" / "masks" / one.name), 0)
    assert mask.shape == (600, 700)


def test_help_for_every_command(capsys):
    commands = ("binarize", "inspect", "calibrate", "evaluate", "bench", "export", "serve", "camera", "keys",
                "fit")
    for cmd in commands:
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert "usage: robis-edge " + cmd in capsys.readouterr().out


def test_calibrate_then_calibrated_scope_equals_batch(tmp_path, demo_bundle, capsys):
    """Calibrating on a set and inspecting that set in the calibrated scope reproduces the batch
    scope over the set exactly (same statistics, no clipping inside the calibration set)."""
    from sdk import Bundle, Inspector
    from sdk.tools.synthetic import make_frames

    good, bad = tmp_path / "good", tmp_path / "bad"
    frames = make_frames(6, 500, 600, defect_rate=0.5, seed=11)
    for f in frames:
        d = bad if f.defective else good
        d.mkdir(exist_ok=True)
        cv2.imwrite(str(d / f"{f.name}.png"), f.image)
    assert main(["calibrate", "--bundle", str(demo_bundle), "--images", str(good), "--defective", str(bad),
                 "--dry-run"]) == 0
    assert Bundle.load(demo_bundle)._raw["calibration"]["source"] == "sdk.synthetic seed 1000"  # unchanged
    assert main(["calibrate", "--bundle", str(demo_bundle), "--images", str(good), "--defective",
                 str(bad)]) == 0
    out = capsys.readouterr()
    assert "MEBin search range" in out.out and "only 6 images" in out.err
    bundle = Bundle.load(demo_bundle)
    cal = bundle.calibration
    assert cal.n_images == 6 and cal.n_defective == sum(f.defective for f in frames)
    files = sorted(good.glob("*.png")) + sorted(bad.glob("*.png"))
    images = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    insp = Inspector(bundle, backend="ort-cpu")
    assert insp.scope == "calibrated"
    batch = insp.inspect_batch(images, ["gray"] * len(images), scope="batch")
    for im, rb in zip(images, batch):
        rc = insp.inspect(im, "gray")
        assert np.array_equal(rc.anomaly_map, rb.anomaly_map)
        assert np.array_equal(rc.mask, rb.mask) and rc.verdict == rb.verdict


def test_calibrate_warns_on_degenerate_sets(tmp_path, demo_bundle, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    cv2.imwrite(str(imgs / "flat.png"), np.full((400, 400), 128, np.uint8))
    assert main(["calibrate", "--bundle", str(demo_bundle), "--images", str(imgs), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "only 1 images" in err and "MEBin search range is empty" in err and "no defective" in err
    assert main(["calibrate", "--bundle", str(demo_bundle), "--images", str(tmp_path / "none")]) == 2
