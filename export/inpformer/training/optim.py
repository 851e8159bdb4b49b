"""StableAdamW: the optimiser RoBiS trains INP-Former with (AdamW with update clipping)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


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
