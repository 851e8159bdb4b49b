"""The committed INP-Former demo bundle (examples/demo/bundle, what `make demo` runs): complete,
calibrated, small, and on fresh synthetic sheet frames (a seed the builder never used) it passes
good parts, fails defective ones and puts its regions on the defects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdk import Bundle, Inspector
from sdk.tools.synthetic import make_scene_frames

BUNDLE = Path(__file__).resolve().parents[1] / "examples" / "demo" / "bundle"
FRESH_SEED = 909  # not among examples/demo/build_bundle.py SEEDS


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    if not (BUNDLE / "bundle.json").exists():
        pytest.fail("examples/demo/bundle is missing: run examples/demo/build_bundle.py")
    return Bundle.load(BUNDLE)  # checks every file's sha256


def test_demo_bundle_is_complete_calibrated_and_small(bundle):
    assert bundle.calibration is not None
    assert bundle.frame_hw == (1432, 1892)
    assert bundle._raw["reference"] and bundle.verdict.min_area_px > 1
    training = bundle._raw["provenance"]["training"]
    assert training["encoder_kind"] == "demo" and "NOT pretrained" in training["note"]
    assert sum(p.stat().st_size for p in BUNDLE.rglob("*") if p.is_file()) <= 10 * 2**20


def test_demo_bundle_on_fresh_sheet_frames(bundle):
    frames = make_scene_frames("sheet", 10, *bundle.frame_hw, defect_rate=0.5, seed=FRESH_SEED)
    insp = Inspector(bundle, backend="ort-cpu", threads=2, mask_scale=1.0)
    good = [f for f in frames if not f.defective]
    bad = [f for f in frames if f.defective]
    assert good and bad
    for f in good:
        assert insp.inspect(f.image, "gray").verdict == "pass", f.name
    detected = 0
    for f in bad:
        r = insp.inspect(f.image, "gray")
        if r.verdict != "fail":
            continue
        detected += 1
        # The largest region lies on a true defect; the mask covers most defect pixels and stays
        # local: under 3 % of the frame, where one whole 512-px tile would be 10 %.
        x0, y0, x1, y1 = r.regions[0].bbox
        assert f.mask[y0:y1, x0:x1].any(), f.name
        mask, truth = r.mask > 0, f.mask > 0
        assert np.count_nonzero(mask & truth) >= 0.5 * np.count_nonzero(truth), f.name
        assert np.count_nonzero(mask) <= 0.03 * mask.size, f.name
    assert detected >= len(bad) - 1


@pytest.mark.slow
def test_demo_bundle_ttt_refinement(bundle):
    """The features output and refine.ttt (not enabled): on the fresh frames, --refine ttt keeps
    every verdict (verdict_from coarse) and raises the pixel F1 of the masks."""
    pytest.importorskip("sklearn")
    assert bundle.model.features == "features" and bundle.ttt is not None and not bundle.ttt.enabled
    frames = make_scene_frames("sheet", 10, *bundle.frame_hw, defect_rate=0.5, seed=FRESH_SEED)
    plain = Inspector(bundle, backend="ort-cpu", threads=2, mask_scale=1.0)
    ttt = Inspector(bundle, backend="ort-cpu", threads=2, mask_scale=1.0, refine="ttt")
    assert plain.refine_mode == "none" and ttt.refine_mode == "ttt"
    counts = {"none": [0, 0, 0], "ttt": [0, 0, 0]}
    for f in frames:
        r0, r1 = plain.inspect(f.image, "gray"), ttt.inspect(f.image, "gray")
        assert r0.verdict == r1.verdict, f.name
        assert ("ttt_fit" in r1.timings_ms) == (r0.verdict == "fail"), f.name
        truth = f.mask > 0
        for key, r in (("none", r0), ("ttt", r1)):
            m = r.mask > 0
            c = counts[key]
            c[0] += np.count_nonzero(m & truth)
            c[1] += np.count_nonzero(m & ~truth)
            c[2] += np.count_nonzero(~m & truth)
    f1 = {k: 2 * tp / (2 * tp + fp + fn) for k, (tp, fp, fn) in counts.items()}
    assert f1["ttt"] > 1.2 * f1["none"], f1
