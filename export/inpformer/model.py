"""Inference-only INP-Former (RoBiS flavour) that loads upstream state_dicts unchanged.

Submodule names follow the upstream checkpoint keys (``encoder.blocks.3.attn.qkv.weight``,
``decoder.5.attn.learn_scale``, ``prototype_token``...), so loading is a key filter plus one
transformation (:mod:`export.inpformer.checkpoint`): ``encoder.pos_embed`` is resampled once, at
load, to the tile size S and kept as a constant buffer. Only encoder blocks 0..max(target_layers)
exist here.

Numerics, as the upstream INP-Former computes them: explicit softmax attention with q
scaled before the matmul, LayerNorm eps 1e-6 (encoder) / 1e-8 (INP blocks), exact GELU, decoder attention with
L2-normalised q/k and ReLU (no softmax, no residual), and an fp32 anomaly head computing cosine as
normalise-then-dot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .arch import InpFormerArch
from .checkpoint import check_state_dict, read_state_dict, to_model_state_dict

ENCODER_LN_EPS = 1e-6
INP_LN_EPS = 1e-8
L2_EPS = 1e-12
COS_EPS = 1e-8


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


def l2_normalize(x: Tensor, eps: float) -> Tensor:
    """``x`` divided by its L2 norm over the last axis (clamped to ``eps``)."""
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
        q, k = l2_normalize(q, L2_EPS), l2_normalize(k, L2_EPS)
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
        return cls.from_upstream(read_state_dict(path), arch)


def _fuse(feats: list[Tensor]) -> Tensor:
    return torch.stack(feats, dim=1).mean(dim=1)
