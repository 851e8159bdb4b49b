"""Export an anomaly-map model (image N×3×S×S → anomaly_map N×1×M×M) to ONNX and verify it.

Uses the TorchScript exporter (``dynamo=False``, pinned: its graphs for this model are the verified
ones), then ``onnx.checker`` and an ONNX Runtime CPU run against torch.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ExportError

INPUT_NAME = "image"
OUTPUT_NAME = "anomaly_map"
FEATURES_NAME = "features"


class MapAndFeatures(nn.Module):
    """INP-Former with a second output: the encoder's fused feature at patch resolution
    (N×C×g×g), the mean of the ``target_layers`` patch tokens that the bottleneck takes. The graph
    already computes it for the map, so the output costs no extra work (docs/refine.md, TTT)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.arch = model.arch

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        en, de, fused, _ = self.model.parts(image)
        return self.model.head(en, de), self.model._to_map(fused)


class ExportMismatchError(ExportError, RuntimeError):
    """ONNX Runtime output differs from torch by more than the tolerance."""


def export_onnx(model: nn.Module, path: str | Path, batch_dynamic: bool = True, opset: int = 17,
                tolerance: float = 1e-4, check_batch: int = 2, input_size: int | None = None,
                seed: int = 0, features: bool = False) -> dict[str, Any]:
    """Export ``model`` to ``path`` and check it; returns a report dict.

    ``input_size`` defaults to ``model.arch.img_size``. The check feeds a random N(0,1) batch of
    ``check_batch`` tiles (1 when the batch is static) to torch and ORT-CPU and raises
    ExportMismatchError when max |Δ| > ``tolerance``. ``features`` adds the second output
    ``features`` (``MapAndFeatures``), checked the same way."""
    import onnx
    import onnxruntime as ort

    path = Path(path)
    size = input_size if input_size is not None else model.arch.img_size  # type: ignore[attr-defined]
    n = check_batch if batch_dynamic else 1
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=gen)
    model = model.eval().float()
    names = [OUTPUT_NAME, FEATURES_NAME] if features else [OUTPUT_NAME]
    if features:
        model = MapAndFeatures(model).eval()
    dynamic_axes = {n: {0: "N"} for n in (INPUT_NAME, *names)} if batch_dynamic else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and the exporter's deprecation notice
        torch.onnx.export(model, (x,), str(path), input_names=[INPUT_NAME], output_names=names,
                          dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False,
                          do_constant_folding=True)
        out = model(x)
        expected_all = [t.numpy() for t in (out if features else (out,))]
        expected = expected_all[0]

    onnx.checker.check_model(str(path))
    proto = onnx.load(str(path), load_external_data=False)
    ops = Counter(node.op_type for node in proto.graph.node)

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    diffs = {}
    for name, got, want in zip(names, sess.run(names, {INPUT_NAME: x.numpy()}), expected_all):
        if got.shape != want.shape:
            raise ExportMismatchError(f"ONNX check failed: ORT output {name!r} shape {got.shape} != torch "
                                      f"{want.shape}")
        d = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
        if not d <= tolerance:
            raise ExportMismatchError(f"ONNX check failed: ORT vs torch max |diff| of {name!r} {d:.3g} > "
                                      f"tolerance {tolerance:.3g}")
        diffs[name] = d
    diff = diffs[OUTPUT_NAME]
    report = {
        "path": str(path),
        "opset": opset,
        "dynamic_batch": batch_dynamic,
        "input_shape": ["N" if batch_dynamic else 1, 3, size, size],
        "output_shape": ["N" if batch_dynamic else 1, *expected.shape[1:]],
        "check_batch": n,
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "ops": dict(sorted(ops.items())),
        "file_size_bytes": path.stat().st_size,
    }
    if features:
        report["features_shape"] = ["N" if batch_dynamic else 1, *expected_all[1].shape[1:]]
        report["features_max_abs_diff"] = diffs[FEATURES_NAME]
    return report
