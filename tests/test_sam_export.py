"""export.sam: SAM encoder / box-decoder ONNX export against the segment-anything modules
(random weights), the graphs' op lists, checkpoint reading and ``robis-edge export sam``."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import run_command  # noqa: E402

from export.errors import ExportError  # noqa: E402
from export.sam.model import (  # noqa: E402
    SamArch,
    SamBoxDecoderExport,
    SamEncoderExport,
    build_sam,
    infer_arch,
    official_arch,
    random_sam,
    reference_decoder,
)
from export.sam.onnx_export import (  # noqa: E402
    consolidate_external_data,
    export_decoder,
    export_encoder,
    external_data_files,
    graph_ops,
    random_boxes,
)
from export.sam.upstream import load_upstream  # noqa: E402
from sdk.bundle import Bundle, sha256_file  # noqa: E402
from sdk.refine import load_sam_refiner  # noqa: E402

SMALL = SamArch(embed_dim=64, depth=3, num_heads=2, global_attn_indexes=(1,), window_size=14)
TOL = 1e-4


def _sess(path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def upstream():
    try:
        return load_upstream()
    except ImportError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def small(upstream, tmp_path_factory):
    """Small random SAM: ViT dim 64, depth 3 (block 1 global, 0 and 2 windowed), real 1024 input,
    64×64 embedding, full-size prompt encoder / decoder; exported once."""
    sam = random_sam(SMALL, seed=0)
    d = tmp_path_factory.mktemp("sam_export")
    enc = export_encoder(sam, d / "enc.onnx", tolerance=TOL)
    dec = export_decoder(sam, d / "dec.onnx", tolerance=TOL, check_batches=(1, 5))
    return sam, d, enc, dec


# ============================================================================ upstream import
def test_upstream_import_leaves_no_stub(upstream):
    assert upstream.modeling.Sam.__module__ == "segment_anything.modeling.sam"
    assert set(upstream.build_sam.sam_model_registry) >= {"vit_b", "vit_l", "vit_h"}
    pkg = sys.modules.get("segment_anything")
    assert pkg is None or not getattr(pkg, "__robis_stub__", False)  # the stub parent is gone
    assert load_upstream().modeling is upstream.modeling  # one identity for the classes


# ============================================================================ architecture
@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
def test_infer_arch_from_official_keys(upstream, model_type):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        sd = build_sam(official_arch(model_type)).state_dict()
    arch = infer_arch(sd)
    assert arch == official_arch(model_type) and arch.model_type == model_type
    if model_type == "vit_b":
        assert len(sd) == 314  # upstream-robis.md §4.1


def test_infer_arch_custom_and_errors(upstream):
    sd = random_sam(SMALL).state_dict()
    assert infer_arch(sd) == SMALL and SMALL.model_type == "custom"
    from export.sam.model import SamCheckpointError

    with pytest.raises(SamCheckpointError, match="not a SAM checkpoint"):
        infer_arch({"foo": torch.zeros(1)})


# ============================================================================ encoder
def test_encoder_wrapper_equals_upstream_in_torch(small):
    sam = small[0]
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = sam.image_encoder(x)
        got = SamEncoderExport(sam.image_encoder)(x)
    assert ref.shape == (1, 256, 64, 64)
    assert float((ref - got).abs().max()) < 1e-4


def test_encoder_onnx_parity_and_ops(small):
    sam, d, enc, _ = small
    assert enc["max_abs_diff"] <= TOL and enc["output_shape"] == [1, 256, 64, 64]
    ops = graph_ops(d / "enc.onnx")
    assert "Einsum" not in ops
    # LayerNorm2d rewritten: one LayerNormalization each (2 per block + 2 in the neck), no
    # ReduceMean/Pow/Sqrt decomposition left
    assert ops["LayerNormalization"] == 2 * SMALL.depth + 2
    assert not {"ReduceMean", "Pow", "Sqrt"} & set(ops)
    # window padding: one Pad per windowed block, its pads an initializer (folded), no shape chain
    proto = onnx.load(str(d / "enc.onnx"))
    inits = {i.name for i in proto.graph.initializer}
    pads = [n for n in proto.graph.node if n.op_type == "Pad"]
    assert len(pads) == SMALL.depth - len(SMALL.global_attn_indexes)
    assert all(p.input[1] in inits for p in pads)
    assert not {"Shape", "ConstantOfShape", "Constant", "Where"} & set(ops)
    i, o = proto.graph.input[0], proto.graph.output[0]
    assert (i.name, [v.dim_value for v in i.type.tensor_type.shape.dim]) == ("image", [1, 3, 1024, 1024])
    assert (o.name, [v.dim_value for v in o.type.tensor_type.shape.dim]) == ("embeddings", [1, 256, 64, 64])
    # an independent input, normalised-image-like (zero-padded bottom/right)
    x = np.zeros((1, 3, 1024, 1024), np.float32)
    x[:, :, :700, :] = np.random.default_rng(1).normal(0, 1, (1, 3, 700, 1024))
    with torch.no_grad():
        ref = sam.image_encoder(torch.from_numpy(x)).numpy()
    got = _sess(d / "enc.onnx").run(["embeddings"], {"image": x})[0]
    assert float(np.abs(got - ref).max()) <= TOL


# ============================================================================ decoder
def test_decoder_onnx_dynamic_batch(small):
    sam, d, _, dec = small
    assert dec["max_abs_diff"] <= TOL and set(dec["per_batch"]) == {"1", "5"}
    ops = graph_ops(d / "dec.onnx")
    assert "Einsum" not in ops and "Resize" not in ops  # no upsampling in the graph
    assert not {"OneHot", "Tile", "ReduceMean"} & set(ops)  # no repeat_interleave, LayerNorm2d rewritten
    proto = onnx.load(str(d / "dec.onnx"), load_external_data=False)
    assert [i.name for i in proto.graph.input] == ["embeddings", "boxes"]  # no mask input, no orig_im_size
    assert [o.name for o in proto.graph.output] == ["masks", "iou"]
    sess = _sess(d / "dec.onnx")
    emb = np.random.default_rng(2).normal(0, 1, (1, 256, 64, 64)).astype(np.float32)
    boxes = random_boxes(5, seed=9).numpy()
    boxes[0] = [0, 0, 1024, 1024]  # a box on the frame border
    masks5, iou5 = sess.run(["masks", "iou"], {"embeddings": emb, "boxes": boxes})
    assert masks5.shape == (5, 4, 256, 256) and iou5.shape == (5, 4)
    with torch.no_grad():
        ref_m, ref_i = reference_decoder(sam, torch.from_numpy(emb), torch.from_numpy(boxes))
    assert float(np.abs(masks5 - ref_m.numpy()).max()) <= TOL
    assert float(np.abs(iou5 - ref_i.numpy()).max()) <= TOL
    for k in (0, 3):  # B = 1 gives the same row as in the batch
        m1, i1 = sess.run(["masks", "iou"], {"embeddings": emb, "boxes": boxes[k:k + 1]})
        assert m1.shape == (1, 4, 256, 256)
        assert float(np.abs(m1[0] - masks5[k]).max()) < 1e-5 and float(np.abs(i1[0] - iou5[k]).max()) < 1e-5


def test_decoder_matches_sam_forward_slicing(small):
    """MaskDecoder.forward: multimask_output=False is token 0, True is tokens 1..3."""
    sam = small[0]
    emb = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(3))
    boxes = random_boxes(2, seed=4)
    with torch.no_grad():
        all4, iou4 = SamBoxDecoderExport(sam)(emb, boxes)
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
        pe = sam.prompt_encoder.get_dense_pe()
        single, _ = sam.mask_decoder(emb, pe, sparse, dense, multimask_output=False)
        multi, iou_m = sam.mask_decoder(emb, pe, sparse, dense, multimask_output=True)
    assert float((all4[:, :1] - single).abs().max()) < 1e-5
    assert float((all4[:, 1:] - multi).abs().max()) < 1e-5 and float((iou4[:, 1:] - iou_m).abs().max()) < 1e-5


# ============================================================================ external data
def test_consolidate_external_data(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(2048, dtype=np.float32).reshape(1, 2048), "w")
    b = numpy_helper.from_array(np.ones((1, 2048), np.float32), "b")
    nodes = [helper.make_node("Add", ["x", "w"], ["t"]), helper.make_node("Add", ["t", "b"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2048])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2048])], [w, b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    assert len(external_data_files(path)) == 2  # one file per tensor, as the exporter writes them
    assert consolidate_external_data(path) == ["m.onnx.data"]
    assert external_data_files(path) == ["m.onnx.data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    y = _sess(path).run(["y"], {"x": np.zeros((1, 2048), np.float32)})[0]
    np.testing.assert_array_equal(y[0], np.arange(2048) + 1.0)
    assert consolidate_external_data(tmp_path / "m.onnx") == ["m.onnx.data"]  # idempotent


# ============================================================================ CLI
@pytest.fixture(scope="module")
def small_checkpoint(upstream, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "sam_small.pth"
    torch.save(random_sam(SMALL, seed=1).state_dict(), path)
    return path


def test_register_target_adds_sam():
    parser = argparse.ArgumentParser()
    targets = parser.add_subparsers(dest="target")
    from export.sam.cli import register_target

    register_target(targets)
    args = parser.parse_args(["sam", "--checkpoint", "c.pth", "--bundle", "b"])
    assert (args.mode, args.top_n, args.channel_order, args.model_type) == ("single", 3, "bgr_as_rgb", None)
    with pytest.raises(SystemExit):
        parser.parse_args(["sam", "--checkpoint", "c.pth", "--bundle", "b", "--mode", "best"])


def test_cli_export_sam_into_bundle(make_bundle, small_checkpoint, capsys):
    b = make_bundle("product")
    before = dict(b._raw["files"])
    assert run_command(["export", "sam", "--checkpoint", str(small_checkpoint), "--bundle", str(b.root),
                 "--mode", "multi_or", "--top-n", "2"]) == 0
    assert "refinement (mode multi_or, top 2)" in capsys.readouterr().out
    bundle = Bundle.load(b.root)  # verifies every sha256
    sam = bundle._raw["refine"]["sam"]
    assert sam["encoder"]["file"] == "sam_encoder.onnx" and sam["decoder"]["file"] == "sam_decoder.onnx"
    settings = (sam["mode"], sam["top_n"], sam["channel_order"], sam["mask_threshold"])
    assert settings == ("multi_or", 2, "bgr_as_rgb", 0.0) and sam["model_type"] == "custom"
    assert sam["provenance"]["source_checkpoint_sha256"] == sha256_file(small_checkpoint)
    assert sam["provenance"]["export_check"]["encoder_max_abs_diff"] <= TOL
    files = bundle._raw["files"]
    assert files["sam_encoder.onnx"] == sha256_file(b.root / "sam_encoder.onnx")
    assert {k: v for k, v in files.items() if not k.startswith("sam_")} == before  # the rest untouched
    refiner = load_sam_refiner(bundle)
    assert refiner.mode == "multi_or" and refiner.top_n == 2
    coarse = np.zeros((40, 50), np.uint8)
    coarse[10:20, 10:30] = 255
    mask, timings = refiner.refine(np.full((160, 200, 3), 128, np.uint8), coarse)
    assert mask.shape == (40, 50) and timings["sam_decoder"] > 0
    # again with --mode off: the files are replaced in place, the section says off
    assert run_command(["export", "sam", "--checkpoint", str(small_checkpoint), "--bundle", str(b.root),
                 "--mode", "off", "--channel-order", "rgb"]) == 0
    raw = json.loads((b.root / "bundle.json").read_text())
    assert raw["refine"]["sam"]["mode"] == "off" and raw["refine"]["sam"]["channel_order"] == "rgb"
    assert sorted(k for k in raw["files"] if k.startswith("sam_")) == ["sam_decoder.onnx", "sam_encoder.onnx"]
    assert load_sam_refiner(Bundle.load(b.root)) is None


def test_cli_errors(make_bundle, small_checkpoint, tmp_path):
    b = make_bundle("p2")
    base = ["export", "sam", "--bundle", str(b.root), "--checkpoint"]
    with pytest.raises(ExportError, match="no such checkpoint"):
        run_command([*base, str(tmp_path / "missing.pth")])
    bad = tmp_path / "not_sam.pth"
    torch.save({"weight": torch.zeros(3)}, bad)
    with pytest.raises(ExportError, match="not a SAM checkpoint"):
        run_command([*base, str(bad)])
    with pytest.raises(ExportError, match="--model-type vit_b"):
        run_command([*base, str(small_checkpoint), "--model-type", "vit_b"])
    with pytest.raises(ExportError, match="top-n"):
        run_command([*base, str(small_checkpoint), "--top-n", "0"])
    from sdk.errors import BundleError

    with pytest.raises(BundleError):
        run_command(["export", "sam", "--checkpoint", str(small_checkpoint), "--bundle",
                     str(tmp_path / "nowhere")])
    assert "refine" not in Bundle.load(b.root)._raw  # nothing written on failure


# ============================================================================ ViT-B (slow)
@pytest.mark.slow
def test_vit_b_export_parity_and_refine(upstream, make_bundle, tmp_path):
    """The real ViT-B architecture (random weights: 314 keys, loaded strictly) through the CLI:
    encoder and decoder within 1e-4 of segment-anything, no Einsum, one refinement."""
    ckpt = tmp_path / "sam_vit_b_random.pth"
    sam = random_sam("vit_b", seed=0)
    torch.save(sam.state_dict(), ckpt)
    del sam
    b = make_bundle("vitb")
    argv = ["export", "sam", "--checkpoint", str(ckpt), "--bundle", str(b.root), "--model-type", "vit_b"]
    assert run_command(argv) == 0
    ckpt.unlink()
    bundle = Bundle.load(b.root)
    sec = bundle._raw["refine"]["sam"]
    assert sec["model_type"] == "vit_b"
    check = sec["provenance"]["export_check"]
    assert check["encoder_max_abs_diff"] <= TOL and check["decoder_max_abs_diff"] <= TOL
    ops = graph_ops(b.root / "sam_encoder.onnx")
    assert "Einsum" not in ops and ops["LayerNormalization"] == 2 * 12 + 2 and ops["Pad"] == 8
    assert not {"ReduceMean", "Pow", "Sqrt", "ConstantOfShape", "Where"} & set(ops)
    assert 300e6 < (b.root / "sam_encoder.onnx").stat().st_size < 400e6
    refiner = load_sam_refiner(bundle)
    frame = np.random.default_rng(0).integers(0, 256, (512, 612, 3), dtype=np.uint8)
    coarse = np.zeros((128, 153), np.uint8)
    coarse[40:60, 50:90] = 255
    coarse[100:110, 10:20] = 255
    out = refiner.refine_verbose(frame, coarse)
    assert out.mask.shape == coarse.shape and len(out.boxes) == 2 and out.sam_input_hw == (857, 1024)
