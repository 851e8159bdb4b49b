"""INP-Former architecture description: a frozen dataclass, JSON I/O and the upstream presets.

The JSON keys are the dataclass fields (what ``robis-edge fit`` writes as ``<out>.arch.json`` and
``export inpformer --arch`` reads). ``img_size`` is the tile side S the exported graph takes;
``map_size`` is the side M of the anomaly map it emits.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExportError


class ArchitectureError(ExportError):
    """A state_dict or configuration does not match the architecture it is meant for."""


@dataclass(frozen=True)
class InpFormerArch:
    """Everything that fixes the shape of an INP-Former graph (RoBiS flavour)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    img_size: int = 518
    patch_size: int = 14
    num_register_tokens: int = 4
    inp_num: int = 6
    target_layers: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 9)
    fuse_layer_encoder: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3), (4, 5, 6, 7))
    fuse_layer_decoder: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3), (4, 5, 6, 7))
    decoder_depth: int = 8
    mlp_ratio: float = 4.0
    map_size: int = 256
    gaussian_kernel: int = 5
    gaussian_sigma: float = 4.0

    def __post_init__(self) -> None:
        # Normalise JSON types (lists, ints for floats) so the dataclass stays hashable and comparable.
        try:
            for f in dataclasses.fields(self):
                v = getattr(self, f.name)
                if f.name == "target_layers":
                    v = tuple(_as_int(i) for i in v)
                elif f.name.startswith("fuse_layer_"):
                    v = tuple(tuple(_as_int(i) for i in g) for g in v)
                elif f.name in ("mlp_ratio", "gaussian_sigma"):
                    v = float(v)
                else:
                    v = _as_int(v)
                object.__setattr__(self, f.name, v)
        except (TypeError, ValueError) as e:
            raise ArchitectureError(f"invalid INP-Former architecture value: {e}") from None
        problems = self._problems()
        if problems:
            raise ArchitectureError("invalid INP-Former architecture:\n  " + "\n  ".join(problems))

    def _problems(self) -> list[str]:
        p: list[str] = []
        for name in ("embed_dim", "depth", "num_heads", "img_size", "patch_size", "inp_num",
                     "decoder_depth", "map_size", "gaussian_kernel"):
            if int(getattr(self, name)) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if p:
            return p
        if self.embed_dim % self.num_heads:
            p.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            p.append(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.num_register_tokens < 0:
            p.append("num_register_tokens must be >= 0")
        if self.gaussian_kernel % 2 == 0:
            p.append(f"gaussian_kernel must be odd, got {self.gaussian_kernel}")
        if self.gaussian_sigma <= 0 or self.mlp_ratio <= 0:
            p.append("gaussian_sigma and mlp_ratio must be > 0")
        t = self.target_layers
        if not t or list(t) != sorted(set(t)) or t[0] < 0 or t[-1] >= self.depth:
            p.append(f"target_layers must be strictly increasing within [0, depth={self.depth}), "
                     f"got {list(t)}")
        for name, n in (("fuse_layer_encoder", len(t)), ("fuse_layer_decoder", self.decoder_depth)):
            groups = getattr(self, name)
            if not groups or any(not g or min(g) < 0 or max(g) >= n for g in groups):
                p.append(f"{name} must be non-empty groups of indices in [0, {n}), got {groups}")
        if len(self.fuse_layer_encoder) != len(self.fuse_layer_decoder):
            p.append("fuse_layer_encoder and fuse_layer_decoder must have the same number of levels")
        return p

    # ---- derived quantities -------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def grid(self) -> int:
        """Token grid side at the input size S."""
        return self.img_size // self.patch_size

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def used_blocks(self) -> int:
        """Encoder blocks that run (0..max(target_layers)); the rest are ignored."""
        return self.target_layers[-1] + 1

    # ---- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InpFormerArch:
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        missing = [n for n in names if n not in d]
        if unknown or missing:
            msg = []
            if unknown:
                msg.append(f"unknown key(s): {', '.join(unknown)}")
            if missing:
                msg.append(f"missing key(s): {', '.join(missing)}")
            raise ArchitectureError("INP-Former architecture JSON: " + "; ".join(msg))
        return cls(**{n: d[n] for n in names})

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, path_or_text: str | Path) -> InpFormerArch:
        """Load from a JSON file path, or from JSON text (a string starting with '{')."""
        where = "architecture JSON"
        try:
            if isinstance(path_or_text, str) and path_or_text.lstrip().startswith("{"):
                data = json.loads(path_or_text)
            else:
                where = str(path_or_text)
                data = json.loads(Path(path_or_text).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ArchitectureError(f"{where}: cannot be read as an architecture JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ArchitectureError("INP-Former architecture JSON must be an object")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> InpFormerArch:
        return dataclasses.replace(self, **changes)


def _as_int(v: Any) -> int:
    if isinstance(v, bool) or int(v) != v:
        raise ValueError(f"{v!r} is not an integer")
    return int(v)


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


# Upstream (RoBiS models/robis.py::load_model, INP-Former INP_Former_*.py): small/base use target
# layers 2..9, large uses every second block 4..18 of its 24; the fuse groups index the 8 collected
# layers, so they are the same for all three.
PRESETS: dict[str, InpFormerArch] = {
    "dinov2reg_vit_small_14": InpFormerArch(embed_dim=384, depth=12, num_heads=6),
    "dinov2reg_vit_base_14": InpFormerArch(embed_dim=768, depth=12, num_heads=12),
    "dinov2reg_vit_large_14": InpFormerArch(
        embed_dim=1024, depth=24, num_heads=16, target_layers=(4, 6, 8, 10, 12, 14, 16, 18)),
}


def preset(name: str, **overrides: Any) -> InpFormerArch:
    """A named preset (518 input, 4 registers, 6 INPs, 8 decoder blocks, 256 map, Gaussian 5/σ4)."""
    try:
        base = PRESETS[name]
    except KeyError:
        raise ArchitectureError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
    return base.replace(**overrides) if overrides else base
