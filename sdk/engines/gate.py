"""The parity gate of ``robis-edge build``: a new engine must agree with ONNX Runtime fp32.

One gate for every engine builder (TensorRT, OpenVINO: each walks the same ladder).

Measured on the bundle's reference tiles (sdk/engines/reference.py), each run through the whole pipeline
(preprocess → model → normalise with the bundle's calibration → binarise → regions → verdict) once
with ONNX Runtime fp32 on the CPU and once with the engine:

- ``cosine``: the smallest cosine similarity between the two maps of a tile;
- ``max_abs``: the largest absolute map difference, on the calibrated 0..1 scale (or relative
  to the reference map's range when the bundle is not calibrated);
- ``verdicts``: every tile's pass/fail must be the same;
- ``mask_iou``: the smallest IoU of the two masks (1 when both are empty).

Tolerances per precision are in ``TOLERANCES`` (docs/gpu.md). A failed step makes ``next_step``
return the next rung of the ladder (fp16 → fp16 with more fp32 layers → fp32); fp32 failing
means this TensorRT miscompiles the model and the build is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    min_cosine: float
    max_abs: float
    min_mask_iou: float


TOLERANCES = {
    "fp32": Tolerance(min_cosine=0.99999, max_abs=1e-3, min_mask_iou=0.98),
    "fp16-safe": Tolerance(min_cosine=0.999, max_abs=0.02, min_mask_iou=0.9),
    "fp16": Tolerance(min_cosine=0.999, max_abs=0.02, min_mask_iou=0.9),
    "int8": Tolerance(min_cosine=0.99, max_abs=0.05, min_mask_iou=0.8),
    # OpenVINO's precision names (docs/openvino.md): f32 as fp32, bf16 as fp16.
    "f32": Tolerance(min_cosine=0.99999, max_abs=1e-3, min_mask_iou=0.98),
    "bf16": Tolerance(min_cosine=0.999, max_abs=0.02, min_mask_iou=0.9),
}


@dataclass
class GateReport:
    """What the gate measured for one engine, and whether it passed."""

    precision: str
    tiles: int
    cosine: float
    max_abs: float
    verdicts_agree: int
    mask_iou: float
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    def line(self) -> str:
        return (f"{self.precision}: cosine {self.cosine:.6f}, max |Δ| {self.max_abs:.2e}, verdicts "
                f"{self.verdicts_agree}/{self.tiles}, mask IoU {self.mask_iou:.3f} → "
                + ("PASS" if self.passed else "FAIL (" + "; ".join(self.failures) + ")"))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def compare(precision: str, ref_maps: Sequence[np.ndarray], maps: Sequence[np.ndarray],
            ref_verdicts: Sequence[str], verdicts: Sequence[str], ref_masks: Sequence[np.ndarray],
            masks: Sequence[np.ndarray], scale: float | None = None,
            tolerances: dict[str, Tolerance] | None = None) -> GateReport:
    """The gate's decision on recorded outputs of the reference (ONNX Runtime fp32) and the engine.

    ``scale``: what |Δ| is measured against (1 for calibrated 0..1 maps; default: each reference
    map's range). ``tolerances``: per precision, instead of ``TOLERANCES`` (stricter checks)."""
    n = len(ref_maps)
    if not (n == len(maps) == len(ref_verdicts) == len(verdicts) == len(ref_masks) == len(masks)) or n == 0:
        raise ValueError("the gate needs the same, non-zero number of maps, verdicts and masks from "
                         "both runs")
    tol = (tolerances or TOLERANCES)[precision]
    cos, dmax = [], []
    for r, m in zip(ref_maps, maps):
        if r.shape != m.shape:
            raise ValueError(f"map shapes differ: {r.shape} vs {m.shape}")
        cos.append(_cosine(r, m) if np.isfinite(m).all() else 0.0)
        rng = scale if scale is not None else float(np.ptp(r)) or 1.0
        d = np.abs(r.astype(np.float64) - m.astype(np.float64))
        dmax.append(float(d.max()) / rng if np.isfinite(d).all() else float("inf"))
    agree = sum(a == b for a, b in zip(ref_verdicts, verdicts))
    ious = [_iou(a, b) for a, b in zip(ref_masks, masks)]
    report = GateReport(precision, n, min(cos), max(dmax), agree, min(ious))
    if report.cosine < tol.min_cosine:
        report.failures.append(f"map cosine {report.cosine:.6f} < {tol.min_cosine}")
    if report.max_abs > tol.max_abs:
        report.failures.append(f"map |Δ| {report.max_abs:.2e} > {tol.max_abs:g}")
    if agree != n:
        bad = [i for i, (a, b) in enumerate(zip(ref_verdicts, verdicts)) if a != b]
        report.failures.append(f"verdicts differ on tile(s) {bad}")
    if report.mask_iou < tol.min_mask_iou:
        report.failures.append(f"mask IoU {report.mask_iou:.3f} < {tol.min_mask_iou}")
    return report


def compare_tensors(precision: str, ref: Sequence[np.ndarray], out: Sequence[np.ndarray],
                    sign_iou: bool = False) -> GateReport:
    """The gate for models without a verdict (the SAM encoder and decoder): cosine and |Δ|
    relative to each reference tensor's range; ``sign_iou`` also compares ``> 0`` (mask logits)."""
    masks_r = [r > 0 for r in ref] if sign_iou else [np.zeros(1, bool)] * len(ref)
    masks_o = [o > 0 for o in out] if sign_iou else [np.zeros(1, bool)] * len(out)
    v = ["-"] * len(ref)
    return compare(precision, ref, out, v, v, masks_r, masks_o)


def next_step(ladder: Sequence[str], step: str, report: GateReport) -> str | None:
    """The precision to try after ``step`` (None: accept ``step`` when it passed, or give up)."""
    if report.passed:
        return None
    i = list(ladder).index(step)
    return ladder[i + 1] if i + 1 < len(ladder) else None


# -- the whole pipeline on the reference tiles ---------------------------------------------------
def pipeline_outputs(bundle, backend, tiles: list[np.ndarray], color: str):
    """Maps (0..255), verdicts and masks of the reference tiles through the whole pipeline with
    ``backend`` (calibrated scope when the bundle is calibrated, else batch scope over the tiles)."""
    from ..inspector import Inspector

    insp = Inspector(bundle, backend=backend, scope="calibrated" if bundle.calibration else "rolling")
    colors = [color] * len(tiles)
    if bundle.calibration is not None:
        results = [insp.inspect(t, c) for t, c in zip(tiles, colors)]
    else:
        results = insp.inspect_batch(tiles, colors, scope="batch")
    return ([r.anomaly_map for r in results], [r.verdict for r in results], [r.mask for r in results])


def gate_anomaly_model(bundle, backend, reference, tiles: list[np.ndarray], color: str,
                       step: str, tolerances: dict[str, Tolerance] | None = None) -> GateReport:
    """The gate for a candidate anomaly-model backend against ``reference`` (``pipeline_outputs``
    of ONNX Runtime fp32): maps compared on the 0..255 scale, verdicts, masks."""
    maps, verdicts, masks = pipeline_outputs(bundle, backend, tiles, color)
    return compare(step, reference[0], maps, reference[1], verdicts, reference[2], masks, scale=255.0,
                   tolerances=tolerances)


def failed_report(step: str, tiles: int, why: str) -> GateReport:
    """The report of a candidate that could not be built or run at all (nothing was measured)."""
    return GateReport(step, tiles, 0.0, 1.0, 0, 0.0, [why])


# -- walking down the ladder ------------------------------------------------------------------------
@dataclass
class Candidate:
    """What a builder made at one ladder step: the gate's report, and how to keep or drop it."""

    report: GateReport
    accept: Callable[[list[GateReport]], Any]  # make it permanent; gets every report so far
    discard: Callable[[], None]


@dataclass
class LadderResult:
    step: str | None  # the accepted step, None when every step failed
    accepted: Any  # what ``Candidate.accept`` returned
    reports: list[GateReport]


def walk_ladder(ladder: Sequence[str], attempt: Callable[[str], Candidate],
                log: Callable[[str], None] = print) -> LadderResult:
    """Try each step of ``ladder`` in turn (``attempt`` builds and gates a candidate) until one
    passes; failed candidates are discarded. The builder decides what a step means."""
    reports: list[GateReport] = []
    step: str | None = ladder[0]
    while step is not None:
        cand = attempt(step)
        reports.append(cand.report)
        log(f"      parity gate {cand.report.line()}")
        if cand.report.passed:
            return LadderResult(step, cand.accept(reports), reports)
        cand.discard()
        step = next_step(ladder, step, cand.report)
        log(f"      stepping down to {step}" if step else "      no precision passed")
    return LadderResult(None, None, reports)
