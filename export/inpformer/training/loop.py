"""``fit``: the training run of ``robis-edge fit``, its settings and its result."""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdk.bundle import sha256_file

from ..arch import InpFormerArch
from .dataset import TileSet
from .encoder_weights import EncoderLoad, default_pos_grid, load_encoder_weights, random_encoder_state_dict
from .losses import global_cosine_hm_adaptive
from .optim import StableAdamW
from .schedule import WarmCosineSchedule
from .trainable import TrainableINPFormer

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class FitOptions:
    """Training settings. The defaults are RoBiS': batch 16, StableAdamW lr 1e-3 warmed up over 100
    iterations then cosine to 1e-4, weight decay 1e-4, update clipping 0.1, gather-loss weight 0.2,
    hard-mining power 3, 1024-px tiles with 0.1 overlap; ``epochs`` is usually set by the caller."""

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
    """What ``fit`` wrote and how the run went."""

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
    """Where ``fit`` writes the architecture JSON of checkpoint ``out``: ``<out>.arch.json``."""
    return Path(str(out) + ".arch.json")


def _frozen_encoder(arch: InpFormerArch, encoder_weights: str | Path | None, seed: int, log: Log,
                    warn: Log) -> tuple[EncoderLoad, str]:
    """The encoder state to train with and its description; warns loudly when it is random."""
    if encoder_weights is None:
        size = {384: "s", 768: "b", 1024: "l", 1536: "g"}.get(arch.embed_dim)
        file = f"dinov2_vit{size}14_reg4_pretrain.pth" if size else \
            f"<DINOv2-reg .pth with embed_dim {arch.embed_dim}>"
        warn(RANDOM_ENCODER_WARNING.format(seed=seed, file=file))
        enc = EncoderLoad(random_encoder_state_dict(arch, seed), [], [], [], default_pos_grid(arch))
        return enc, f"random DINOv2 init (seed {seed})"
    enc = load_encoder_weights(encoder_weights, arch, seed)
    desc = f"{Path(encoder_weights).name} (sha256 {sha256_file(encoder_weights)[:16]}…)"
    log(f"encoder weights {encoder_weights}: {len(enc.loaded)} tensors loaded, "
        f"pos_embed grid {enc.pos_grid}")
    if enc.missing:
        warn(f"WARNING: {len(enc.missing)} encoder key(s) missing from the file keep their random "
             f"init: {', '.join(enc.missing[:20])}{' ...' if len(enc.missing) > 20 else ''}")
    if enc.unexpected:
        log(f"note: {len(enc.unexpected)} key(s) of the file ignored (strict=False): "
            f"{', '.join(enc.unexpected[:20])}{' ...' if len(enc.unexpected) > 20 else ''}")
    return enc, desc


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

    enc, enc_desc = _frozen_encoder(arch, encoder_weights, o.seed, log, warn)
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

    # ---- train --------------------------------------------------------------------------------
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
