"""The upstream INP_Former checkpoint: its key schema, what a state_dict says about the
architecture, strict validation, and its conversion to :class:`~export.inpformer.model.INPFormer`'s
own state_dict.

An upstream state_dict holds every encoder block, ``encoder.norm``, ``encoder.mask_token`` and the
position embedding at the grid it was trained with (37 for RoBiS' 518 encoder). Inference reads
only blocks 0..max(target_layers): the rest are shape-checked and dropped, and
``encoder.pos_embed`` is resampled once, at load, to the tile grid.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .arch import ArchitectureError, InpFormerArch

POS_INTERP_OFFSET = 0.1  # RoBiS builds DINOv2 with interpolate_offset=0.1, antialias off


def read_state_dict(path: str | Path, *, unwrap_model: bool = False) -> Mapping[str, Any]:
    """A ``torch.save(state_dict)`` file (CPU, weights only). ``unwrap_model`` accepts a training
    checkpoint ``{"model": state_dict, ...}`` too."""
    try:
        sd = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip / weights_only refusals: all mean "not a state_dict file"
        reason = " ".join(str(exc).split())[:200]
        raise ArchitectureError(f"{path}: not a PyTorch state_dict file (torch.load(weights_only=True) "
                                f"cannot read it: {reason}); give the model.pth saved by training") from None
    if unwrap_model and isinstance(sd, Mapping) and "model" in sd and isinstance(sd["model"], Mapping):
        sd = sd["model"]
    if not isinstance(sd, Mapping):
        raise ArchitectureError(f"{path}: expected a state_dict (mapping), got {type(sd).__name__}")
    return sd


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
