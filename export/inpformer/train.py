"""Training INP-Former the way RoBiS does it (reference-pipeline.md §7), for ``robis-edge fit``.

* Frozen encoder: DINOv2-reg weights loaded from a ``.pth`` (keys without ``encoder.``, loaded
  with upstream's ``strict=False`` semantics and a report of what was missing/unexpected), or, without
  one, DINOv2's own seeded random initialisation (LayerScale 1e-8, as RoBiS builds the encoder).
* Trainable: bottleneck, INP extractor (aggregation), decoder, prototype tokens; Linear weights
  truncated normal std 0.01 in [-0.03, 0.03], biases 0, LayerNorm 1/0, prototypes N(0, 1),
  ``learn_scale`` 1 (its constructor value; upstream's init loop does not touch it).
* Data: Swin-Cropping tiles (``sdk.geometry.TilingPlan``, zero padding included) of defect-free
  frames, resized to S with the SDK's Pillow-exact resize, then on half of the samples the
  exposure + noise augmentation (``2^λ``, λ~U(-0.2, 0.2), clip, N(0, 15) per pixel and channel,
  clip, uint8 truncation), then the SDK's ToTensor + Normalize lookup tables.
* Loss: ``global_cosine_hm_adaptive(en, de, y=3) + 0.2 * gather_loss``.
* Optimiser: :class:`StableAdamW` (AdamW with update clipping, amsgrad, eps 1e-10, weight decay
  1e-4), gradient-norm clipping 0.1, :class:`WarmCosineSchedule` (linear warm-up from 0, then
  cosine to the final value).
* Output: ``torch.save(state_dict)`` with the full upstream key set (every encoder block,
  ``encoder.norm``, ``encoder.mask_token``, the stored position-embedding grid...), so upstream's
  strict loader and ``robis-edge export`` accept it; the architecture JSON beside it.

The model classes are those of :mod:`export.inpformer.model`; :class:`TrainableINPFormer` runs
their submodules in the order of upstream ``INP_Former.forward`` and additionally returns the gather
loss (a test checks that its features equal ``INPFormer.levels``).
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdk.bundle import PreprocessSpec, sha256_file
from sdk.geometry import TilingPlan
from sdk.preprocess import TilePreprocessor, prepare_frame
from sdk.resize import BilinearAntialiasResizer

from .arch import ArchitectureError, InpFormerArch
from .checkpoint import check_state_dict, ignored_keys, to_model_state_dict, upstream_key_shapes
from .model import INPFormer

UPSTREAM_ENCODER_IMG_SIZE = 518  # RoBiS builds its DINOv2 encoder at 518 whatever the tile size
DINOV2_LAYERSCALE_INIT = 1e-8  # vit_encoder.load: init_values=1e-8
COS_EPS = 1e-8  # torch.nn.CosineSimilarity default, as upstream's losses use it

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# =============================================================================================
# optimiser, schedule, losses
# =============================================================================================
class StableAdamW(torch.optim.Optimizer):
    """AdamW with update clipping (RoBiS ``models/optimizers/StableAdamW.py`` semantics).

    Per parameter and step, with ``t`` the step count and ``g`` the gradient:

    * decoupled weight decay: ``p ← p·(1 − lr·wd)``;
    * ``m ← β₁m + (1−β₁)g``, ``v ← β₂v + (1−β₂)g²``; with amsgrad ``v̂ ← max(v̂, v)`` (else ``v̂ = v``);
    * ``denom = √v̂ / √(1−β₂ᵗ) + eps``;
    * update clipping: ``s = max(1, RMS(g / denom) / clip_threshold)`` over the whole tensor;
    * ``p ← p − lr / (1−β₁ᵗ) / s · m / denom``.

    Defaults are the values RoBiS trains with (amsgrad on, eps 1e-10, weight decay 1e-4).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-10, weight_decay: float = 1e-4, amsgrad: bool = True,
                 clip_threshold: float = 1.0) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or clip_threshold <= 0:
            raise ValueError("lr, eps and weight_decay must be >= 0 and clip_threshold > 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, clip_threshold=clip_threshold))

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("StableAdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                p.mul_(1.0 - lr * wd)
                state["step"] += 1
                t = state["step"]
                bc1, bc2 = 1.0 - beta1**t, 1.0 - beta2**t
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                if group["amsgrad"]:
                    torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                    v = state["max_exp_avg_sq"]
                denom = (v.sqrt() / math.sqrt(bc2)).add_(eps)
                rms = float(torch.linalg.vector_norm(grad / denom)) / math.sqrt(grad.numel())
                scale = max(1.0, rms / group["clip_threshold"])
                p.addcdiv_(m, denom, value=-lr / bc1 / scale)
        return loss


@dataclass(frozen=True)
class WarmCosineSchedule:
    """RoBiS ``WarmCosineScheduler`` as a table: ``warmup`` values evenly from ``start`` to ``base``
    (both ends included, as ``np.linspace``), then ``base → final`` along half a cosine over the
    remaining ``total − warmup`` iterations; ``final`` from ``total`` on. ``lr(i)`` is the rate of
    (0-based) iteration ``i``; the first iteration therefore runs at ``start`` (0) when warming up."""

    base: float
    final: float
    total: int
    warmup: int = 0
    start: float = 0.0

    def lr(self, i: int) -> float:
        if i >= self.total:
            return float(self.final)
        if i < self.warmup:
            if self.warmup == 1:
                return float(self.start)
            return float(self.start + (self.base - self.start) * i / (self.warmup - 1))
        n = self.total - self.warmup
        j = i - self.warmup
        return float(self.final + 0.5 * (self.base - self.final) * (1.0 + math.cos(math.pi * j / n)))


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``factor`` (broadcast)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, factor: Tensor) -> Tensor:
        ctx.save_for_backward(factor)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (factor,) = ctx.saved_tensors
        return grad * factor, None


def global_cosine_hm_adaptive(en: Sequence[Tensor], de: Sequence[Tensor], y: float = 3.0) -> Tensor:
    """RoBiS' hard-mining global cosine loss.

    For each level, ``a = en[l]`` (detached), ``b = de[l]`` (N, C, h, w): the value is
    ``mean over the batch of 1 − cos(a.flatten(1), b.flatten(1))``; the gradient that reaches ``b``
    is multiplied per location by ``(d / mean(d))^y`` with ``d = 1 − cos(a, b)`` over channels
    (detached; the mean over batch and locations), so badly reconstructed locations weigh more.
    Levels are averaged. (Upstream does the scaling with a tensor hook on ``b``; here it is an
    autograd function on this loss's own path, which is the same when ``b`` feeds nothing else.)
    """
    if len(en) != len(de) or not en:
        raise ValueError("en and de must be non-empty lists of the same length")
    total = en[0].new_zeros(())
    for a, b in zip(en, de):
        a = a.detach()
        with torch.no_grad():
            d = 1.0 - F.cosine_similarity(a, b, dim=1, eps=COS_EPS).unsqueeze(1)
            factor = (d / d.mean().clamp_min(torch.finfo(d.dtype).tiny)) ** y
        b = _ScaleGrad.apply(b, factor)
        cos = F.cosine_similarity(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1), dim=1, eps=COS_EPS)
        total = total + (1.0 - cos).mean()
    return total / len(en)


def gather_loss(tokens: Tensor, prototypes: Tensor, eps: float = COS_EPS) -> Tensor:
    """INP-Former's gather loss: the mean over tokens of the minimum over prototypes of
    ``1 − cos(token, prototype)``; tokens (N, L, C), prototypes (N, P, C). Computed as normalised
    vectors and one batched matmul (upstream broadcasts to N×L×P×C)."""
    q = tokens / torch.linalg.vector_norm(tokens, dim=-1, keepdim=True).clamp_min(eps)
    k = prototypes / torch.linalg.vector_norm(prototypes, dim=-1, keepdim=True).clamp_min(eps)
    dist = 1.0 - q @ k.transpose(-2, -1)
    return dist.min(dim=-1).values.mean()


# =============================================================================================
# encoder weights: random DINOv2 init or a DINOv2-reg file
# =============================================================================================
def _encoder_keys(arch: InpFormerArch, pos_grid: int) -> dict[str, tuple[int, ...]]:
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
    shapes = _encoder_keys(arch, pos_grid if pos_grid is not None else default_pos_grid(arch))
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
    raw = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(raw, Mapping) and "model" in raw and isinstance(raw["model"], Mapping):
        raw = raw["model"]
    if not isinstance(raw, Mapping):
        raise ArchitectureError(f"{path}: expected a state_dict (mapping), got {type(raw).__name__}")
    file_sd = {str(k): v for k, v in raw.items() if isinstance(v, Tensor)}
    if file_sd and all(k.startswith("encoder.") for k in file_sd):  # an INP-Former checkpoint's encoder
        file_sd = {k[len("encoder."):]: v for k, v in file_sd.items()}
    pos_grid = default_pos_grid(arch)
    pe = file_sd.get("pos_embed")
    if pe is not None and pe.ndim == 3 and (g := math.isqrt(pe.shape[1] - 1)) ** 2 == pe.shape[1] - 1:
        pos_grid = g
    state = random_encoder_state_dict(arch, seed, pos_grid)
    expected = _encoder_keys(arch, pos_grid)
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


# =============================================================================================
# the trainable model
# =============================================================================================
class TrainableINPFormer(nn.Module):
    """The colleague's :class:`INPFormer` plus what training needs: the upstream-only encoder
    tensors (unused blocks, ``encoder.norm``, ``mask_token``, the stored position-embedding grid)
    kept frozen for the checkpoint, a frozen encoder, §7 initialisation of the trainable parts and a
    forward that returns ``(en, de, gather_loss)`` like upstream ``INP_Former.forward``."""

    def __init__(self, arch: InpFormerArch, encoder_state: Mapping[str, Tensor]) -> None:
        super().__init__()
        self.arch = arch
        self.net = INPFormer(arch)
        pe = encoder_state["encoder.pos_embed"]
        self.pos_grid = math.isqrt(pe.shape[1] - 1)
        expected = _encoder_keys(arch, self.pos_grid)
        missing = [k for k in expected if k not in encoder_state]
        if missing:
            raise ArchitectureError(f"encoder state lacks {len(missing)} key(s): {missing[:5]}")
        full = dict(self.net.state_dict())
        full.update({k: encoder_state[k] for k in expected})
        self.net.load_state_dict(to_model_state_dict(full, arch), strict=True)
        drop = ignored_keys(arch, list(expected))
        # Tensors the inference graph never reads, saved unchanged (not parameters: never trained).
        self.upstream_only: dict[str, Tensor] = {k: encoder_state[k].detach().float().clone()
                                                 for k in sorted(drop | {"encoder.pos_embed"})}
        self.net.encoder.requires_grad_(False)

    # ---- parameters --------------------------------------------------------------------------
    def trainable_modules(self) -> list[nn.Module]:
        n = self.net
        return [n.bottleneck, n.aggregation, n.decoder]

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = [p for m in self.trainable_modules() for p in m.parameters()]
        return params + [self.net.prototype_token]

    @torch.no_grad()
    def init_trainable_(self, seed: int) -> None:
        """§7: Linear trunc-normal std 0.01 in [-0.03, 0.03] and bias 0, LayerNorm 1/0, prototype
        tokens N(0, 1); ``learn_scale`` keeps 1."""
        g = torch.Generator().manual_seed(int(seed))
        for mod in self.trainable_modules():
            for m in mod.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.01, a=-0.03, b=0.03, generator=g)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.LayerNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        for m in self.net.decoder.modules():
            if hasattr(m, "learn_scale"):
                m.learn_scale.fill_(1.0)
        self.net.prototype_token.normal_(0.0, 1.0, generator=g)

    # ---- forward ----------------------------------------------------------------------------
    def forward_tokens(self, image: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
        """``(en, de, x, p)`` of ``INPFormer.parts`` with the encoder frozen (no gradients, as
        upstream runs its blocks under ``no_grad``)."""
        return self.net.parts(image, frozen_encoder=True)

    def forward(self, image: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        en, de, x, p = self.forward_tokens(image)
        return en, de, gather_loss(x, p)

    # ---- checkpoint -------------------------------------------------------------------------
    def upstream_state_dict(self) -> OrderedDict[str, Tensor]:
        """The full upstream INP_Former state_dict (keys and order of §1.3), fp32, CPU."""
        net_sd = self.net.state_dict()
        out: OrderedDict[str, Tensor] = OrderedDict()
        for k in upstream_key_shapes(self.arch, self.pos_grid):
            v = self.upstream_only[k] if k in self.upstream_only else net_sd[k]
            out[k] = v.detach().float().cpu().clone().contiguous()
        check_state_dict(out, self.arch)
        return out


# =============================================================================================
# data: Swin-Cropping tiles, SDK resize, augmentation, SDK normalisation
# =============================================================================================
def adjust_exposure(tile: np.ndarray, lam: float, noise: np.ndarray) -> np.ndarray:
    """RoBiS ``adjust_exposure``: float32 ``tile · 2^lam``, clip to [0, 255], ``+ noise``, clip,
    uint8 truncation. ``tile`` (S, S, 3) uint8; ``noise`` of the same shape (float64)."""
    img = tile.astype(np.float32) * (2.0**lam)
    img = np.clip(img, 0, 255)
    img = img + noise
    img = np.clip(img, 0, 255)
    return img.astype(np.uint8)


def random_exposure(tile: np.ndarray, rng: np.random.Generator, p: float = 0.5,
                    lam_range: float = 0.2, noise_std: float = 15.0) -> tuple[np.ndarray, bool]:
    """With probability ``p``: ``adjust_exposure`` with λ~U(−0.2, 0.2) and N(0, 15) noise per pixel
    and channel. Returns the tile and whether it was augmented."""
    if rng.random() >= p:
        return tile, False
    lam = rng.uniform(-lam_range, lam_range)
    return adjust_exposure(tile, lam, rng.normal(0.0, noise_std, tile.shape)), True


def _as_frames(frames: Iterable[Any]) -> Iterable[tuple[np.ndarray, str | None]]:
    for f in frames:
        if isinstance(f, tuple):
            yield f[0], f[1]
        else:
            yield f, None


class TileSet:
    """Training tiles of a set of frames, already resized to S (uint8, gray or RGB).

    Each frame goes through the SDK's inference path up to the resize: ``prepare_frame`` (gray
    stays gray, uint16 ``>> 8``, BGR → RGB), ``TilingPlan(h, w, window, overlap).extract`` (zero
    padding), ``BilinearAntialiasResizer`` (what ``TilePreprocessor`` uses; a gray tile is
    resized once). ``batch`` then augments and normalises with ``TilePreprocessor``'s tables.
    """

    def __init__(self, frames: Iterable[Any], size: int, window: int | None = 1024, overlap: float = 0.1,
                 spec: PreprocessSpec | None = None) -> None:
        self.size, self.window, self.overlap = int(size), window, float(overlap)
        self.spec = spec or PreprocessSpec(size=self.size)
        if self.spec.size != self.size:
            raise ValueError("spec.size must equal size")
        self._normalise = TilePreprocessor(self.spec, (self.size, self.size))
        self.tiles: list[np.ndarray] = []
        self.n_frames = 0
        resizers: dict[tuple[int, int], BilinearAntialiasResizer | None] = {}
        out_hw = (self.size, self.size)
        for frame, color in _as_frames(frames):
            img = prepare_frame(frame, color)
            plan = TilingPlan(img.shape[0], img.shape[1], window, overlap)
            tiles = plan.extract(img)
            hw = plan.tile_hw
            if hw not in resizers:
                resizers[hw] = None if hw == out_hw else BilinearAntialiasResizer(hw, out_hw)
            rs = resizers[hw]
            if rs is not None:
                tiles = rs(tiles[..., None])[..., 0] if tiles.ndim == 3 else rs(tiles)
            self.tiles.extend(np.ascontiguousarray(t) for t in tiles)
            self.n_frames += 1

    def __len__(self) -> int:
        return len(self.tiles)

    def batch(self, indices: Sequence[int], rng: np.random.Generator | None = None,
              aug_p: float = 0.5) -> tuple[np.ndarray, int]:
        """Model input (N, 3, S, S) float32 for ``indices``; with ``rng`` each sample is augmented
        with probability ``aug_p``. Returns the batch and the number of augmented samples."""
        rgb = np.empty((len(indices), self.size, self.size, 3), np.uint8)
        n_aug = 0
        for j, i in enumerate(indices):
            t = self.tiles[int(i)]
            rgb[j] = t[..., None] if t.ndim == 2 else t
            if rng is not None:
                rgb[j], aug = random_exposure(rgb[j], rng, p=aug_p)
                n_aug += aug
        return self._normalise(rgb), n_aug


# =============================================================================================
# fit
# =============================================================================================
@dataclass
class FitOptions:
    """Training settings; defaults are RoBiS' (§7) except ``epochs`` which callers usually set."""

    epochs: int = 200
    iters: int | None = None  # total iterations; overrides epochs
    batch_size: int = 16
    lr: float = 1e-3
    final_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    gather_weight: float = 0.2
    hm_power: float = 3.0
    window: int | None = 1024
    overlap: float = 0.1
    seed: int = 1


@dataclass
class FitResult:
    checkpoint: Path
    arch_json: Path
    sha256: str
    iterations: int
    epochs: float
    batch_size: int
    n_frames: int
    n_tiles: int
    seconds: float
    losses: list[float] = field(repr=False)
    encoder: str = ""
    encoder_random: bool = True
    missing_keys: list[str] = field(default_factory=list, repr=False)
    unexpected_keys: list[str] = field(default_factory=list, repr=False)


RANDOM_ENCODER_WARNING = """\
WARNING ***********************************************************************************
WARNING *  NO ENCODER WEIGHTS (--encoder-weights): the frozen encoder keeps its seeded RANDOM
WARNING *  initialisation (DINOv2's init, seed {seed}). Its features are random projections of
WARNING *  the pixels, not DINOv2 features: this is NOT the model RoBiS trains, and anomaly
WARNING *  detection quality will be far below a pretrained encoder. For real use pass
WARNING *  --encoder-weights {file} (the DINOv2-reg weights).
WARNING ***********************************************************************************"""


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def arch_json_path(out: str | Path) -> Path:
    return Path(str(out) + ".arch.json")


def fit(frames: Iterable[Any], arch: InpFormerArch, out: str | Path, *, options: FitOptions | None = None,
        encoder_weights: str | Path | None = None, log: Log = print, warn: Log = _stderr,
        progress: bool = True) -> FitResult:
    """Train INP-Former on defect-free ``frames`` (arrays, or ``(array, color)`` pairs with color
    'gray' | 'bgr' | 'rgb') as RoBiS does and save the upstream state_dict to ``out``."""
    from tqdm import tqdm

    o = options or FitOptions()
    t_start = time.perf_counter()
    _seed_everything(o.seed)
    out = Path(out)

    # ---- encoder ------------------------------------------------------------------------------
    if encoder_weights is None:
        size = {384: "s", 768: "b", 1024: "l", 1536: "g"}.get(arch.embed_dim)
        file = f"dinov2_vit{size}14_reg4_pretrain.pth" if size else \
            f"<DINOv2-reg .pth with embed_dim {arch.embed_dim}>"
        warn(RANDOM_ENCODER_WARNING.format(seed=o.seed, file=file))
        enc = EncoderLoad(random_encoder_state_dict(arch, o.seed), [], [], [], default_pos_grid(arch))
        enc_desc = f"random DINOv2 init (seed {o.seed})"
    else:
        enc = load_encoder_weights(encoder_weights, arch, o.seed)
        enc_desc = f"{Path(encoder_weights).name} (sha256 {sha256_file(encoder_weights)[:16]}…)"
        log(f"encoder weights {encoder_weights}: {len(enc.loaded)} tensors loaded, "
            f"pos_embed grid {enc.pos_grid}")
        if enc.missing:
            warn(f"WARNING: {len(enc.missing)} encoder key(s) missing from the file keep their random "
                 f"init: {', '.join(enc.missing[:20])}{' ...' if len(enc.missing) > 20 else ''}")
        if enc.unexpected:
            log(f"note: {len(enc.unexpected)} key(s) of the file ignored (strict=False): "
                f"{', '.join(enc.unexpected[:20])}{' ...' if len(enc.unexpected) > 20 else ''}")

    model = TrainableINPFormer(arch, enc.state)
    model.init_trainable_(o.seed + 1)
    params = model.trainable_parameters()
    n_train = sum(p.numel() for p in params)
    n_frozen = sum(p.numel() for p in model.net.encoder.parameters())

    # ---- data ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    tiles = TileSet(frames, arch.img_size, o.window, o.overlap)
    if len(tiles) == 0:
        raise ValueError("no training frames")
    batch = o.batch_size
    if len(tiles) < batch:
        warn(f"WARNING: only {len(tiles)} tiles, fewer than the batch size {batch}; using batches of "
             f"{len(tiles)}")
        batch = len(tiles)
    per_epoch = len(tiles) // batch  # drop_last=True, as upstream
    total = int(o.iters) if o.iters is not None else int(o.epochs) * per_epoch
    if total < 1:
        raise ValueError("nothing to train: 0 iterations")
    log(f"training tiles: {len(tiles)} from {tiles.n_frames} frame(s) (window {o.window}, overlap "
        f"{o.overlap}, resized to {arch.img_size}) in {time.perf_counter() - t0:.1f} s; "
        f"{per_epoch} batches of {batch} per epoch, {total} iterations ({total / per_epoch:.2f} epochs)")
    log(f"parameters: {n_train / 1e6:.2f}M trainable, {n_frozen / 1e6:.2f}M frozen encoder (in the graph); "
        f"encoder: {enc_desc}")
    if o.warmup > total:
        warn(f"WARNING: warm-up ({o.warmup} iterations) is longer than the run ({total}); the learning "
             f"rate never reaches {o.lr:g}")

    schedule = WarmCosineSchedule(o.lr, o.final_lr, total, o.warmup)
    opt = StableAdamW(params, lr=o.lr, betas=(0.9, 0.999), eps=1e-10, weight_decay=o.weight_decay,
                      amsgrad=True)
    rng = np.random.default_rng(o.seed)
    losses: list[float] = []
    model.train()
    order: list[int] = []
    bar = tqdm(range(total), desc="fit", unit="it", disable=not progress, file=sys.stderr,
               dynamic_ncols=True)
    ema = None
    for it in bar:
        if len(order) < batch:
            order = [int(i) for i in rng.permutation(len(tiles))]
        idx, order = order[:batch], order[batch:]
        if len(order) < batch:  # drop_last: the incomplete remainder of an epoch is not used
            order = []
        x, _ = tiles.batch(idx, rng)
        lr = schedule.lr(it)
        for g in opt.param_groups:
            g["lr"] = lr
        en, de, g_loss = model(torch.from_numpy(x))
        loss = global_cosine_hm_adaptive(en, de, y=o.hm_power) + o.gather_weight * g_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_norm=o.grad_clip)
        opt.step()
        v = float(loss.detach())
        if not math.isfinite(v):
            raise FloatingPointError(f"loss became {v} at iteration {it}")
        losses.append(v)
        ema = v if ema is None else 0.9 * ema + 0.1 * v
        bar.set_postfix(loss=f"{ema:.4f}", lr=f"{lr:.2e}", refresh=False)
    bar.close()
    model.eval()

    # ---- save ---------------------------------------------------------------------------------
    sd = model.upstream_state_dict()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, out)
    aj = arch_json_path(out)
    arch.to_json(aj)
    seconds = time.perf_counter() - t_start
    k = max(1, min(per_epoch, len(losses) // 10 or 1))
    log(f"trained {total} iterations in {seconds:.0f} s: loss {np.mean(losses[:k]):.4f} (first {k}) -> "
        f"{np.mean(losses[-k:]):.4f} (last {k})")
    log(f"saved {out} ({len(sd)} upstream keys) and {aj}")
    if encoder_weights is None:
        warn("WARNING: this checkpoint's encoder is RANDOM (no --encoder-weights); see the warning above.")
    return FitResult(out, aj, sha256_file(out), total, total / per_epoch, batch, tiles.n_frames, len(tiles),
                     seconds, losses, enc_desc, encoder_weights is None, enc.missing, enc.unexpected)
