"""export.inpformer: exactness against the upstream golden outputs, ONNX export, strict loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from export.inpformer.arch import PRESETS, ArchitectureError, InpFormerArch, preset  # noqa: E402
from export.inpformer.checkpoint import (  # noqa: E402
    infer_arch_facts,
    resample_pos_embed,
    upstream_key_shapes,
)
from export.inpformer.model import AnomalyHead, INPFormer, gaussian_kernel2d  # noqa: E402
from export.inpformer.onnx_export import export_onnx  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
GOLDEN = SHARED / "golden" / "inpformer_tiny"
TOL = 1e-5


def _golden(name: str) -> np.ndarray:
    return np.load(GOLDEN / f"{name}.npy")


@pytest.fixture(scope="module")
def golden_arch() -> InpFormerArch:
    if not (GOLDEN / "config.json").exists():
        pytest.skip(f"{GOLDEN} is not available")
    return InpFormerArch.from_json(GOLDEN / "config.json")


@pytest.fixture(scope="module")
def golden_sd(golden_arch) -> dict:
    return dict(torch.load(GOLDEN / "model.pth", map_location="cpu", weights_only=True))


@pytest.fixture(scope="module")
def golden_model(golden_arch, golden_sd) -> INPFormer:
    return INPFormer.from_upstream(golden_sd, golden_arch)


@pytest.fixture(scope="module")
def golden_onnx(golden_model, tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("onnx") / "inp_tiny.onnx"
    report = export_onnx(golden_model, path, tolerance=TOL)
    return path, report


def _ln_count(arch: InpFormerArch) -> int:
    """LayerNormalization nodes: 2 per used encoder block, 3 in the INP extractor (LN₁ on both
    inputs, LN₂), 3 per decoder block."""
    return 2 * arch.used_blocks + 3 + 3 * arch.decoder_depth


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ---- golden ------------------------------------------------------------------------------------
def test_golden_features_and_map(golden_model):
    x = torch.from_numpy(_golden("input"))
    with torch.no_grad():
        feats = golden_model.forward_features(x)
        amap = golden_model(x)
    for name, t in zip(("en0", "en1", "de0", "de1"), feats):
        assert t.shape == _golden(name).shape
        assert _max_diff(t, _golden(name)) <= TOL, name
    assert amap.shape == _golden("amap256").shape
    assert _max_diff(amap, _golden("amap256")) <= TOL


def test_golden_onnx(golden_onnx, golden_arch):
    path, report = golden_onnx
    assert report["max_abs_diff"] <= TOL and report["opset"] == 17
    ops = report["ops"]
    assert "Einsum" not in ops
    assert ops["LayerNormalization"] == _ln_count(golden_arch)
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["anomaly_map"]

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, ref = _golden("input"), _golden("amap256")
    out = sess.run(["anomaly_map"], {"image": x})[0]
    assert _max_diff(out, ref) <= TOL
    # dynamic batch: N=1 and N=3
    one = sess.run(["anomaly_map"], {"image": x[:1]})[0]
    assert one.shape == (1, 1, 256, 256) and _max_diff(one, ref[:1]) <= TOL
    idx = [0, 1, 0]
    three = sess.run(["anomaly_map"], {"image": x[idx]})[0]
    assert three.shape == (3, 1, 256, 256) and _max_diff(three, ref[idx]) <= TOL


def test_unused_blocks_are_dropped(golden_arch, golden_sd, tmp_path):
    """Blocks past max(target_layers), encoder.norm and mask_token are accepted and never run."""
    arch = golden_arch.replace(depth=12)
    sd = dict(golden_sd)
    g = torch.Generator().manual_seed(1)
    for i in (10, 11):
        for k, v in golden_sd.items():
            if k.startswith("encoder.blocks.9."):
                sd[k.replace(".9.", f".{i}.", 1)] = torch.randn(v.shape, generator=g)
    model = INPFormer.from_upstream(sd, arch)
    assert len(model.encoder.blocks) == 10
    with torch.no_grad():
        amap = model(torch.from_numpy(_golden("input")))
    assert _max_diff(amap, _golden("amap256")) <= TOL

    path = tmp_path / "m.onnx"
    report = export_onnx(model, path, tolerance=TOL)
    assert report["ops"]["LayerNormalization"] == _ln_count(arch)
    proto = onnx.load(str(path))
    names = [t.name for t in proto.graph.initializer]
    assert not [n for n in names if "blocks.10." in n or "blocks.11." in n or "encoder.norm" in n]
    init_numel = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    used = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    dropped = ("encoder.blocks.10.", "encoder.blocks.11.", "encoder.norm.", "encoder.mask_token")
    unused = sum(v.numel() for k, v in sd.items() if k.startswith(dropped))
    assert init_numel < used + unused // 2

    # and they may be absent altogether
    trimmed = {k: v for k, v in golden_sd.items()
               if not k.startswith(("encoder.norm.", "encoder.mask_token"))}
    INPFormer.from_upstream(trimmed, golden_arch)


# ---- ViT-B (RoBiS) with random weights --------------------------------------------------------
def _random_upstream_sd(arch: InpFormerArch, seed: int = 0) -> dict:
    """Full upstream key set (unused blocks, encoder.norm, mask_token included), values scaled so
    activations stay in a realistic range."""
    torch.manual_seed(seed)
    sd = {}
    for k, shp in upstream_key_shapes(arch, 37).items():
        if k.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            v = 1 + 0.1 * torch.randn(shp)
        elif k.endswith("gamma"):
            v = 0.1 * torch.randn(shp)
        elif k.endswith("learn_scale"):
            v = 1 + 0.2 * torch.randn(shp)
        elif k == "prototype_token":
            v = torch.randn(shp)
        elif k in ("encoder.cls_token", "encoder.pos_embed", "encoder.register_tokens", "encoder.mask_token"):
            v = 0.5 * torch.randn(shp)
        else:
            v = 0.02 * torch.randn(shp)
        sd[k] = v
    return sd


@pytest.mark.slow
def test_robis_vitb_export(tmp_path):
    arch = preset("dinov2reg_vit_base_14")
    sd = _random_upstream_sd(arch)
    assert len(sd) == 315 and sum(v.numel() for v in sd.values()) == 155_101_536
    model = INPFormer.from_upstream(sd, arch)
    assert len(model.encoder.blocks) == 10
    report = export_onnx(model, tmp_path / "vitb.onnx", tolerance=1e-4, check_batch=2)
    assert report["max_abs_diff"] <= 1e-4
    assert "Einsum" not in report["ops"]
    assert report["ops"]["LayerNormalization"] == 47
    assert report["output_shape"] == ["N", 1, 256, 256]


# ---- state_dict inference and errors ------------------------------------------------------------
def test_infer_arch_facts(golden_sd, golden_arch):
    f = infer_arch_facts(golden_sd)
    assert f == {"embed_dim": 64, "depth": 10, "num_heads": 4, "decoder_depth": 8, "num_register_tokens": 4,
                 "inp_num": 6, "patch_size": 14, "mlp_ratio": 4.0, "pos_grid": 7}
    for k, v in f.items():
        if k != "pos_grid":
            assert getattr(golden_arch, k) == v


def test_missing_key(golden_sd, golden_arch):
    sd = {k: v for k, v in golden_sd.items() if k != "decoder.3.attn.kv.bias"}
    with pytest.raises(ArchitectureError, match=r"missing key.*decoder\.3\.attn\.kv\.bias"):
        INPFormer.from_upstream(sd, golden_arch)


def test_unexpected_key(golden_sd, golden_arch):
    sd = {**golden_sd, "decoder.0.attn.extra": torch.zeros(3), "prototype_token.0": torch.zeros(6, 64)}
    with pytest.raises(ArchitectureError, match=r"unexpected key") as e:
        INPFormer.from_upstream(sd, golden_arch)
    assert "decoder.0.attn.extra" in str(e.value) and "prototype_token.0" in str(e.value)


def test_wrong_shape(golden_sd, golden_arch):
    sd = {**golden_sd, "aggregation.0.attn.q.weight": torch.zeros(64, 32)}
    with pytest.raises(ArchitectureError, match=r"aggregation\.0\.attn\.q\.weight: shape \(64, 32\)"):
        INPFormer.from_upstream(sd, golden_arch)


def test_preset_mismatch(golden_sd):
    with pytest.raises(ArchitectureError) as e:
        INPFormer.from_upstream(golden_sd, preset("dinov2reg_vit_base_14"))
    msg = str(e.value)
    assert "embed_dim: state_dict has 64, architecture says 768" in msg
    assert "num_heads: state_dict has 4, architecture says 12" in msg
    assert "encoder.blocks.0.attn.qkv.weight: shape (192, 64), expected (2304, 768)" in msg


def test_head_count_mismatch_only(golden_sd, golden_arch):
    with pytest.raises(ArchitectureError, match=r"num_heads: state_dict has 4, architecture says 8") as e:
        INPFormer.from_upstream(golden_sd, golden_arch.replace(num_heads=8))
    assert "decoder.0.attn.learn_scale" in str(e.value)


def test_too_many_encoder_blocks(golden_sd, golden_arch):
    sd = {**golden_sd, **{k.replace(".9.", ".10.", 1): v for k, v in golden_sd.items()
                          if k.startswith("encoder.blocks.9.")}}
    with pytest.raises(ArchitectureError, match=r"depth: state_dict has 11, architecture says 10"):
        INPFormer.from_upstream(sd, golden_arch)


# ---- arch JSON ----------------------------------------------------------------------------------
def test_arch_json_round_trip(tmp_path, golden_arch):
    assert golden_arch.to_dict() == json.loads((GOLDEN / "config.json").read_text())
    for name, arch in PRESETS.items():
        p = tmp_path / f"{name}.json"
        arch.to_json(p)
        assert InpFormerArch.from_json(p) == arch
        assert InpFormerArch.from_json(arch.to_json()) == arch
        assert set(arch.to_dict()) == set(golden_arch.to_dict())


def test_arch_json_rejects_unknown_and_missing(golden_arch):
    d = golden_arch.to_dict()
    with pytest.raises(ArchitectureError, match="unknown key.*num_layers"):
        InpFormerArch.from_dict({**d, "num_layers": 3})
    del d["map_size"]
    with pytest.raises(ArchitectureError, match="missing key.*map_size"):
        InpFormerArch.from_dict(d)


def test_arch_validation():
    with pytest.raises(ArchitectureError, match="divisible"):
        InpFormerArch(embed_dim=100, num_heads=12)
    with pytest.raises(ArchitectureError, match="multiple of patch_size"):
        InpFormerArch(img_size=500)
    with pytest.raises(ArchitectureError, match="target_layers"):
        InpFormerArch(depth=8)
    with pytest.raises(ArchitectureError, match="unknown preset"):
        preset("dinov2reg_vit_huge_14")


def test_presets():
    b = preset("dinov2reg_vit_base_14")
    assert (b.embed_dim, b.num_heads, b.depth) == (768, 12, 12)
    assert (b.img_size, b.grid, b.used_blocks, b.map_size) == (518, 37, 10, 256)
    large = preset("dinov2reg_vit_large_14")
    assert (large.embed_dim, large.num_heads, large.depth) == (1024, 16, 24)
    assert large.target_layers == (4, 6, 8, 10, 12, 14, 16, 18) and large.used_blocks == 19
    assert preset("dinov2reg_vit_small_14", img_size=392).grid == 28


# ---- pieces ------------------------------------------------------------------------------------
def test_gaussian_kernel_values():
    k = gaussian_kernel2d(5, 4.0)[0, 0]
    assert abs(float(k[2, 2]) - 0.045203) < 1e-6 and abs(float(k[0, 0]) - 0.035204) < 1e-6
    assert abs(float(k.sum()) - 1.0) < 1e-6


def test_cosine_head_is_overflow_safe():
    """Normalise-then-dot: feature norms whose squared product overflows float32 stay finite."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 8, 4, 4, generator=g) * 1e12
    b = a * 3.0
    assert not torch.isfinite((a * a).sum(1) * (b * b).sum(1)).all()  # the ONNX-symbolic formulation
    s = AnomalyHead.one_minus_cos(a, b)
    assert torch.isfinite(s).all() and float(s.abs().max()) < 1e-6


def test_pos_embed_resample_other_size(golden_arch, golden_sd):
    """S=126 (9×9 grid) from the checkpoint's 7×7 grid: bicubic, cls kept; the model runs there."""
    pos = golden_sd["encoder.pos_embed"]
    assert torch.equal(resample_pos_embed(pos, 7), pos)
    out = resample_pos_embed(pos, 9)
    assert out.shape == (1, 82, 64) and torch.equal(out[:, 0], pos[:, 0])
    model = INPFormer.from_upstream(golden_sd, golden_arch.replace(img_size=126))
    assert torch.equal(model.encoder.pos_embed, out)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 126, 126)).shape == (1, 1, 256, 256)
        with pytest.raises(ValueError, match="expected input"):
            model(torch.zeros(1, 3, 98, 98))


def test_features_output(golden_model, golden_onnx, golden_arch, tmp_path):
    """export --features: a second output 'features' (N×C×g×g, the mean of the target layers' patch
    tokens) checked like the map; the map itself is the same as without it."""
    path = tmp_path / "with_features.onnx"
    report = export_onnx(golden_model, path, tolerance=TOL, features=True)
    g, c = golden_arch.grid, golden_arch.embed_dim
    assert report["features_shape"] == ["N", c, g, g] and report["features_max_abs_diff"] <= TOL
    model = onnx.load(str(path))
    assert [o.name for o in model.graph.output] == ["anomaly_map", "features"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(str(golden_onnx[0]), providers=["CPUExecutionProvider"])
    x = _golden("input")
    amap, feats = sess.run(["anomaly_map", "features"], {"image": x})
    np.testing.assert_array_equal(amap, plain.run(["anomaly_map"], {"image": x})[0])  # bit-identical
    # The fuse groups split the target layers in two equal halves: their mean is the mean of the
    # upstream golden encoder levels.
    assert feats.shape == (len(x), c, g, g)
    assert _max_diff(feats, (_golden("en0") + _golden("en1")) / 2) <= TOL
