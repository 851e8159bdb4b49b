"""``robis-edge evaluate`` end to end: synthetic datasets in each layout and magnetic_tile, with the
metrics recomputed here from the written maps and masks by the oracles of test_metrics.py; the
HTML report rendered by headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_command, shared_path
from test_metrics import as_f16, f1_oracle, label_oracle, pro_curve_sorted, trapezoid_oracle

from sdk.errors import InputError
from sdk.imageio import write_png
from sdk.tools.evaluation.datasets import detect_layout, load_dataset

SIZE = 512  # one demo-bundle tile (window 512) without padding: the demo detector works there


@pytest.fixture(scope="module")
def frames():
    from sdk.tools.synthetic import make_frames

    fr = make_frames(8, SIZE, SIZE, defect_rate=0.5, seed=11)
    assert 2 <= sum(f.defective for f in fr) <= 6
    return fr


def build_ad2(root: Path, frames, products=("widget",)) -> Path:
    for prod in products:
        d = root / prod
        write_png(d / "train" / "good" / "000_regular.png", frames[0].image)
        write_png(d / "validation" / "good" / "000_regular.png", frames[0].image)
        for i, f in enumerate(frames):
            name = f"{i:03d}_regular"
            if f.defective:
                write_png(d / "test_public" / "bad" / f"{name}.png", f.image)
                write_png(d / "test_public" / "ground_truth" / "bad" / f"{name}_mask.png", f.mask)
            else:
                write_png(d / "test_public" / "good" / f"{name}.png", f.image)
        (d / "test_private").mkdir()
    return root


def build_ad(root: Path, frames) -> Path:
    d = root / "widget"
    write_png(d / "train" / "good" / "000.png", frames[0].image)
    for i, f in enumerate(frames):
        kind = "scratch" if f.defective else "good"
        write_png(d / "test" / kind / f"{i:03d}.png", f.image)
        if f.defective:
            write_png(d / "ground_truth" / kind / f"{i:03d}_mask.png", f.mask)
    return root


def build_pairs(root: Path, frames) -> Path:
    for i, f in enumerate(frames):
        if i % 2:  # image.bmp + image.png
            (root / "line_a").mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / "line_a" / f"part{i:02d}.bmp"), f.image)
            write_png(root / "line_a" / f"part{i:02d}.png", f.mask)
        else:  # image.png + image_mask.png
            write_png(root / "line_b" / f"part{i:02d}.png", f.image)
            write_png(root / "line_b" / f"part{i:02d}_mask.png", f.mask)
    return root


BUILDERS = {"mvtec_ad2": build_ad2, "mvtec_ad": build_ad, "pairs": build_pairs}


# -- independent recomputation from the written files ---------------------------------------------


def _auroc_ranks(scores, labels):
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    order = np.argsort(s, kind="stable")
    ss = s[order]
    ranks = np.empty(s.size)
    i = 0
    while i < ss.size:  # average rank of each run of ties
        j = i
        while j + 1 < ss.size and ss[j + 1] == ss[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return (ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _f1_max_sorted(scores, labels):
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    keep = np.append(np.diff(s) != 0, True)
    return float(np.max(2 * tp[keep] / (tp[keep] + fp[keep] + y.sum())))


def recompute(out: Path, product: str, fpr_limit: float = 0.05) -> dict:
    """All metrics of one product from maps/, masks/, per_image.jsonl and the ground-truth files."""
    import tifffile

    recs = [json.loads(line) for line in (out / "per_image.jsonl").read_text().splitlines()]
    recs = [r for r in recs if r["product"] == product and r["verdict"] != "error"]
    maps, gts, preds, scores, labels, fails = [], [], [], [], [], []
    for r in recs:
        amap = tifffile.imread(out / "maps" / product / f"{r['name']}.tiff")
        mask = cv2.imread(str(out / "masks" / product / f"{r['name']}.png"), cv2.IMREAD_GRAYSCALE)
        if r["ground_truth"] is None:
            h, w = cv2.imread(r["image"], cv2.IMREAD_UNCHANGED).shape[:2]
            gt = np.zeros((h, w), bool)
        else:
            gt = cv2.imread(r["ground_truth"], cv2.IMREAD_GRAYSCALE) > 127
        h, w = gt.shape
        maps.append(as_f16(cv2.resize(amap, (w, h), interpolation=cv2.INTER_LINEAR)))
        preds.append(cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST) > 0)
        gts.append(gt)
        scores.append(float(amap.max()))
        labels.append(bool(gt.any()))
        fails.append(r["verdict"] == "fail")
    all_s = np.concatenate([m.ravel() for m in maps])
    all_g = np.concatenate([g.ravel() for g in gts])
    n_regions = sum(label_oracle(g)[1] for g in gts)
    out_d = {"seg_f1": f1_oracle(np.concatenate([p.ravel() for p in preds]), all_g),
             "class_f1": f1_oracle(fails, labels), "regions": n_regions, "images": len(recs)}
    if n_regions:
        fpr, pro = pro_curve_sorted(maps, gts)
        out_d["au_pro"] = trapezoid_oracle(fpr, pro, fpr_limit) / fpr_limit
        out_d["pixel_auroc"] = _auroc_ranks(all_s, all_g)
        out_d["pixel_f1_max"] = _f1_max_sorted(all_s, all_g)
    if any(labels) and not all(labels):
        out_d["image_auroc"] = _auroc_ranks(scores, labels)
    return out_d


def check_against_recomputed(out: Path, product: str) -> dict:
    summary = json.loads((out / "metrics.json").read_text())
    got = summary["products"][product]["metrics"]
    want = recompute(out, product, summary["fpr_limit"])
    for k in ("seg_f1", "class_f1", "au_pro", "pixel_auroc", "pixel_f1_max", "image_auroc"):
        if k in want:
            assert got[k]["value"] == pytest.approx(want[k], abs=1e-9), k
    assert got["au_pro"]["regions"] == want["regions"]
    assert got["seg_f1"]["images"] == want["images"]
    return got


# -- end to end --------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["mvtec_ad2", "mvtec_ad", "pairs"])
def test_evaluate_each_layout(tmp_path, demo_bundle, frames, layout, capsys):
    data = BUILDERS[layout](tmp_path / "data", frames)
    assert detect_layout(data) == layout
    out = tmp_path / "out"
    rc = run_command(["evaluate", "--bundle", str(demo_bundle), "--dataset", str(data), "--out", str(out),
                  "--save-maps", "--quiet"])
    assert rc == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["layout"] == layout and summary["scope"] == "calibrated"
    [product] = summary["products"]
    got = check_against_recomputed(out, product)
    assert got["class_f1"]["images"] == len(frames)
    assert got["class_f1"]["defective_images"] == sum(f.defective for f in frames)
    assert got["au_pro"]["value"] > 0.5  # the demo detector finds the synthetic defects
    text = capsys.readouterr().out
    assert "SegF1" in text and "AucPro@0.05" in text and "ms/image" in text
    np.load(out / "histograms.npz")  # readable


def test_layouts_give_the_same_numbers(tmp_path, demo_bundle, frames):
    """The same frames in three layouts: identical metrics."""
    from sdk.tools.evaluation.config import EvalConfig
    from sdk.tools.evaluation.evaluate import evaluate

    values = []
    for layout, build in BUILDERS.items():
        data = build(tmp_path / layout, frames)
        s = evaluate(data, demo_bundle, tmp_path / f"out-{layout}", config=EvalConfig(progress=False))
        [p] = s["products"].values()
        values.append({k: v["value"] for k, v in p["metrics"].items()})
    assert values[0] == values[1] == values[2]


def test_two_products_overall_is_the_mean(tmp_path, demo_bundle, frames, capsys):
    data = build_ad2(tmp_path / "data", frames, products=("widget", "gadget"))
    bundle2 = tmp_path / "b2"
    shutil.copytree(demo_bundle, bundle2)
    out = tmp_path / "out"
    rc = run_command(["evaluate", "--bundle", f"widget={demo_bundle}", "--bundle", f"gadget={bundle2}",
                  "--dataset", str(data), "--out", str(out), "--quiet", "--max-images", "5"])
    assert rc == 0
    s = json.loads((out / "metrics.json").read_text())
    assert list(s["products"]) == ["gadget", "widget"]
    for m, o in s["overall"]["metrics"].items():
        vals = [p["metrics"][m]["value"] for p in s["products"].values()]
        assert o["value"] == pytest.approx(np.mean(vals))
        assert o["images"] == 10
    assert s["products"]["gadget"]["bundle"]["path"] == str(bundle2)
    assert "mean" in capsys.readouterr().out
    with pytest.raises(InputError, match="no bundle for product"):
        run_command(["evaluate", "--bundle", f"widget={demo_bundle}", "--bundle", f"other={bundle2}",
                 "--dataset", str(data), "--out", str(out), "--quiet"])


def test_batch_scope_reproduces_inspect_batch(tmp_path, demo_bundle, frames):
    from sdk import Inspector

    data = build_pairs(tmp_path / "data", frames)
    out = tmp_path / "out"
    assert run_command(["evaluate", "--bundle", str(demo_bundle), "--dataset", str(data), "--out", str(out),
                    "--scope", "batch", "--save-maps", "--quiet"]) == 0
    check_against_recomputed(out, "data")
    samples = load_dataset(data)[0].samples
    images = [cv2.imread(str(s.image), cv2.IMREAD_UNCHANGED) for s in samples]
    want = Inspector(demo_bundle, backend="ort-cpu", scope="rolling").inspect_batch(images, scope="batch")
    for s, r in zip(samples, want):
        got = cv2.imread(str(out / "masks" / "data" / f"{s.name}.png"), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(got, r.mask)
    assert json.loads((out / "metrics.json").read_text())["scope"] == "batch"
    out2 = tmp_path / "out2"
    assert run_command(["evaluate", "--bundle", str(demo_bundle), "--dataset", str(data), "--out", str(out2),
                    "--scope", "rolling", "--save-maps", "--quiet"]) == 0
    check_against_recomputed(out2, "data")


def test_magnetic_tile_pairs(tmp_path, demo_bundle):
    data = shared_path("data", "magnetic_tile")
    out = tmp_path / "out"
    rc = run_command(["evaluate", "--bundle", str(demo_bundle), "--dataset", str(data), "--out", str(out),
                  "--save-maps", "--quiet", "--max-images", "40", "--backend", "ort-cpu"])
    assert rc == 0
    s = json.loads((out / "metrics.json").read_text())
    assert s["layout"] == "pairs"
    p = s["products"]["magnetic_tile"]
    assert set(p["groups"]) == {"MT_Blowhole", "MT_Break", "MT_Crack", "MT_Free"}
    assert p["images"] == 40 and 0 < p["defective_images"] < 40
    got = check_against_recomputed(out, "magnetic_tile")
    assert got["au_pro"]["regions"] >= p["defective_images"]


def test_dataset_errors(tmp_path, frames):
    ad2 = build_ad2(tmp_path / "ad2", frames[:4])
    with pytest.raises(InputError, match="no public ground truth"):
        load_dataset(ad2, split="test_private")
    with pytest.raises(InputError, match="not in"):
        load_dataset(ad2, products=["nope"])
    assert [len(p.samples) for p in load_dataset(ad2, split="validation")] == [1]
    bad = next((ad2 / "widget" / "test_public" / "ground_truth" / "bad").iterdir())
    bad.unlink()
    with pytest.raises(InputError, match="no ground truth"):
        load_dataset(ad2)
    pairs = tmp_path / "pairs"
    write_png(pairs / "a.png", frames[0].image)
    cv2.imwrite(str(pairs / "b.jpg"), frames[1].image)
    write_png(pairs / "b.png", frames[1].mask)
    with pytest.raises(InputError, match="have no mask"):
        load_dataset(pairs, "pairs")
    with pytest.raises(InputError, match="no known dataset layout"):
        detect_layout(tmp_path / "ad2" / "widget" / "test_private")


def test_report_needs_matplotlib(tmp_path, demo_bundle, frames, monkeypatch):
    data = build_pairs(tmp_path / "data", frames[:2])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(InputError, match=r"robis-edge\[report\]"):
        run_command(["evaluate", "--bundle", str(demo_bundle), "--dataset", str(data), "--out",
                 str(tmp_path / "out"), "--report", "--quiet"])
    assert not (tmp_path / "out").exists()  # refused before any work


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_html_in_headless_chromium(tmp_path, demo_bundle, frames):
    pytest.importorskip("matplotlib")
    data = build_ad2(tmp_path / "data", frames)
    out = tmp_path / "out"
    assert run_command(["evaluate", "--bundle", str(demo_bundle), "--dataset", str(data), "--out", str(out),
                    "--report", "--gallery", "4", "--quiet"]) == 0
    page = (out / "report.html").read_text()
    assert "<table class='metrics'>" in page and "AucPro@0.05" in page
    assert page.count("data:image/png;base64,") == 3  # PR, PRO, image scores
    assert 1 <= page.count("data:image/jpeg;base64,") <= 8  # the galleries
    assert "http://" not in page and "https://" not in page  # self-contained
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed")
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={shot}",
                    "--window-size=1200,1600", (out / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    img = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[:2] == (1600, 1200)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    assert gray.std() > 20  # not a blank page
    colors = np.unique(img.reshape(-1, 3) // 16, axis=0)
    assert len(colors) > 100  # plots, heat maps, table shading
    top = gray[:120]  # the title: dark text on a light background
    assert (top < 80).mean() > 0.005 and (top > 200).mean() > 0.5


def test_calibrated_scope_needs_a_calibrated_bundle(tmp_path, make_bundle, frames):
    from sdk.errors import CalibrationError

    data = build_pairs(tmp_path / "data", frames[:2])
    with pytest.raises(CalibrationError, match="calibrate"):
        run_command(["evaluate", "--bundle", str(make_bundle().root), "--dataset", str(data), "--out",
                 str(tmp_path / "out"), "--quiet"])
