"""Training INP-Former the way RoBiS does it, for ``robis-edge fit``: the settings and steps below
are RoBiS' own (docs/upstream-robis.md, "Training", lists them next to the upstream values).

* Frozen encoder (:mod:`.encoder_weights`): DINOv2-reg weights loaded from a ``.pth`` (keys
  without ``encoder.``, loaded with upstream's ``strict=False`` semantics and a report of what was
  missing/unexpected), or, without one, DINOv2's own seeded random initialisation (LayerScale
  1e-8, as RoBiS builds the encoder).
* Trainable (:mod:`.trainable`): bottleneck, INP extractor (aggregation), decoder, prototype
  tokens; Linear weights truncated normal std 0.01 in [-0.03, 0.03], biases 0, LayerNorm 1/0,
  prototypes N(0, 1), ``learn_scale`` 1 (its constructor value; upstream's init loop does not
  touch it).
* Data (:mod:`.dataset`, :mod:`.augment`): Swin-Cropping tiles (``sdk.geometry.TilingPlan``, zero
  padding included) of defect-free frames, resized to S with the SDK's Pillow-exact resize, then
  on half of the samples the exposure + noise augmentation (``2^λ``, λ~U(-0.2, 0.2), clip,
  N(0, 15) per pixel and channel, clip, uint8 truncation), then the SDK's ToTensor + Normalize
  lookup tables.
* Loss (:mod:`.losses`): ``global_cosine_hm_adaptive(en, de, y=3) + 0.2 * gather_loss``.
* Optimiser (:mod:`.optim`, :mod:`.schedule`): :class:`StableAdamW` (AdamW with update clipping,
  amsgrad, eps 1e-10, weight decay 1e-4), gradient-norm clipping 0.1, :class:`WarmCosineSchedule`
  (linear warm-up from 0, then cosine to the final value).
* Output (:mod:`.loop`): ``torch.save(state_dict)`` with the full upstream key set (every encoder
  block, ``encoder.norm``, ``encoder.mask_token``, the stored position-embedding grid...), so
  upstream's strict loader and ``robis-edge export`` accept it; the architecture JSON beside it.

The model classes are those of :mod:`export.inpformer.model`; :class:`TrainableINPFormer` runs
their submodules in the order of upstream ``INP_Former.forward`` and additionally returns the gather
loss (a test checks that its features equal ``INPFormer.levels``).
"""

from .augment import adjust_exposure, random_exposure
from .dataset import TileSet
from .encoder_weights import (
    EncoderLoad,
    default_pos_grid,
    encoder_key_shapes,
    load_encoder_weights,
    random_encoder_state_dict,
)
from .loop import RANDOM_ENCODER_WARNING, FitOptions, FitResult, arch_json_path, fit
from .losses import gather_loss, global_cosine_hm_adaptive
from .optim import StableAdamW
from .schedule import WarmCosineSchedule
from .trainable import TrainableINPFormer

__all__ = [
    "RANDOM_ENCODER_WARNING", "EncoderLoad", "FitOptions", "FitResult", "StableAdamW", "TileSet",
    "TrainableINPFormer", "WarmCosineSchedule", "adjust_exposure", "arch_json_path", "default_pos_grid",
    "encoder_key_shapes", "fit", "gather_loss", "global_cosine_hm_adaptive", "load_encoder_weights",
    "random_encoder_state_dict", "random_exposure",
]
