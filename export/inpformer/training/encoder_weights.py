"""The frozen encoder's weights: DINOv2's own seeded random initialisation, or a DINOv2-reg file
loaded on top of it with upstream's ``strict=False`` semantics."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..arch import ArchitectureError, InpFormerArch
from ..checkpoint import read_state_dict, upstream_key_shapes

UPSTREAM_ENCODER_IMG_SIZE = 518  # RoBiS builds its DINOv2 encoder at 518 whatever the tile size
DINOV2_LAYERSCALE_INIT = 1e-8  # vit_encoder.load: init_values=1e-8


def encoder_key_shapes(arch: InpFormerArch, pos_grid: int) -> dict[str, tuple[int, ...]]:
    """The ``encoder.*`` keys of the upstream checkpoint schema, with their shapes."""
    return {k: s for k, s in upstream_key_shapes(arch, pos_grid).items() if k.startswith("encoder.")}


def default_pos_grid(arch: InpFormerArch) -> int:
    """Position-embedding grid of the encoder RoBiS builds (img_size 518): 37 for patch 14."""
    return UPSTREAM_ENCODER_IMG_SIZE // arch.patch_size


def random_encoder_state_dict(arch: InpFormerArch, seed: int,
                              pos_grid: int | None = None) -> dict[str, Tensor]:
    """Every ``encoder.*`` key with DINOv2's own initialisation, as RoBiS would have it before loading
    weights: pos_embed trunc-normal std 0.02, cls/register tokens N(0, 1e-6), mask_token 0, every
    Linear trunc-normal std 0.02 with zero bias (timm ViT init), the patch Conv2d with PyTorch's
    default init, LayerNorm 1/0, LayerScale gamma 1e-8. Deterministic for ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    shapes = encoder_key_shapes(arch, pos_grid if pos_grid is not None else default_pos_grid(arch))
    sd: dict[str, Tensor] = {}
    fan_in = 3 * arch.patch_size * arch.patch_size
    for k, shape in shapes.items():
        t = torch.empty(shape)
        if k == "encoder.pos_embed":
            nn.init.trunc_normal_(t, std=0.02, generator=g)
        elif k in ("encoder.cls_token", "encoder.register_tokens"):
            nn.init.normal_(t, std=1e-6, generator=g)
        elif k == "encoder.mask_token":
            nn.init.zeros_(t)
        elif k == "encoder.patch_embed.proj.weight":
            nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=g)
        elif k == "encoder.patch_embed.proj.bias":
            nn.init.uniform_(t, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=g)
        elif k.endswith(".gamma"):
            nn.init.constant_(t, DINOV2_LAYERSCALE_INIT)
        elif ".norm" in k or k.startswith("encoder.norm."):
            nn.init.constant_(t, 1.0 if k.endswith(".weight") else 0.0)
        elif k.endswith(".weight"):
            nn.init.trunc_normal_(t, std=0.02, generator=g)
        else:
            nn.init.zeros_(t)
        sd[k] = t
    return sd


@dataclass
class EncoderLoad:
    """What loading a DINOv2-reg file did (upstream ``load_state_dict(strict=False)`` semantics)."""

    state: dict[str, Tensor]
    loaded: list[str]
    missing: list[str]  # expected encoder keys absent from the file: they keep the random init
    unexpected: list[str]  # keys of the file the encoder does not have: ignored
    pos_grid: int


def load_encoder_weights(path: str | Path, arch: InpFormerArch, seed: int) -> EncoderLoad:
    """Load a DINOv2-reg ``.pth`` (keys without the ``encoder.`` prefix, e.g.
    ``dinov2_vitb14_reg4_pretrain.pth``) on top of the random initialisation. Missing keys keep
    their initial values and unexpected keys are ignored (reported); a shape mismatch is an error,
    as in ``load_state_dict``. The position embedding may have any square grid (it is resampled to
    the tile grid like DINOv2 does at run time)."""
    raw = read_state_dict(path, unwrap_model=True)
    file_sd = {str(k): v for k, v in raw.items() if isinstance(v, Tensor)}
    if file_sd and all(k.startswith("encoder.") for k in file_sd):  # an INP-Former checkpoint's encoder
        file_sd = {k[len("encoder."):]: v for k, v in file_sd.items()}
    pos_grid = default_pos_grid(arch)
    pe = file_sd.get("pos_embed")
    if pe is not None and pe.ndim == 3 and (g := math.isqrt(pe.shape[1] - 1)) ** 2 == pe.shape[1] - 1:
        pos_grid = g
    state = random_encoder_state_dict(arch, seed, pos_grid)
    expected = encoder_key_shapes(arch, pos_grid)
    loaded, wrong = [], []
    for k, want in expected.items():
        v = file_sd.get(k[len("encoder."):])
        if v is None:
            continue
        if tuple(v.shape) != want:
            wrong.append(f"{k[len('encoder.'):]}: file {tuple(v.shape)}, model {want}")
            continue
        state[k] = v.detach().float().clone()
        loaded.append(k)
    if wrong:
        raise ArchitectureError(f"{path}: encoder weights do not fit the architecture (embed_dim "
                                f"{arch.embed_dim}, depth {arch.depth}):\n  " + "\n  ".join(wrong[:20]))
    exp_short = {k[len("encoder."):] for k in expected}
    missing = [k for k in expected if k not in loaded]
    unexpected = sorted(k for k in file_sd if k not in exp_short)
    if not loaded:
        raise ArchitectureError(f"{path}: none of its {len(file_sd)} keys is an encoder key of this "
                                "architecture (expected DINOv2 keys such as 'blocks.0.attn.qkv.weight')")
    return EncoderLoad(state, loaded, missing, unexpected, pos_grid)
