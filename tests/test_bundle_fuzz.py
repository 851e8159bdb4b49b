"""bundle.json mutated at random (wrong types, out-of-range values, missing and extra sections):
loading gives a BundleError, or a bundle that an Inspector is built from and runs a frame with;
never another exception (issue 14)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sdk.errors import BundleError, RobisError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {"classical": ROOT / "examples" / "demo-bundle", "inpformer": ROOT / "examples" / "demo" / "bundle"}
SECTIONS = ("anomaly_model", "preprocess", "tiling", "postprocess", "verdict", "calibration", "reference",
            "refine", "engines", "files", "provenance", "format", "name")

_scalars = (st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True)
            | st.text(max_size=6) | st.sampled_from([0, -1, 1, 2, 0.5, 1.5, 255, 256, 1e9, -1e-9, "abc", ""]))
_values = st.recursive(_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c,
                                                                                       max_size=3),
                       max_leaves=6)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutations(draw, raw: dict):
    """One to three edits of ``raw``: replace a value, delete a key or item, add a key or section."""
    out = copy.deepcopy(raw)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(out) if p]
        kind = draw(st.sampled_from(["replace", "replace", "delete", "extra", "section"]))
        if kind == "section":
            out[draw(st.sampled_from(SECTIONS))] = draw(_values)
            continue
        path = draw(st.sampled_from(paths))
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        if kind == "replace":
            parent[last] = draw(_values)
        elif kind == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(_values)
    return out


def _check(root: Path, raw: dict, frame: np.ndarray) -> str:
    from sdk import Bundle, Inspector

    (root / "bundle.json").write_text(json.dumps(raw), encoding="utf-8")
    try:
        bundle = Bundle.load(root)
    except BundleError as exc:
        assert "\n" not in str(exc).strip() and str(exc)
        return "refused"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            insp = Inspector(bundle, backend="ort-cpu", threads=1)
            res = insp.inspect(frame)
        except RobisError as exc:  # a frame this bundle cannot take, or a model it does not match
            assert str(exc)
            return type(exc).__name__
    assert res.verdict in ("pass", "fail") and res.mask.dtype == np.uint8
    return "ran"


@pytest.mark.parametrize("which", list(BUNDLES))
def test_mutated_bundle_json_loads_or_is_refused_in_one_line(which, tmp_path_factory):
    src = BUNDLES[which]
    root = tmp_path_factory.mktemp(which) / "bundle"
    shutil.copytree(src, root)
    raw = json.loads((src / "bundle.json").read_text(encoding="utf-8"))
    frame = np.random.default_rng(0).integers(0, 255, (300, 420), dtype=np.uint8)
    assert _check(root, raw, frame) == "ran"
    seen: dict[str, int] = {}

    @settings(max_examples=int(os.environ.get("FUZZ_N", 40)), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(mutations(raw))
    def run(mutated):
        outcome = _check(root, mutated, frame)
        seen[outcome] = seen.get(outcome, 0) + 1

    run()
    print(which, seen)
    assert seen.get("refused", 0) > 0  # the strategy does reach the schema
