"""Inference-only INP-Former (RoBiS flavour) that loads upstream state_dicts unchanged.

Submodule names follow the upstream checkpoint keys (``encoder.blocks.3.attn.qkv.weight``,
``decoder.5.attn.learn_scale``, ``prototype_token``...), so loading is a key filter plus one
transformation: ``encoder.pos_embed`` is resampled once, at load, to the tile size S and kept as a
constant buffer. Only encoder blocks 0..max(target_layers) exist here; the unused ones,
``encoder.norm`` and ``encoder.mask_token`` are shape-checked and dropped.

Numerics follow reference-pipeline.md §1.6/§1.7: explicit softmax attention with q scaled before
the matmul, LayerNorm eps 1e-6 (encoder) / 1e-8 (INP blocks), exact GELU, decoder attention with
L2-normalised q/k and ReLU (no softmax, no residual), and an fp32 anomaly head computing cosine as
normalise-then-dot.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .arch import ArchitectureError, InpFormerArch

ENCODER_LN_EPS = 1e-6
INP_LN_EPS = 1e-8
L2_EPS = 1e-12
COS_EPS = 1e-8
POS_INTERP_OFFSET = 0.1  # RoBiS builds DINOv2 with interpolate_offset=0.1, antialias off


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------
class Mlp(nn.Module):
    """fc1 → exact GELU → fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel scale ``gamma`` (DINOv2 ls1/ls2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


# Token counts and widths are Python ints fixed by the architecture and only the batch is left to
# -1, so the traced graph reshapes with constants (no Shape/Gather chains around every attention).
def _heads(x: Tensor, tokens: int, parts: int, num_heads: int, head_dim: int) -> Tensor:
    """(B, N, parts·C) → (parts, B, heads, N, head_dim)."""
    return x.reshape(-1, tokens, parts, num_heads, head_dim).permute(2, 0, 3, 1, 4)


def _merge_heads(x: Tensor, tokens: int, dim: int) -> Tensor:
    """(B, heads, N, head_dim) → (B, N, C)."""
    return x.transpose(1, 2).reshape(-1, tokens, dim)


def _l2_normalize(x: Tensor, eps: float) -> Tensor:
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)


class EncoderAttention(nn.Module):
    """DINOv2 self-attention: softmax((q/√d) kᵀ) v, written out (no fused kernels, no Einsum)."""

    def __init__(self, dim: int, num_heads: int, tokens: int) -> None:
        super().__init__()
        self.dim, self.num_heads, self.tokens = dim, num_heads, tokens
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = _heads(self.qkv(x), self.tokens, 3, self.num_heads, self.head_dim).unbind(0)
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        return self.proj(_merge_heads(attn @ v, self.tokens, self.dim))


class EncoderBlock(nn.Module):
    """Pre-norm ViT block with LayerScale on both branches."""

    def __init__(self, dim: int, num_heads: int, hidden: int, tokens: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ENCODER_LN_EPS)
        self.attn = EncoderAttention(dim, num_heads, tokens)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=ENCODER_LN_EPS)
        self.mlp = Mlp(dim, hidden)
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Conv patchifier; (B,3,S,S) → (B, (S/p)², C) in row-major token order."""

    def __init__(self, dim: int, patch: int, grid: int) -> None:
        super().__init__()
        self.dim, self.grid = dim, grid
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).reshape(-1, self.dim, self.grid * self.grid).transpose(1, 2)


class Encoder(nn.Module):
    """The DINOv2-reg encoder, truncated to the blocks that feed the target layers."""

    def __init__(self, arch: InpFormerArch) -> None:
        super().__init__()
        c = arch.embed_dim
        self.num_register_tokens = arch.num_register_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        if arch.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, arch.num_register_tokens, c))
        else:
            self.register_tokens = None
        # Position embedding already resampled to the tile grid (constant of the graph).
        self.register_buffer("pos_embed", torch.zeros(1, 1 + arch.grid**2, c))
        self.patch_embed = PatchEmbed(c, arch.patch_size, arch.grid)
        tokens = 1 + arch.num_register_tokens + arch.grid**2
        self.blocks = nn.ModuleList(
            EncoderBlock(c, arch.num_heads, arch.mlp_hidden, tokens) for _ in range(arch.used_blocks))

    def tokens(self, image: Tensor) -> Tensor:
        """[cls+pos₀, registers (no pos), patches+pos₁..] as (B, 1+R+n, C)."""
        patches = self.patch_embed(image) + self.pos_embed[:, 1:]
        b, c = patches.shape[0], self.cls_token.shape[-1]
        parts = [(self.cls_token + self.pos_embed[:, :1]).expand(b, 1, c)]
        if self.register_tokens is not None:
            parts.append(self.register_tokens.expand(b, self.num_register_tokens, c))
        parts.append(patches)
        return torch.cat(parts, dim=1)


class AggregationAttention(nn.Module):
    """INP extractor cross-attention: q from prototypes, k/v from features, softmax((q kᵀ)·scale)."""

    def __init__(self, dim: int, num_heads: int, n_proto: int, n_patch: int) -> None:
        super().__init__()
        self.dim, self.num_heads, self.n_proto, self.n_patch = dim, num_heads, n_proto, n_patch
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, p: Tensor, x: Tensor) -> Tensor:
        q = _heads(self.q(p), self.n_proto, 1, self.num_heads, self.head_dim)[0]
        k, v = _heads(self.kv(x), self.n_patch, 2, self.num_heads, self.head_dim).unbind(0)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)  # upstream scales after
        return self.proj(_merge_heads(attn @ v, self.n_proto, self.dim))


class AggregationBlock(nn.Module):
    """P ← P + Attn(LN₁(P), LN₁(x)); P ← P + MLP(LN₂(P))."""

    def __init__(self, dim: int, num_heads: int, hidden: int, n_proto: int, n_patch: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=INP_LN_EPS)
        self.attn = AggregationAttention(dim, num_heads, n_proto, n_patch)
        self.norm2 = nn.LayerNorm(dim, eps=INP_LN_EPS)
        self.mlp = Mlp(dim, hidden)

    def forward(self, p: Tensor, x: Tensor) -> Tensor:
        p = p + self.attn(self.norm1(p), self.norm1(x))
        return p + self.mlp(self.norm2(p))


class PrototypeAttention(nn.Module):
    """INP-guided attention: ReLU(norm(q)·norm(k)ᵀ ⊙ learn_scale) v, no softmax."""

    def __init__(self, dim: int, num_heads: int, n_patch: int, n_proto: int) -> None:
        super().__init__()
        self.dim, self.num_heads, self.n_patch, self.n_proto = dim, num_heads, n_patch, n_proto
        self.head_dim = dim // num_heads
        self.learn_scale = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, p: Tensor) -> Tensor:
        q = _heads(self.q(x), self.n_patch, 1, self.num_heads, self.head_dim)[0]
        k, v = _heads(self.kv(p), self.n_proto, 2, self.num_heads, self.head_dim).unbind(0)
        q, k = _l2_normalize(q, L2_EPS), _l2_normalize(k, L2_EPS)
        attn = torch.relu((q @ k.transpose(-2, -1)) * self.learn_scale)
        return self.proj(_merge_heads(attn @ v, self.n_patch, self.dim))


class PrototypeBlock(nn.Module):
    """x ← Attn(LN₁(x), LN₁(P)) (no residual); x ← x + MLP(LN₂(x))."""

    def __init__(self, dim: int, num_heads: int, hidden: int, n_patch: int, n_proto: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=INP_LN_EPS)
        self.attn = PrototypeAttention(dim, num_heads, n_patch, n_proto)
        self.norm2 = nn.LayerNorm(dim, eps=INP_LN_EPS)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: Tensor, p: Tensor) -> Tensor:
        x = self.attn(self.norm1(x), self.norm1(p))
        return x + self.mlp(self.norm2(x))


def gaussian_kernel2d(size: int, sigma: float) -> Tensor:
    """Normalised size×size Gaussian (as RoBiS's get_gaussian_kernel), shape (1,1,size,size)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * sigma**2))
    return (g / g.sum()).to(torch.float32).view(1, 1, size, size)


class AnomalyHead(nn.Module):
    """RoBiS test-time map: mean over levels of (1−cos) upsampled (align_corners=True) to S, resized
    (align_corners=False) to M, then a zero-padded Gaussian blur. Runs in fp32."""

    def __init__(self, img_size: int, map_size: int, kernel: int, sigma: float) -> None:
        super().__init__()
        self.img_size = img_size
        self.map_size = map_size
        self.register_buffer("gaussian", gaussian_kernel2d(kernel, sigma), persistent=False)

    @staticmethod
    def one_minus_cos(a: Tensor, b: Tensor) -> Tensor:
        """1 − cos over channels, (B,C,h,w) → (B,1,h,w); normalise each side first (FP16-safe)."""
        a, b = a.float(), b.float()
        an = a / torch.linalg.vector_norm(a, dim=1, keepdim=True).clamp_min(COS_EPS)
        bn = b / torch.linalg.vector_norm(b, dim=1, keepdim=True).clamp_min(COS_EPS)
        return 1.0 - (an * bn).sum(dim=1, keepdim=True)

    def forward(self, en: list[Tensor], de: list[Tensor]) -> Tensor:
        s = (self.img_size, self.img_size)
        levels = [F.interpolate(self.one_minus_cos(e, d), size=s, mode="bilinear", align_corners=True)
                  for e, d in zip(en, de)]
        amap = torch.cat(levels, dim=1).mean(dim=1, keepdim=True)
        amap = F.interpolate(amap, size=(self.map_size, self.map_size), mode="bilinear",
                             align_corners=False)
        return F.conv2d(amap, self.gaussian, padding=self.gaussian.shape[-1] // 2)


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
class INPFormer(nn.Module):
    """INP-Former for inference at one tile size S. ``forward(image)`` → anomaly map (N,1,M,M);
    ``forward_features(image)`` → (en₀, en₁, …, de₀, de₁, …) each (N, C, S/p, S/p)."""

    def __init__(self, arch: InpFormerArch) -> None:
        super().__init__()
        self.arch = arch
        c, h, hid = arch.embed_dim, arch.num_heads, arch.mlp_hidden
        n_patch, n_proto = arch.grid**2, arch.inp_num
        self.encoder = Encoder(arch)
        self.bottleneck = nn.ModuleList([Mlp(c, hid)])
        self.aggregation = nn.ModuleList([AggregationBlock(c, h, hid, n_proto, n_patch)])
        self.decoder = nn.ModuleList(
            PrototypeBlock(c, h, hid, n_patch, n_proto) for _ in range(arch.decoder_depth))
        self.prototype_token = nn.Parameter(torch.zeros(arch.inp_num, c))
        self.head = AnomalyHead(arch.img_size, arch.map_size, arch.gaussian_kernel, arch.gaussian_sigma)
        self.eval()

    def levels(self, image: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Fused encoder and decoder levels, each (N, C, side, side)."""
        en, de, _, _ = self.parts(image)
        return en, de

    def parts(self, image: Tensor, frozen_encoder: bool = False
              ) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
        """``(en, de, x, p)``: the fused levels, the fused encoder tokens x (N, g², C) and the
        aggregated prototypes p (N, P, C). ``frozen_encoder`` runs the encoder without gradients
        (training, as upstream does)."""
        a = self.arch
        if not torch.jit.is_tracing() and tuple(image.shape[1:]) != (3, a.img_size, a.img_size):
            raise ValueError(f"expected input (N, 3, {a.img_size}, {a.img_size}), got {tuple(image.shape)}")
        first_patch = 1 + a.num_register_tokens
        targets = set(a.target_layers)
        en_list = []
        with torch.no_grad() if frozen_encoder else contextlib.nullcontext():
            x = self.encoder.tokens(image)
            for i, blk in enumerate(self.encoder.blocks):
                x = blk(x)
                if i in targets:
                    en_list.append(x[:, first_patch:])
            x = _fuse(en_list)
        fused = x
        p = self.prototype_token.unsqueeze(0).expand(x.shape[0], a.inp_num, a.embed_dim)
        for blk in self.aggregation:
            p = blk(p, x)
        for mlp in self.bottleneck:
            x = mlp(x)
        de_list = []
        for blk in self.decoder:
            x = blk(x, p)
            de_list.append(x)
        de_list.reverse()
        en = [self._to_map(_fuse([en_list[i] for i in g])) for g in a.fuse_layer_encoder]
        de = [self._to_map(_fuse([de_list[i] for i in g])) for g in a.fuse_layer_decoder]
        return en, de, fused, p

    def _to_map(self, t: Tensor) -> Tensor:
        return t.transpose(1, 2).reshape(-1, self.arch.embed_dim, self.arch.grid, self.arch.grid)

    def forward_features(self, image: Tensor) -> tuple[Tensor, ...]:
        en, de = self.levels(image)
        return (*en, *de)

    def forward(self, image: Tensor) -> Tensor:
        en, de = self.levels(image)
        return self.head(en, de)

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def from_upstream(cls, state_dict: Mapping[str, Any], arch: InpFormerArch) -> INPFormer:
        """Build from an upstream INP_Former state_dict (keys unchanged), strictly checked."""
        check_state_dict(state_dict, arch)
        model = cls(arch)
        model.load_state_dict(to_model_state_dict(state_dict, arch), strict=True)
        return model.eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, arch: InpFormerArch) -> INPFormer:
        """Load a ``torch.save(model.state_dict())`` file (CPU, weights only)."""
        sd = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(sd, Mapping):
            raise ArchitectureError(f"{path}: expected a state_dict (mapping), got {type(sd).__name__}")
        return cls.from_upstream(sd, arch)


def _fuse(feats: list[Tensor]) -> Tensor:
    return torch.stack(feats, dim=1).mean(dim=1)


# ---------------------------------------------------------------------------------------------
# state_dict: expected keys, inference, checking, conversion
# ---------------------------------------------------------------------------------------------
def _linear(prefix: str, out_f: int, in_f: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (out_f, in_f), f"{prefix}.bias": (out_f,)}


def _norm(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,)}


def _mlp(prefix: str, c: int, hid: int) -> dict[str, tuple[int, ...]]:
    return {**_linear(f"{prefix}.fc1", hid, c), **_linear(f"{prefix}.fc2", c, hid)}


def upstream_key_shapes(arch: InpFormerArch, pos_grid: int = 37) -> dict[str, tuple[int, ...]]:
    """Every key of an upstream INP_Former state_dict for ``arch`` with its shape, in upstream order.

    ``pos_grid`` is the side of the position-embedding grid stored in the checkpoint (37 for the
    DINOv2 encoder RoBiS builds at 518, whatever the tile size)."""
    c, hid, p = arch.embed_dim, arch.mlp_hidden, arch.patch_size
    s: dict[str, tuple[int, ...]] = {"prototype_token": (arch.inp_num, c),
                                     "encoder.cls_token": (1, 1, c),
                                     "encoder.pos_embed": (1, 1 + pos_grid**2, c)}
    if arch.num_register_tokens:
        s["encoder.register_tokens"] = (1, arch.num_register_tokens, c)
    s["encoder.mask_token"] = (1, c)
    s.update(_linear("encoder.patch_embed.proj", c, 3))
    s["encoder.patch_embed.proj.weight"] = (c, 3, p, p)
    for i in range(arch.depth):
        b = f"encoder.blocks.{i}"
        s.update(_norm(f"{b}.norm1", c))
        s.update(_linear(f"{b}.attn.qkv", 3 * c, c))
        s.update(_linear(f"{b}.attn.proj", c, c))
        s[f"{b}.ls1.gamma"] = (c,)
        s.update(_norm(f"{b}.norm2", c))
        s.update(_mlp(f"{b}.mlp", c, hid))
        s[f"{b}.ls2.gamma"] = (c,)
    s.update(_norm("encoder.norm", c))
    s.update(_mlp("bottleneck.0", c, hid))
    a = "aggregation.0"
    s.update({**_norm(f"{a}.norm1", c), **_linear(f"{a}.attn.q", c, c), **_linear(f"{a}.attn.kv", 2 * c, c),
              **_linear(f"{a}.attn.proj", c, c), **_norm(f"{a}.norm2", c), **_mlp(f"{a}.mlp", c, hid)})
    for d in range(arch.decoder_depth):
        b = f"decoder.{d}"
        s.update(_norm(f"{b}.norm1", c))
        s[f"{b}.attn.learn_scale"] = (arch.num_heads, 1, 1)
        s.update({**_linear(f"{b}.attn.q", c, c), **_linear(f"{b}.attn.kv", 2 * c, c),
                  **_linear(f"{b}.attn.proj", c, c), **_norm(f"{b}.norm2", c), **_mlp(f"{b}.mlp", c, hid)})
    return s


def ignored_keys(arch: InpFormerArch, keys: list[str] | None = None) -> set[str]:
    """Upstream keys that inference never reads (unused encoder blocks, encoder.norm, mask_token)."""
    keys = keys if keys is not None else list(upstream_key_shapes(arch))
    out = set()
    for k in keys:
        m = re.match(r"encoder\.blocks\.(\d+)\.", k)
        if (m and int(m.group(1)) >= arch.used_blocks) or k.startswith("encoder.norm.") \
                or k == "encoder.mask_token":
            out.add(k)
    return out


def _shape(sd: Mapping[str, Any], key: str) -> tuple[int, ...] | None:
    v = sd.get(key)
    return tuple(v.shape) if isinstance(v, Tensor) else None


def pos_grid_of(sd: Mapping[str, Any]) -> int | None:
    """Side of the square position-embedding grid in the checkpoint, or None when not square."""
    shp = _shape(sd, "encoder.pos_embed")
    if shp is None or len(shp) != 3 or shp[0] != 1:
        return None
    g = math.isqrt(shp[1] - 1) if shp[1] >= 1 else -1
    return g if g >= 1 and g * g == shp[1] - 1 else None


def infer_arch_facts(sd: Mapping[str, Any]) -> dict[str, Any]:
    """What the state_dict alone says about the architecture (keys absent → facts left out):
    embed_dim, depth, num_heads (from decoder.N.attn.learn_scale), decoder_depth,
    num_register_tokens, inp_num, patch_size, mlp_ratio, pos_grid."""
    f: dict[str, Any] = {}
    if (s := _shape(sd, "encoder.cls_token") or _shape(sd, "prototype_token")) is not None:
        f["embed_dim"] = s[-1]
    if (s := _shape(sd, "prototype_token")) is not None:
        f["inp_num"] = s[0]
    enc = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.blocks\.(\d+)\.", k))}
    if enc:
        f["depth"] = max(enc) + 1
    dec = {int(m.group(1)) for k in sd if (m := re.match(r"decoder\.(\d+)\.", k))}
    if dec:
        f["decoder_depth"] = max(dec) + 1
    for d in sorted(dec):
        if (s := _shape(sd, f"decoder.{d}.attn.learn_scale")) is not None:
            f["num_heads"] = s[0]
            break
    if any(k.startswith("encoder.") for k in sd):
        s = _shape(sd, "encoder.register_tokens")
        f["num_register_tokens"] = s[1] if s is not None and len(s) == 3 else 0
    if (s := _shape(sd, "encoder.patch_embed.proj.weight")) is not None and len(s) == 4:
        f["patch_size"] = s[-1]
    fc1 = _shape(sd, "bottleneck.0.fc1.weight") or _shape(sd, "encoder.blocks.0.mlp.fc1.weight")
    if fc1 is not None and len(fc1) == 2 and fc1[1]:
        f["mlp_ratio"] = fc1[0] / fc1[1]
    if (g := pos_grid_of(sd)) is not None:
        f["pos_grid"] = g
    return f


def arch_mismatches(sd: Mapping[str, Any], arch: InpFormerArch) -> list[str]:
    """Facts inferred from ``sd`` that contradict ``arch``, as readable lines."""
    out = []
    for name, value in infer_arch_facts(sd).items():
        if name == "pos_grid":
            continue
        want = getattr(arch, name)
        # Unused trailing blocks may be absent; more blocks than the arch says is a mismatch.
        if name == "depth" and arch.used_blocks <= value <= want:
            continue
        if value != want:
            out.append(f"{name}: state_dict has {value}, architecture says {want}")
    return out


_LIST_MAX = 40


def _some(keys: list[str]) -> str:
    more = f", ... and {len(keys) - _LIST_MAX} more" if len(keys) > _LIST_MAX else ""
    return ", ".join(keys[:_LIST_MAX]) + more


def check_state_dict(sd: Mapping[str, Any], arch: InpFormerArch) -> None:
    """Raise one ArchitectureError listing every architecture mismatch, missing key, unexpected
    key and wrong shape. Unused upstream keys (blocks past max(target_layers), encoder.norm,
    encoder.mask_token) may be present (shape-checked) or absent."""
    pos_grid = pos_grid_of(sd)
    expected = upstream_key_shapes(arch, pos_grid if pos_grid is not None else arch.grid)
    optional = ignored_keys(arch)
    problems = [f"architecture mismatch: {m}" for m in arch_mismatches(sd, arch)]
    missing = [k for k in expected if k not in sd and k not in optional]
    unexpected = [k for k in sd if k not in expected]
    wrong = []
    for k, want in expected.items():
        if k not in sd:
            continue
        v = sd[k]
        if not isinstance(v, Tensor) or not v.is_floating_point():
            wrong.append(f"{k}: not a floating-point tensor ({type(v).__name__})")
        elif tuple(v.shape) != want:
            wrong.append(f"{k}: shape {tuple(v.shape)}, expected {want}")
    if "encoder.pos_embed" in sd and pos_grid is None:
        wrong.append(f"encoder.pos_embed: shape {_shape(sd, 'encoder.pos_embed')} is not (1, 1+g², C)")
    if missing:
        problems.append(f"missing key(s) ({len(missing)}): {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected key(s) ({len(unexpected)}): {_some(unexpected)}")
        if all(k.startswith("module.") for k in sd):
            problems.append("hint: every key starts with 'module.'; strip that DataParallel prefix first")
    if wrong:
        problems.append("wrong shape(s):\n    " + "\n    ".join(wrong[:_LIST_MAX])
                        + (f"\n    ... and {len(wrong) - _LIST_MAX} more" if len(wrong) > _LIST_MAX else ""))
    if problems:
        raise ArchitectureError("state_dict does not match the INP-Former architecture:\n  "
                                + "\n  ".join(problems))


def resample_pos_embed(pos_embed: Tensor, grid: int, offset: float = POS_INTERP_OFFSET) -> Tensor:
    """DINOv2's interpolate_pos_encoding, done once: unchanged when the stored grid already equals
    ``grid``, otherwise a bicubic (A=-0.75, antialias off) resample of the patch part with
    scale_factor (grid+offset)/stored_grid; the cls entry is kept."""
    n = pos_embed.shape[1] - 1
    g = math.isqrt(n)
    if g == grid:
        return pos_embed.float().clone()
    c = pos_embed.shape[-1]
    patch = pos_embed[:, 1:].float().reshape(1, g, g, c).permute(0, 3, 1, 2)
    scale = (grid + offset) / math.sqrt(n)
    patch = F.interpolate(patch, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    if patch.shape[-2:] != (grid, grid):
        raise ArchitectureError(f"position embedding resample {g}→{grid} gave {tuple(patch.shape[-2:])}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid * grid, c)
    return torch.cat([pos_embed[:, :1].float(), patch], dim=1)


def to_model_state_dict(sd: Mapping[str, Any], arch: InpFormerArch) -> dict[str, Tensor]:
    """Upstream state_dict → this module's: drop ignored keys, resample pos_embed, cast to fp32."""
    drop = ignored_keys(arch, list(sd))
    out = {k: v.detach().float() for k, v in sd.items() if k not in drop}
    out["encoder.pos_embed"] = resample_pos_embed(out["encoder.pos_embed"], arch.grid)
    return out
