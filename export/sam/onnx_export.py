"""Export SAM's encoder and box decoder to ONNX (docs/bundle.md contract) and check them with
ONNX Runtime against the upstream segment-anything modules.

TorchScript exporter (``dynamo=False``), opset 17 (LayerNorm stays one node). Each export is
verified: ``onnx.checker``, no ``Einsum`` node, then ORT-CPU outputs vs the *upstream* torch
modules (not the rewritten wrappers) on a random input, max |Δ| ≤ tolerance.
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
from .model import IMAGE_SIZE, SamBoxDecoderExport, SamEncoderExport, reference_decoder

ENCODER_INPUT, ENCODER_OUTPUT = "image", "embeddings"
DECODER_INPUTS, DECODER_OUTPUTS = ("embeddings", "boxes"), ("masks", "iou")
FORBIDDEN_OPS = ("Einsum",)
OPSET = 17


class SamExportMismatchError(ExportError, RuntimeError):
    """ONNX Runtime differs from torch by more than the tolerance, or the graph has a forbidden op."""


def _ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def graph_ops(path: str | Path) -> dict[str, int]:
    """Op-type histogram of an ONNX file (weights not loaded)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return dict(sorted(Counter(n.op_type for n in proto.graph.node).items()))


def external_data_files(path: str | Path) -> list[str]:
    """File names (relative to the model) of external tensor data, e.g. for ViT-H (> 2 GB)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    names = set()
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            names.update(e.value for e in t.external_data if e.key == "location")
    return sorted(names)


def fold_small_constants(path: str | Path, max_elements: int = 4096) -> int:
    """Evaluate, once, every node whose inputs are all constants and whose outputs are small
    (≤ ``max_elements``), and store the results as initializers; drop what became unused.

    The TorchScript exporter leaves constant shape arithmetic in the graph: ``F.pad``'s pads as a
    Concat/Slice/Transpose/Cast chain, ``expand``'s −1 handling as Equal/Where. TensorRT wants
    Pad's pads (and, preferably, Expand's shape) as initializers. Large tensors (weights, the
    results of folding them) are left alone, so the file does not grow. Returns the number of
    nodes removed. Uses ``onnx.reference`` (the ONNX reference evaluator) for the arithmetic."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    g = proto.graph
    known: dict[str, np.ndarray] = {}
    for init in g.initializer:
        if init.data_location != onnx.TensorProto.EXTERNAL and int(np.prod(init.dims)) <= max_elements:
            known[init.name] = numpy_helper.to_array(init)
    kept, folded = [], 0
    for node in g.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            value = ReferenceEvaluator(node).run(None, {})[0]
            if value.size <= max_elements:
                known[node.output[0]] = value
                folded += 1
                continue
        elif node.domain in ("", "ai.onnx") and node.input and all(i == "" or i in known for i in node.input):
            try:
                outs = ReferenceEvaluator(node).run(None, {i: known[i] for i in node.input if i})
            except Exception:  # an op the reference evaluator cannot run: keep the node
                outs = None
            if outs is not None and all(np.asarray(o).size <= max_elements for o in outs):
                known.update({name: np.asarray(o) for name, o in zip(node.output, outs)})
                folded += 1
                continue
        kept.append(node)
    used = {i for n in kept for i in n.input} | {o.name for o in g.output}
    existing = {init.name for init in g.initializer}
    new_inits = [numpy_helper.from_array(known[name], name)
                 for name in sorted(used & known.keys() - existing)]
    del g.node[:]
    g.node.extend(kept)
    inits = [i for i in g.initializer if i.name in used] + new_inits
    del g.initializer[:]
    g.initializer.extend(inits)
    onnx.save(proto, str(path))
    return folded


def consolidate_external_data(path: str | Path) -> list[str]:
    """When the exporter wrote weights as external data (models over the 2 GB protobuf limit, e.g.
    ViT-H), gather them into one ``<model>.data`` file beside the model and delete the per-tensor
    files; returns the external file names (empty for ViT-B/L)."""
    import onnx

    path = Path(path)
    before = external_data_files(path)
    if not before:
        return []
    target = path.name + ".data"
    if before == [target]:
        return before
    proto = onnx.load(str(path), load_external_data=True)  # resolved next to the model
    tmp = path.with_name(path.name + ".tmp")
    onnx.save_model(proto, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=target + ".tmp", size_threshold=1024)
    del proto
    for name in before:
        (path.parent / name).unlink(missing_ok=True)
    (path.parent / (target + ".tmp")).replace(path.parent / target)
    proto = onnx.load(str(tmp), load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = target
    onnx.save(proto, str(path))
    tmp.unlink()
    return [target]


def _check_graph(path: Path) -> dict[str, int]:
    import onnx

    onnx.checker.check_model(str(path))
    ops = graph_ops(path)
    bad = [op for op in FORBIDDEN_OPS if op in ops]
    if bad:
        raise SamExportMismatchError(f"{path.name}: the graph still contains {bad} (TensorRT-hostile)")
    return ops


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def export_encoder(sam: nn.Module, path: str | Path, *, tolerance: float = 1e-4, seed: int = 0,
                   check: bool = True) -> dict[str, Any]:
    """Write the image encoder to ``path``; returns a report (max |ORT − upstream torch|, ops, size)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = SamEncoderExport(sam.image_encoder).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and the exporter's deprecation notice
        torch.onnx.export(wrapper, (x,), str(path), input_names=[ENCODER_INPUT],
                          output_names=[ENCODER_OUTPUT], opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)
    consolidate_external_data(path)
    fold_small_constants(path)
    ops = _check_graph(path)
    report: dict[str, Any] = {"path": str(path), "opset": OPSET, "ops": ops,
                              "input_shape": [1, 3, IMAGE_SIZE, IMAGE_SIZE],
                              "file_size_bytes": path.stat().st_size,
                              "external_data": external_data_files(path), "tolerance": tolerance}
    if check:
        with torch.no_grad():
            expected = sam.image_encoder(x).numpy()  # the upstream module itself
        got = _ort_session(path).run([ENCODER_OUTPUT], {ENCODER_INPUT: x.numpy()})[0]
        if got.shape != expected.shape:
            raise SamExportMismatchError(f"SAM encoder: ORT output {got.shape} != torch {expected.shape}")
        diff = _max_diff(got, expected)
        report.update(output_shape=list(got.shape), max_abs_diff=diff)
        if not diff <= tolerance:
            raise SamExportMismatchError(f"SAM encoder: ORT vs segment-anything max |diff| {diff:.3g} > "
                                         f"tolerance {tolerance:.3g}")
    return report


def random_boxes(n: int, seed: int = 0, size: int = IMAGE_SIZE) -> torch.Tensor:
    """``n`` valid x0,y0,x1,y1 boxes inside the ``size`` frame (float32)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 2, 2, generator=gen) * size
    lo, hi = torch.minimum(a[:, 0], a[:, 1]), torch.maximum(a[:, 0], a[:, 1])
    return torch.cat([lo, hi], 1)


def export_decoder(sam: nn.Module, path: str | Path, *, tolerance: float = 1e-4, seed: int = 0,
                   check: bool = True, check_batches: tuple[int, ...] = (1, 5)) -> dict[str, Any]:
    """Write the box decoder (dynamic number of boxes B) to ``path``; the check runs every B in
    ``check_batches`` through ORT and the upstream prompt encoder + mask decoder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = SamBoxDecoderExport(sam).eval()
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(1, 256, 64, 64, generator=gen)
    boxes = random_boxes(3, seed)
    dyn = {DECODER_INPUTS[1]: {0: "B"}, DECODER_OUTPUTS[0]: {0: "B"}, DECODER_OUTPUTS[1]: {0: "B"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (emb, boxes), str(path), input_names=list(DECODER_INPUTS),
                          output_names=list(DECODER_OUTPUTS), dynamic_axes=dyn, opset_version=OPSET,
                          dynamo=False, do_constant_folding=True)
    consolidate_external_data(path)
    fold_small_constants(path)
    ops = _check_graph(path)
    report: dict[str, Any] = {"path": str(path), "opset": OPSET, "ops": ops,
                              "file_size_bytes": path.stat().st_size, "tolerance": tolerance}
    if check:
        sess = _ort_session(path)
        diffs: dict[str, dict[str, float]] = {}
        for k, n in enumerate(check_batches):
            b = random_boxes(n, seed + 1 + k)
            with torch.no_grad():
                exp_m, exp_i = reference_decoder(sam, emb, b)
            got_m, got_i = sess.run(list(DECODER_OUTPUTS), {"embeddings": emb.numpy(), "boxes": b.numpy()})
            if got_m.shape != (n, 4, 256, 256) or got_i.shape != (n, 4):
                raise SamExportMismatchError(f"SAM decoder B={n}: ORT shapes {got_m.shape}, {got_i.shape}")
            diffs[str(n)] = {"masks": _max_diff(got_m, exp_m.numpy()), "iou": _max_diff(got_i, exp_i.numpy())}
        worst = max(max(d.values()) for d in diffs.values())
        report.update(max_abs_diff=worst, per_batch=diffs)
        if not worst <= tolerance:
            raise SamExportMismatchError(f"SAM decoder: ORT vs segment-anything max |diff| {worst:.3g} > "
                                         f"tolerance {tolerance:.3g} ({diffs})")
    return report
