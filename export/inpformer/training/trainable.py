"""The model as training sees it: :class:`~export.inpformer.model.INPFormer` with a frozen encoder,
the initialisation of its trainable parts, and the full upstream checkpoint it saves."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..arch import ArchitectureError, InpFormerArch
from ..checkpoint import check_state_dict, ignored_keys, to_model_state_dict, upstream_key_shapes
from ..model import INPFormer
from .encoder_weights import encoder_key_shapes
from .losses import gather_loss


class TrainableINPFormer(nn.Module):
    """The inference :class:`INPFormer` plus what training needs: the upstream-only encoder
    tensors (unused blocks, ``encoder.norm``, ``mask_token``, the stored position-embedding grid)
    kept frozen for the checkpoint, a frozen encoder, RoBiS' initialisation of the trainable parts
    and a forward that returns ``(en, de, gather_loss)`` like upstream ``INP_Former.forward``."""

    def __init__(self, arch: InpFormerArch, encoder_state: Mapping[str, Tensor]) -> None:
        super().__init__()
        self.arch = arch
        self.net = INPFormer(arch)
        pe = encoder_state["encoder.pos_embed"]
        self.pos_grid = math.isqrt(pe.shape[1] - 1)
        expected = encoder_key_shapes(arch, self.pos_grid)
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
        """RoBiS' initialisation of the trainable parts: Linear weights truncated normal, std 0.01
        in [-0.03, 0.03], biases 0; LayerNorm weight 1, bias 0; prototype tokens N(0, 1);
        ``learn_scale`` keeps its constructor value 1 (upstream's init loop does not touch it)."""
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
        """The full upstream INP_Former state_dict (keys and order of :func:`upstream_key_shapes`),
        fp32, CPU."""
        net_sd = self.net.state_dict()
        out: OrderedDict[str, Tensor] = OrderedDict()
        for k in upstream_key_shapes(self.arch, self.pos_grid):
            v = self.upstream_only[k] if k in self.upstream_only else net_sd[k]
            out[k] = v.detach().float().cpu().clone().contiguous()
        check_state_dict(out, self.arch)
        return out
