"""export.inpformer.training / `robis-edge fit`: oracles for the optimiser, the loss, the schedule and
the augmentation; the training forward against the inference model; a short fit end to end."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from conftest import run_command  # noqa: E402

from export.inpformer.arch import ArchitectureError, InpFormerArch  # noqa: E402
from export.inpformer.checkpoint import (  # noqa: E402
    check_state_dict,
    to_model_state_dict,
    upstream_key_shapes,
)
from export.inpformer.model import INPFormer  # noqa: E402
from export.inpformer.training import (  # noqa: E402
    FitOptions,
    StableAdamW,
    TileSet,
    TrainableINPFormer,
    WarmCosineSchedule,
    adjust_exposure,
    arch_json_path,
    fit,
    gather_loss,
    global_cosine_hm_adaptive,
    load_encoder_weights,
    random_encoder_state_dict,
    random_exposure,
)
from sdk.bundle import PreprocessSpec  # noqa: E402
from sdk.geometry import TilingPlan  # noqa: E402
from sdk.preprocess import TilePreprocessor, prepare_frame  # noqa: E402
from sdk.tools.synthetic import make_frames  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "golden" / "inpformer_tiny"

# A tiny architecture (golden layout, fewer/smaller blocks): 2 unused encoder blocks to check
# that the checkpoint carries the full depth.
TINY = InpFormerArch(embed_dim=32, depth=6, num_heads=2, img_size=56, target_layers=(0, 1, 2, 3),
                     fuse_layer_encoder=((0, 1), (2, 3)), fuse_layer_decoder=((0, 1), (2, 3)),
                     decoder_depth=4, map_size=64)


@pytest.fixture(scope="module")
def golden():
    if not (GOLDEN / "config.json").exists():
        pytest.skip(f"{GOLDEN} is not available")
    arch = InpFormerArch.from_json(GOLDEN / "config.json")
    sd = dict(torch.load(GOLDEN / "model.pth", map_location="cpu", weights_only=True))
    return arch, sd


# ---- optimiser -----------------------------------------------------------------------------------
def _reference_stable_adamw(p0, grads, lr, betas, eps, wd, amsgrad, clip=1.0):
    """Element-wise float64 numpy transcription of StableAdamW (AdamW + update clipping)."""
    p = p0.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    vmax = np.zeros_like(p)
    b1, b2 = betas
    clipped = 0
    for t, g in enumerate(grads, start=1):
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        vv = vmax if amsgrad else v
        denom = np.sqrt(vv) / math.sqrt(1 - b2**t) + eps
        rms = math.sqrt(np.mean((g / denom) ** 2))
        scale = max(1.0, rms / clip)
        clipped += scale > 1.0
        p = p - lr / (1 - b1**t) / scale * m / denom
    return p, clipped


@pytest.mark.parametrize("amsgrad", [True, False])
def test_stable_adamw_matches_reference(amsgrad):
    rng = np.random.default_rng(0)
    p0 = [rng.normal(size=(5, 7)), rng.normal(size=(11,))]
    grads = [[rng.normal(size=a.shape) * s for a in p0] for s in (1.0, 0.01, 0.01, 50.0, 0.1, 1.0, 3.0)]
    params = [torch.nn.Parameter(torch.tensor(a, dtype=torch.float64)) for a in p0]
    opt = StableAdamW(params, lr=1e-2, betas=(0.9, 0.999), eps=1e-10, weight_decay=1e-1, amsgrad=amsgrad)
    for step in grads:
        for p, g in zip(params, step):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    total_clipped = 0
    for i, a in enumerate(p0):
        want, clipped = _reference_stable_adamw(a, [s[i] for s in grads], 1e-2, (0.9, 0.999), 1e-10, 1e-1,
                                                amsgrad)
        total_clipped += clipped
        np.testing.assert_allclose(params[i].detach().numpy(), want, rtol=1e-12, atol=1e-14)
    assert total_clipped > 0  # the spike of step 4 is clipped: the oracle covers the clipping branch


def test_stable_adamw_skips_params_without_grad_and_checks_args():
    a = torch.nn.Parameter(torch.ones(3))
    opt = StableAdamW([a])
    opt.step()
    assert torch.equal(a.detach(), torch.ones(3)) and not opt.state[a]
    with pytest.raises(ValueError):
        StableAdamW([a], betas=(1.0, 0.9))
    d = opt.defaults
    assert d["amsgrad"] and d["eps"] == 1e-10 and d["weight_decay"] == 1e-4


# ---- schedule ------------------------------------------------------------------------------------
def _reference_schedule(base, final, total, warmup):
    """RoBiS WarmCosineScheduler's table."""
    warm = np.linspace(0, base, warmup)
    iters = np.arange(total - warmup)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / max(1, len(iters))))
    return np.concatenate((warm, cos))


@pytest.mark.parametrize("total,warmup", [(500, 100), (50, 0), (10, 1), (30, 30), (20, 25)])
def test_warm_cosine_schedule(total, warmup):
    s = WarmCosineSchedule(1e-3, 1e-4, total, warmup)
    table = _reference_schedule(1e-3, 1e-4, total, warmup)
    got = [s.lr(i) for i in range(total)]
    np.testing.assert_allclose(got, table[:total], rtol=1e-12, atol=1e-18)
    assert s.lr(total) == s.lr(total + 7) == 1e-4
    if warmup:
        assert s.lr(0) == 0.0  # upstream's first iteration runs at the warm-up start value


# ---- losses --------------------------------------------------------------------------------------
def test_gather_loss_matches_upstream_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 20, 16, generator=g)
    p = torch.randn(3, 6, 16, generator=g)
    ref = (1 - F.cosine_similarity(x.unsqueeze(2), p.unsqueeze(1), dim=-1)).min(dim=2).values.mean()
    assert torch.allclose(gather_loss(x, p), ref, atol=1e-6)


def _np_cos(u, v):
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def test_hm_adaptive_loss_value_and_gradient_against_direct_computation():
    """Value: mean over levels of mean over the batch of 1 − cos(flattened maps). Gradient of b: the
    analytic gradient of that value, times (d / mean d)^3 per location (d = 1 − cos over channels)."""
    g = torch.Generator().manual_seed(3)
    shape = (2, 8, 3, 4)
    ens = [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2)]
    des = [(e + 0.8 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_(True) for e in ens]
    loss = global_cosine_hm_adaptive(ens, des, y=3)
    loss.backward()

    n_levels, (bsz, c, h, w) = len(ens), shape
    value = 0.0
    for a_t, b_t in zip(ens, des):
        a, b = a_t.numpy(), b_t.detach().numpy()
        d = np.array([[[1 - _np_cos(a[n, :, i, j], b[n, :, i, j]) for j in range(w)] for i in range(h)]
                      for n in range(bsz)])
        factor = (d / d.mean()) ** 3
        grad = np.zeros_like(b)
        for n in range(bsz):
            u, v = a[n].reshape(-1), b[n].reshape(-1)
            cs = _np_cos(u, v)
            value += (1 - cs) / bsz / n_levels
            dv = -(u / (np.linalg.norm(u) * np.linalg.norm(v)) - cs * v / np.dot(v, v))
            grad[n] = dv.reshape(c, h, w) / bsz / n_levels * factor[n][None]
        np.testing.assert_allclose(b_t.grad.numpy(), grad, rtol=1e-9, atol=1e-12)
    assert math.isclose(loss.item(), value, rel_tol=1e-12)
    assert all(e.grad is None for e in ens)


# ---- augmentation --------------------------------------------------------------------------------
def test_adjust_exposure_is_the_upstream_arithmetic():
    rng = np.random.default_rng(1)
    tile = rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)
    noise = rng.normal(0, 15, tile.shape)
    for lam in (-0.2, 0.0, 0.13):
        want = np.clip(np.clip(tile.astype(np.float32) * (2**lam), 0, 255) + noise, 0, 255)
        got = adjust_exposure(tile, lam, noise)
        assert got.dtype == np.uint8 and np.array_equal(got, np.trunc(want).astype(np.uint8))
    # truncation, not rounding; clipping at both ends
    one = np.full((1, 1, 3), 100, np.uint8)
    assert adjust_exposure(one, 0.0, np.full((1, 1, 3), 0.9))[0, 0, 0] == 100
    assert adjust_exposure(one, 0.2, np.full((1, 1, 3), 500.0))[0, 0, 0] == 255
    assert adjust_exposure(one, -0.2, np.full((1, 1, 3), -500.0))[0, 0, 0] == 0


def test_random_exposure_statistics():
    rng = np.random.default_rng(2)
    tile = np.full((64, 64, 3), 128, np.uint8)
    n_aug, gains = 0, []
    for _ in range(400):
        out, aug = random_exposure(tile, rng)
        n_aug += aug
        if aug:
            gains.append(out.astype(np.float64).mean() / 127.5)  # truncation loses 0.5 on average
            assert 14.0 < out.astype(np.float64).std() < 16.0  # N(0, 15) per pixel and channel
            assert not np.array_equal(out[..., 0], out[..., 1])
        else:
            assert out is tile
    assert 160 <= n_aug <= 240  # p = 0.5
    assert min(gains) > 2**-0.2 - 0.01 and max(gains) < 2**0.2 + 0.01
    assert min(gains) < 0.9 and max(gains) > 1.1  # λ spreads over U(-0.2, 0.2)


# ---- data ----------------------------------------------------------------------------------------
def test_tiles_are_the_sdk_preprocessing_with_augmentation_between_resize_and_normalise():
    frames = [f.image for f in make_frames(2, 230, 300, defect_rate=0.0, seed=4)]
    bgr = np.stack([frames[1], 255 - frames[1], frames[1] // 2], axis=2)
    data = [(frames[0], "gray"), (bgr, "bgr")]
    spec = PreprocessSpec(size=56)
    ts = TileSet(data, 56, window=128, overlap=0.1)
    want = []
    for img, color in data:
        f = prepare_frame(img, color)
        plan = TilingPlan(*f.shape[:2], 128, 0.1)
        want.append(TilePreprocessor(spec, plan.tile_hw)(plan.extract(f)))
    want = np.concatenate(want)
    assert len(ts) == len(want) == 2 * 2 * 3
    got, n_aug = ts.batch(range(len(ts)))
    assert n_aug == 0 and got.dtype == np.float32 and np.array_equal(got, want)

    # Augmented: the resized uint8 tile → adjust_exposure → the same normalisation tables.
    idx = [0, 5, 7, 11]
    got, n_aug = ts.batch(idx, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    norm = TilePreprocessor(spec, (56, 56))
    for j, i in enumerate(idx):
        t = ts.tiles[i]
        rgb = np.repeat(t[..., None], 3, 2) if t.ndim == 2 else t
        aug, _ = random_exposure(rgb, rng)
        assert np.array_equal(got[j], norm(aug[None])[0])


# ---- model ---------------------------------------------------------------------------------------
def test_training_forward_equals_inference_and_checkpoint_roundtrip(golden):
    arch, sd = golden
    model = TrainableINPFormer(arch, {k: v for k, v in sd.items() if k.startswith("encoder.")})
    model.net.load_state_dict(to_model_state_dict(sd, arch), strict=True)
    x = torch.from_numpy(np.load(GOLDEN / "input.npy"))
    with torch.no_grad():
        en, de, x_tok, p = model.forward_tokens(x)
        ref_en, ref_de = INPFormer.from_upstream(sd, arch).levels(x)
        g = model(x)[2]
    for a, b in zip(en + de, ref_en + ref_de):
        assert torch.equal(a, b)
    for a, name in zip(en + de, ("en0", "en1", "de0", "de1")):
        assert np.max(np.abs(a.numpy() - np.load(GOLDEN / f"{name}.npy"))) < 1e-5
    assert x_tok.shape == (2, arch.grid**2, arch.embed_dim) and p.shape == (2, arch.inp_num, arch.embed_dim)
    ref_g = (1 - F.cosine_similarity(x_tok.unsqueeze(2), p.unsqueeze(1), dim=-1)).min(2).values.mean()
    assert torch.allclose(g, ref_g, atol=1e-6)
    # The upstream state_dict comes back unchanged: same keys, same order, same values.
    out = model.upstream_state_dict()
    assert list(out) == list(sd)
    assert all(torch.equal(out[k], sd[k].float()) for k in sd)


def test_random_encoder_init_is_dinov2s():
    a = random_encoder_state_dict(TINY, seed=3)
    b = random_encoder_state_dict(TINY, seed=3)
    c = random_encoder_state_dict(TINY, seed=4)
    keys = [k for k in upstream_key_shapes(TINY, 37) if k.startswith("encoder.")]
    assert list(a) == keys and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["encoder.blocks.0.attn.qkv.weight"], c["encoder.blocks.0.attn.qkv.weight"])
    assert a["encoder.pos_embed"].shape == (1, 1 + 37 * 37, 32)  # built at 518 like RoBiS' encoder
    assert torch.all(a["encoder.blocks.5.ls2.gamma"] == 1e-8) and torch.all(a["encoder.norm.weight"] == 1)
    assert torch.all(a["encoder.mask_token"] == 0) and torch.all(a["encoder.blocks.0.attn.qkv.bias"] == 0)
    assert 0.015 < float(a["encoder.blocks.0.mlp.fc1.weight"].std()) < 0.025


def test_trainable_init_follows_section_7():
    model = TrainableINPFormer(TINY, random_encoder_state_dict(TINY, 0))
    model.init_trainable_(5)
    n = model.net
    w = n.decoder[0].mlp.fc1.weight
    assert w.abs().max().item() <= 0.03 and 0.006 < w.std().item() < 0.012
    assert torch.all(n.aggregation[0].attn.kv.bias == 0) and torch.all(n.decoder[2].norm1.weight == 1)
    assert torch.all(n.decoder[1].attn.learn_scale == 1)
    assert 0.7 < n.prototype_token.std().item() < 1.3
    assert all(not p.requires_grad for p in n.encoder.parameters())
    assert {id(p) for p in model.trainable_parameters()} == {
        id(p) for p in n.parameters() if p.requires_grad}


# ---- fit -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train_frames():
    return [(f.image, "gray") for f in make_frames(3, 200, 260, defect_rate=0.0, seed=11)]


@pytest.fixture(scope="module")
def fitted(train_frames, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "model.pth"
    opts = FitOptions(iters=30, batch_size=6, warmup=0, window=112, overlap=0.1, seed=7)
    res = fit(train_frames, TINY, out, options=opts, progress=False, log=lambda m: None, warn=lambda m: None)
    return res, opts


def test_fit_reduces_loss(fitted):
    res, _ = fitted
    assert res.iterations == len(res.losses) == 30 and res.n_tiles == 3 * 2 * 3
    first, last = np.mean(res.losses[:5]), np.mean(res.losses[-5:])
    assert last < 0.75 * first, (first, last)


def test_fit_checkpoint_has_the_full_upstream_layout(fitted):
    res, opts = fitted
    sd = torch.load(res.checkpoint, map_location="cpu", weights_only=True)
    shapes = upstream_key_shapes(TINY, 37)
    assert list(sd) == list(shapes)  # every key (all 6 encoder blocks, encoder.norm, mask_token...)
    assert all(tuple(sd[k].shape) == s and sd[k].dtype == torch.float32 for k, s in shapes.items())
    check_state_dict(sd, TINY)
    model = INPFormer.from_upstream(sd, TINY)  # what `robis-edge export` does
    with torch.no_grad():
        amap = model(torch.zeros(1, 3, 56, 56))
    assert amap.shape == (1, 1, 64, 64) and torch.isfinite(amap).all()
    assert InpFormerArch.from_json(arch_json_path(res.checkpoint)) == TINY
    # frozen: the encoder is exactly its seeded initialisation; the trained parts moved.
    init = random_encoder_state_dict(TINY, opts.seed)
    assert all(torch.equal(sd[k], v) for k, v in init.items())
    start = TrainableINPFormer(TINY, init)
    start.init_trainable_(opts.seed + 1)
    assert not torch.equal(sd["decoder.0.mlp.fc1.weight"], start.net.decoder[0].mlp.fc1.weight)
    assert not torch.equal(sd["prototype_token"], start.net.prototype_token.detach())


def test_fit_is_deterministic(fitted, train_frames, tmp_path):
    res, opts = fitted
    # Same file name: torch.save records it inside the archive.
    again = fit(train_frames, TINY, tmp_path / res.checkpoint.name, options=FitOptions(**vars(opts)),
                progress=False, log=lambda m: None, warn=lambda m: None)
    assert again.losses == res.losses and again.sha256 == res.sha256


def test_encoder_weights_file(train_frames, tmp_path):
    """A DINOv2-reg style file (no 'encoder.' prefix): loaded, missing/unexpected reported, frozen."""
    src = random_encoder_state_dict(TINY, seed=99)
    dino = {k[len("encoder."):]: v for k, v in src.items() if k != "encoder.mask_token"}
    dino["head.weight"] = torch.zeros(2, 2)
    path = tmp_path / "dinov2_reg.pth"
    torch.save(dino, path)
    load = load_encoder_weights(path, TINY, seed=0)
    assert load.missing == ["encoder.mask_token"] and load.unexpected == ["head.weight"]
    logs, warns = [], []
    res = fit(train_frames, TINY, tmp_path / "m.pth", encoder_weights=path, progress=False, log=logs.append,
              warn=warns.append, options=FitOptions(iters=2, batch_size=4, warmup=0, window=112))
    sd = torch.load(res.checkpoint, weights_only=True)
    assert all(torch.equal(sd["encoder." + k], v) for k, v in dino.items() if k != "head.weight")
    assert not res.encoder_random and not any("RANDOM" in w for w in warns)
    assert any("mask_token" in w for w in warns) and any("head.weight" in m for m in logs)

    bad = dict(dino)
    bad["blocks.0.attn.qkv.weight"] = torch.zeros(5, 5)
    torch.save(bad, path)
    with pytest.raises(ArchitectureError, match="blocks.0.attn.qkv.weight"):
        load_encoder_weights(path, TINY, seed=0)


# ---- CLI -----------------------------------------------------------------------------------------
def test_cli_fit_end_to_end(tmp_path, capsys):
    from sdk.imageio import write_png

    for i, f in enumerate(make_frames(2, 200, 260, defect_rate=0.0, seed=5)):
        write_png(tmp_path / "good" / f"lot{i}" / f"{f.name}.png", f.image)
    arch = tmp_path / "arch.json"
    TINY.to_json(arch)
    out = tmp_path / "ckpt" / "model.pth"
    assert run_command(["fit", "--images", str(tmp_path / "good"), "--arch", str(arch), "--out", str(out),
                        "--iters", "3", "--batch-size", "4", "--window", "112", "--seed", "3",
                        "--threads", "1"]) == 0
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert "WARNING" in cap.err and "RANDOM" in cap.err and "--encoder-weights" in cap.err
    assert "fit:" in cap.err and "loss=" in cap.err  # the progress bar shows the loss
    assert "robis-edge export inpformer" in text
    assert out.is_file() and arch_json_path(out).is_file()
    check_state_dict(torch.load(out, weights_only=True), TINY)


def test_cli_fit_registers_without_torch():
    code = ("import argparse, sys; from export.cli_fit import register; p = argparse.ArgumentParser(); "
            "register(p.add_subparsers()); assert 'torch' not in sys.modules; "
            "a = p.parse_args(['fit', '--images', 'x', '--preset', 'dinov2reg_vit_base_14', "
            "'--out', 'm.pth']); "
            "assert (a.batch_size, a.lr, a.final_lr, a.warmup, a.window, a.overlap) == (16, 1e-3, 1e-4, 100, "
            "1024, 0.1)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# ---- the demo's synthetic product ------------------------------------------------------------------
@pytest.mark.parametrize("style", ["sheet", "plate"])
def test_synthetic_product_frames(style):
    from sdk.tools.synthetic.product import make_product_frames

    a = make_product_frames(6, 300, 400, defect_rate=0.5, seed=3, style=style)
    b = make_product_frames(6, 300, 400, defect_rate=0.5, seed=3, style=style)
    assert all(np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask) for x, y in zip(a, b))
    assert any(f.defective for f in a) and not all(f.defective for f in a)
    for f in a:
        assert f.image.shape == f.mask.shape == (300, 400) and f.image.dtype == np.uint8
        assert set(np.unique(f.mask)) <= {0, 255} and bool(f.defects) == f.defective
        for kind, (x0, y0, x1, y1) in f.defects:
            assert kind in ("scratch", "spot", "missing") and f.mask[y0:y1, x0:x1].any()
