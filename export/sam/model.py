"""SAM models for export: build segment-anything's ``Sam`` from a checkpoint (architecture inferred
from the state_dict's keys and shapes, loaded unchanged and strictly), and the two export wrappers.

The wrappers share the upstream modules' parameters (nothing is copied or re-trained) and only
re-express, with the same numbers, the operations that TensorRT handles badly:

* ``SamEncoderExport`` (image 1×3×1024×1024 → embeddings 1×256×64×64): the decomposed
  relative-position terms (upstream: two ``torch.einsum`` per block) become broadcast batched
  MatMuls against tables gathered once at construction for the fixed 64×64 token grid (and the
  14×14 windows); ``LayerNorm2d`` (upstream: mean / pow / sqrt, which ONNX keeps decomposed even
  at opset 17) becomes permute → ``layer_norm`` → permute, one ``LayerNormalization`` node; all
  window padding and cropping sizes are Python constants for 1024.
* ``SamBoxDecoderExport`` (embeddings + boxes B×4 → masks B×4×256×256 low-res logits, iou B×4):
  the box path of ``PromptEncoder`` (the two corners + 0.5, the random-Fourier encoding, the
  point embeddings 2 and 3 — equal to the official ONNX model's labels 2/3), the dense
  ``no_mask_embed`` (the ``has_mask_input = 0`` path), the dense positional encoding as a
  precomputed constant, ``MaskDecoder.predict_masks`` with ``expand`` instead of
  ``repeat_interleave`` (nanosam #16), all four mask tokens, no ``orig_im_size``, no upsampling.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ExportError
from .upstream import load_upstream

IMAGE_SIZE = 1024
EMBED_HW = 64
LOW_RES = 256
PROMPT_DIM = 256

# The three official checkpoints (segment_anything/build_sam.py).
OFFICIAL = {
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}


class SamCheckpointError(ExportError, ValueError):
    """A state_dict that is not a SAM checkpoint this exporter can build."""


@dataclass(frozen=True)
class SamArch:
    """Image-encoder architecture of a SAM checkpoint (the prompt encoder and mask decoder are the
    same for every official model)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    mlp_ratio: float = 4.0
    img_size: int = IMAGE_SIZE
    patch_size: int = 16

    @property
    def model_type(self) -> str:
        for name, cfg in OFFICIAL.items():
            encoder = (self.embed_dim, self.depth, self.num_heads, tuple(self.global_attn_indexes))
            fixed = (self.window_size, self.mlp_ratio, self.img_size, self.patch_size)
            if encoder == (cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["global_attn_indexes"]) \
                    and fixed == (14, 4.0, 1024, 16):
                return name
        return "custom"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["global_attn_indexes"] = list(self.global_attn_indexes)
        d["model_type"] = self.model_type
        return d


def official_arch(model_type: str) -> SamArch:
    if model_type not in OFFICIAL:
        raise SamCheckpointError(f"unknown SAM model type {model_type!r}; choose one of "
                                 f"{', '.join(OFFICIAL)}")
    cfg = OFFICIAL[model_type]
    return SamArch(cfg["embed_dim"], cfg["depth"], cfg["num_heads"], tuple(cfg["global_attn_indexes"]))


def infer_arch(state_dict: dict[str, Any]) -> SamArch:
    """Read the encoder architecture off the checkpoint's shapes.

    embed_dim and patch size from ``patch_embed.proj.weight``; depth from the block keys; head
    dim from ``rel_pos_h`` (so heads = embed_dim / head_dim: 12 for ViT-B, 16 for ViT-L/H);
    global blocks and the window from the ``rel_pos_h`` lengths (2·64−1 = 127 global, 2·14−1 = 27
    windowed); mlp ratio from ``mlp.lin1``; image size from ``pos_embed``."""
    pre = "image_encoder."
    try:
        w = state_dict[pre + "patch_embed.proj.weight"]
        pos = state_dict[pre + "pos_embed"]
    except KeyError as exc:
        raise SamCheckpointError(f"not a SAM checkpoint: key {exc.args[0]!r} is missing "
                                 "(expected the plain state_dict of sam_vit_*.pth)") from None
    embed_dim, patch = int(w.shape[0]), int(w.shape[-1])
    grid = int(pos.shape[1])
    blocks = sorted({int(k[len(pre) + 7:].split(".")[0]) for k in state_dict
                     if k.startswith(pre + "blocks.")})
    if not blocks or blocks != list(range(len(blocks))):
        raise SamCheckpointError("not a SAM checkpoint: image_encoder.blocks.* are missing or not "
                                 "numbered 0..N-1")
    depth = len(blocks)
    rel = [state_dict.get(f"{pre}blocks.{i}.attn.rel_pos_h") for i in range(depth)]
    if any(r is None for r in rel):
        raise SamCheckpointError("this SAM checkpoint has no relative position tables (use_rel_pos=False); "
                                 "only the official SAM encoders are supported")
    head_dim = int(rel[0].shape[1])
    if embed_dim % head_dim:
        raise SamCheckpointError(f"embed dim {embed_dim} is not a multiple of the head dim {head_dim}")
    lengths = [int(r.shape[0]) for r in rel]
    global_idx = tuple(i for i, n in enumerate(lengths) if n == 2 * grid - 1)
    windowed = {n for n in lengths if n != 2 * grid - 1}
    if len(windowed) > 1:
        raise SamCheckpointError(f"inconsistent window sizes in the checkpoint: rel_pos lengths "
                                 f"{sorted(windowed)}")
    window = (windowed.pop() + 1) // 2 if windowed else 0
    mlp = state_dict.get(f"{pre}blocks.0.mlp.lin1.weight")
    mlp_ratio = float(mlp.shape[0]) / embed_dim if mlp is not None else 4.0
    return SamArch(embed_dim, depth, embed_dim // head_dim, global_idx, window, mlp_ratio,
                   grid * patch, patch)


def build_sam(arch: SamArch) -> nn.Module:
    """An upstream ``Sam`` with random weights: the official builder for ViT-B/L/H, otherwise the
    same construction as ``build_sam._build_sam`` with this encoder."""
    up = load_upstream()
    if arch.model_type in OFFICIAL:
        return up.build_sam.sam_model_registry[arch.model_type]().eval()
    from functools import partial

    m = up.modeling
    grid = arch.img_size // arch.patch_size
    sam = m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=arch.depth, embed_dim=arch.embed_dim, img_size=arch.img_size, mlp_ratio=arch.mlp_ratio,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=arch.num_heads,
            patch_size=arch.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=tuple(arch.global_attn_indexes), window_size=arch.window_size,
            out_chans=PROMPT_DIM),
        prompt_encoder=m.PromptEncoder(embed_dim=PROMPT_DIM, image_embedding_size=(grid, grid),
                                       input_image_size=(arch.img_size, arch.img_size), mask_in_chans=16),
        mask_decoder=m.MaskDecoder(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=2048, num_heads=8),
            transformer_dim=PROMPT_DIM, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def read_state_dict(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's state_dict (plain ``torch.save(state_dict)``, as Meta publishes it)."""
    try:
        sd = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip / weights_only refusals: all mean "not a state_dict file"
        raise SamCheckpointError(f"{checkpoint}: torch.load(weights_only=True) cannot read it: "
                                 f"{exc}") from None
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict) \
            and not any(k.startswith("image_encoder.") for k in sd):
        raise SamCheckpointError(f"{checkpoint}: a training checkpoint with a 'model' entry, not the plain "
                                 "SAM state_dict (sam_vit_*.pth)")
    if not isinstance(sd, dict):
        raise SamCheckpointError(f"{checkpoint}: not a state_dict (got {type(sd).__name__})")
    return sd


def load_sam(checkpoint: str | Path, model_type: str | None = None) -> tuple[nn.Module, SamArch]:
    """Build SAM for ``checkpoint`` and load it unchanged (strict). ``model_type`` (vit_b/vit_l/
    vit_h), when given, must agree with what the keys say."""
    sd = read_state_dict(checkpoint)
    arch = infer_arch(sd)
    if model_type is not None and model_type != arch.model_type:
        expected = official_arch(model_type)
        raise SamCheckpointError(f"{checkpoint}: --model-type {model_type} expects embed dim "
                                 f"{expected.embed_dim} and depth {expected.depth}; the checkpoint has "
                                 f"{arch.embed_dim} and {arch.depth} ({arch.model_type})")
    sam = build_sam(arch)
    result = sam.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise SamCheckpointError(f"{checkpoint}: does not match SAM {arch.model_type}: missing "
                                 f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
    return sam.eval(), arch


# ----------------------------------------------------------------------------- encoder
def _layer_norm_2d(x: torch.Tensor, ln: nn.Module) -> torch.Tensor:
    """upstream ``LayerNorm2d`` (channel norm of N×C×H×W) as permute → LayerNorm → permute: one
    ``LayerNormalization`` node at opset 17 instead of ReduceMean/Sub/Pow/Sqrt/Div."""
    channels = int(ln.weight.detach().numel())  # a Python int: static in the traced graph
    y = F.layer_norm(x.permute(0, 2, 3, 1), (channels,), ln.weight, ln.bias, ln.eps)
    return y.permute(0, 3, 1, 2)


class _AttentionExport(nn.Module):
    """upstream ``image_encoder.Attention`` with its rel-pos einsums as MatMuls."""

    def __init__(self, attn: nn.Module, size: int, batch: int, get_rel_pos) -> None:
        super().__init__()
        self.attn = attn
        self.size = size
        self.batch = batch  # windows per image (1 for global attention): static for 1024
        self.heads = attn.num_heads
        # Tables gathered once (upstream gathers them with the same index arithmetic every call),
        # stored transposed for q @ R^T: (q_h, C, k_h) and (q_w, C, k_w).
        with torch.no_grad():
            rh = get_rel_pos(size, size, attn.rel_pos_h)
            rw = get_rel_pos(size, size, attn.rel_pos_w)
        self.register_buffer("rel_h_t", rh.detach().transpose(1, 2).contiguous().clone())
        self.register_buffer("rel_w_t", rw.detach().transpose(1, 2).contiguous().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, n, s, b = self.attn, self.heads, self.size, self.batch
        qkv = a.qkv(x).reshape(b, s * s, 3, n, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * n, s * s, -1).unbind(0)
        attn = (q * a.scale) @ k.transpose(-2, -1)
        r_q = q.reshape(b * n, s, s, -1)  # (B', h, w, C)
        # einsum("bhwc,hkc->bhwk"): batch dims (B', h) broadcast against (h,) → (B', h, w, k)
        rel_h = torch.matmul(r_q, self.rel_h_t)
        # einsum("bhwc,wkc->bhwk"): move w to the batch side, then back
        rel_w = torch.matmul(r_q.transpose(1, 2), self.rel_w_t).transpose(1, 2)
        attn = (attn.view(b * n, s, s, s, s) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :])
        attn = attn.view(b * n, s * s, s * s).softmax(dim=-1)
        out = (attn @ v).view(b, n, s, s, -1).permute(0, 2, 3, 1, 4).reshape(b, s, s, -1)
        return a.proj(out)


class _BlockExport(nn.Module):
    def __init__(self, block: nn.Module, grid: int, get_rel_pos) -> None:
        super().__init__()
        self.block = block
        self.grid = grid
        self.window = win = int(block.window_size)
        self.padded = grid + (win - grid % win) % win if win else grid
        windows = (self.padded // win) ** 2 if win else 1
        self.attn = _AttentionExport(block.attn, win or grid, windows, get_rel_pos)
        self.channels = int(block.norm1.weight.detach().numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blk, g, win, gp, c = self.block, self.grid, self.window, self.padded, self.channels
        shortcut = x
        x = blk.norm1(x)
        if win > 0:
            pad = gp - g
            if pad:  # window_partition: zero-pad bottom/right 64 → 70 (pads folded after export)
                x = F.pad(x, (0, 0, 0, pad, 0, pad))
            nw = gp // win
            x = x.view(1, nw, win, nw, win, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, win, win, c)
            x = self.attn(x)
            x = x.view(1, nw, nw, win, win, c).permute(0, 1, 3, 2, 4, 5).reshape(1, gp, gp, c)
            if pad:
                x = x[:, :g, :g, :]
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + blk.mlp(blk.norm2(x))


class SamEncoderExport(nn.Module):
    """image (1, 3, 1024, 1024), normalised and padded → embeddings (1, 256, 64, 64)."""

    def __init__(self, image_encoder: nn.Module) -> None:
        super().__init__()
        from importlib import import_module

        get_rel_pos = import_module("segment_anything.modeling.image_encoder").get_rel_pos
        self.enc = image_encoder
        self.grid = image_encoder.img_size // image_encoder.patch_embed.proj.stride[0]
        self.blocks = nn.ModuleList(_BlockExport(b, self.grid, get_rel_pos) for b in image_encoder.blocks)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        e = self.enc
        x = e.patch_embed(image)
        if e.pos_embed is not None:
            x = x + e.pos_embed
        for blk in self.blocks:
            x = blk(x)
        conv1, ln1, conv2, ln2 = e.neck
        x = _layer_norm_2d(conv1(x.permute(0, 3, 1, 2)), ln1)
        return _layer_norm_2d(conv2(x), ln2)


# ----------------------------------------------------------------------------- decoder
class SamBoxDecoderExport(nn.Module):
    """embeddings (1, 256, 64, 64) + boxes (B, 4) x0,y0,x1,y1 in the 1024 frame →
    masks (B, 4, 256, 256) low-res logits of the four mask tokens, iou (B, 4)."""

    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        pe, md = sam.prompt_encoder, sam.mask_decoder
        self.prompt_encoder, self.mask_decoder = pe, md
        h, w = pe.input_image_size
        self.register_buffer("coord_div", torch.tensor([float(w), float(h)]))
        # static sizes (Python ints: no Shape ops in the graph for them)
        self.dim = int(md.transformer_dim)
        self.grid_hw = tuple(int(v) for v in pe.image_embedding_size)
        with torch.no_grad():
            # PromptEncoder._embed_boxes adds point_embeddings[2] to the top-left corner and [3]
            # to the bottom-right one (the official ONNX model's labels 2 and 3).
            corners = torch.cat([pe.point_embeddings[2].weight, pe.point_embeddings[3].weight], 0)
            dense_pe = pe.get_dense_pe()  # constant: the encoding of the grid-cell centres
            no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        self.register_buffer("corner_embed", corners[None].detach().clone())  # (1, 2, 256)
        # (1, 64·64, 256): the dense PE already flattened as TwoWayTransformer uses it
        key_pe = dense_pe.detach().flatten(2).permute(0, 2, 1).contiguous()
        self.register_buffer("key_pe", key_pe)
        self.register_buffer("no_mask", no_mask.detach().clone())  # (1, 256, 1, 1)
        tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], 0)[None]
        self.register_buffer("output_tokens", tokens.detach().clone())  # (1, 5, 256)

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        # PositionEmbeddingRandom._pe_encoding, same order of operations
        g = self.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
        coords = 2 * coords - 1
        coords = coords @ g
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, embeddings: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        md = self.mask_decoder
        c, (h, w) = self.dim, self.grid_hw
        nt = md.num_mask_tokens
        # PromptEncoder._embed_boxes: +0.5 (pixel centre), /input size, Fourier features, corner embeds
        coords = (boxes + 0.5).reshape(-1, 2, 2) / self.coord_div
        sparse = self._pe_encoding(coords) + self.corner_embed  # (B, 2, c)
        n = sparse.shape[0]
        # MaskDecoder.predict_masks: tokens = [iou, 4 mask tokens, 2 corners]; the image (plus the
        # no-mask dense embedding) and its positional encoding are shared by all B prompts: flatten
        # once, then broadcast (expand) instead of repeat_interleave.
        tokens = torch.cat([self.output_tokens.expand(n, 1 + nt, c), sparse], dim=1)  # (B, 7, c)
        keys = (embeddings + self.no_mask).reshape(1, c, h * w).permute(0, 2, 1).expand(n, h * w, c)
        hs, keys = self._two_way(keys, self.key_pe, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1:1 + nt, :]
        src = keys.transpose(1, 2).reshape(-1, c, h, w)
        up1, ln, act1, up2, act2 = md.output_upscaling
        up = act2(up2(act1(_layer_norm_2d(up1(src), ln))))
        hyper = torch.stack([mlp(mask_tokens_out[:, i, :])
                             for i, mlp in enumerate(md.output_hypernetworks_mlps)], dim=1)
        uc, uh, uw = c // 8, 4 * h, 4 * w
        masks = (hyper @ up.reshape(-1, uc, uh * uw)).reshape(-1, nt, uh, uw)
        iou = md.iou_prediction_head(iou_token_out)
        return masks, iou

    # TwoWayTransformer / TwoWayAttentionBlock / Attention forwards, same operations in the same
    # order, with the token counts and head sizes as Python ints (reshape(-1, ...) on the box axis):
    # no Shape/Gather chains for TensorRT to resolve.
    @staticmethod
    def _attention(a: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        nq, nk = int(q.shape[1]), int(k.shape[1])  # static token counts (7 or 4096)
        heads = int(a.num_heads)
        ch = int(a.internal_dim) // heads
        q = a.q_proj(q).reshape(-1, nq, heads, ch).transpose(1, 2)
        k = a.k_proj(k).reshape(-1, nk, heads, ch).transpose(1, 2)
        v = a.v_proj(v).reshape(-1, nk, heads, ch).transpose(1, 2)
        attn = q @ k.permute(0, 1, 3, 2)
        attn = attn / math.sqrt(ch)
        attn = torch.softmax(attn, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(-1, nq, heads * ch)
        return a.out_proj(out)

    def _two_way(self, keys: torch.Tensor, key_pe: torch.Tensor, point_embedding: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.mask_decoder.transformer
        att = self._attention
        queries = point_embedding
        for layer in t.layers:
            if layer.skip_first_layer_pe:
                queries = att(layer.self_attn, queries, queries, queries)
            else:
                q = queries + point_embedding
                queries = queries + att(layer.self_attn, q, q, queries)
            queries = layer.norm1(queries)
            q = queries + point_embedding
            k = keys + key_pe
            queries = layer.norm2(queries + att(layer.cross_attn_token_to_image, q, k, keys))
            queries = layer.norm3(queries + layer.mlp(queries))
            q = queries + point_embedding
            k = keys + key_pe
            keys = layer.norm4(keys + att(layer.cross_attn_image_to_token, k, q, queries))
        q = queries + point_embedding
        k = keys + key_pe
        queries = t.norm_final_attn(queries + att(t.final_attn_token_to_image, q, k, keys))
        return queries, keys


def reference_decoder(sam: nn.Module, embeddings: torch.Tensor, boxes: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The upstream path the export must equal: ``PromptEncoder(points=None, boxes, masks=None)``
    then ``MaskDecoder.predict_masks`` (all four tokens, before ``forward``'s slicing)."""
    sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
    return sam.mask_decoder.predict_masks(image_embeddings=embeddings,
                                          image_pe=sam.prompt_encoder.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)


def random_sam(arch: SamArch | str = "vit_b", seed: int = 0) -> nn.Module:
    """A SAM with deterministic random weights (tests and benchmarks: no real checkpoint here).

    The upstream initialisation with ``seed``, then the tensors it leaves constant made random
    too, so that every path of the export is exercised: relative-position tables and the
    absolute position embedding (zeros upstream) ~ N(0, 0.5²) and N(0, 0.1²), every norm's
    weight 1 + N(0, 0.1²) and bias N(0, 0.1²)."""
    if isinstance(arch, str):
        arch = official_arch(arch)
    with torch.random.fork_rng(devices=[]):  # leaves the caller's global RNG state alone
        torch.manual_seed(seed)
        sam = build_sam(arch)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in sam.named_parameters():
            if "rel_pos" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif name.endswith("pos_embed"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        for module in sam.modules():
            if isinstance(module, nn.LayerNorm) or type(module).__name__ == "LayerNorm2d":
                module.weight.copy_(1.0 + torch.randn(module.weight.shape, generator=gen) * 0.1)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
    return sam.eval()
