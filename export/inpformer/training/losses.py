"""The training losses: RoBiS' hard-mining global cosine loss and INP-Former's gather loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model import COS_EPS, l2_normalize  # COS_EPS: torch.nn.CosineSimilarity's default, as upstream


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
    dist = 1.0 - l2_normalize(tokens, eps) @ l2_normalize(prototypes, eps).transpose(-2, -1)
    return dist.min(dim=-1).values.mean()
