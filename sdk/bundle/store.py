"""The bundle on disk: a directory with ``bundle.json`` and model files (docs/bundle.md).

Loading validates every section (``schema.validate``) and the sha256 of every listed file.
Unknown keys are kept as they are on save, so tools of other versions can add their own sections.
Readers use the typed views below; writers the ``set_*`` methods; nothing else touches the JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import BundleError
from ..postprocess.binarize import BinarizeConfig
from ..postprocess.stats import Calibration
from . import schema
from .schema import (
    FORMAT,
    EngineEntry,
    ModelSpec,
    MorphologySpec,
    PreprocessSpec,
    ReferenceSpec,
    SamRefineSpec,
    TilingSpec,
    TttRefineSpec,
    VerdictSpec,
)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Bundle:
    """A loaded bundle: typed, validated views of ``bundle.json`` and its files."""

    def __init__(self, root: str | os.PathLike, raw: dict[str, Any]) -> None:
        self.root = Path(root)
        self._raw = raw

    def __repr__(self) -> str:
        return f"Bundle({str(self.root)!r}, name={self.name!r})"

    @property
    def where(self) -> str:
        return str(self.root / "bundle.json")

    # -- loading and saving -------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True) -> Bundle:
        root = Path(path)
        if root.is_file() and root.name == "bundle.json":
            root = root.parent
        meta = root / "bundle.json"
        if not meta.is_file():
            raise BundleError(f"{root}: no bundle.json here; a bundle is the directory made by "
                              "`robis-edge export`")
        try:
            raw = json.loads(meta.read_text(encoding="utf-8-sig"))  # a BOM from a Windows editor is fine
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise BundleError(f"{meta}: cannot be read as JSON ({exc})") from exc
        schema.validate(raw, str(meta))
        bundle = cls(root, raw)
        if verify:
            bundle.verify_files()
        return bundle

    def save(self) -> None:
        """Validate, then write ``bundle.json`` atomically (temporary file + rename)."""
        schema.validate(self._raw, self.where)
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".bundle.", suffix=".json", dir=self.root)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._raw, f, indent=2)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a bundle is meant to be copied around
        os.replace(tmp, self.root / "bundle.json")

    def to_json(self) -> dict[str, Any]:
        """A deep copy of the whole ``bundle.json`` object (for reports and tools)."""
        return json.loads(json.dumps(self._raw))

    def verify_files(self) -> None:
        """Check that every model file is listed, and every listed file exists with its sha256."""
        files = self.files
        for rel in schema.model_files(self._raw, self.where):
            if rel not in files:
                raise BundleError(f"{self.root}: {rel!r} is not listed under 'files' with its sha256")
        for rel, digest in files.items():
            p = self.resolve(rel)
            if not p.is_file():
                raise BundleError(f"{self.root}: listed file {rel!r} is missing")
            actual = sha256_file(p)
            if actual != digest:
                raise BundleError(f"{self.root}: {rel!r} is corrupted or was changed after export "
                                  f"(sha256 {actual[:12]}… != recorded {str(digest)[:12]}…)")

    def resolve(self, rel: str) -> Path:
        """Absolute path of a bundle-relative file; refuses paths that leave the bundle."""
        p = (self.root / rel).resolve()
        if self.root.resolve() not in p.parents:
            raise BundleError(f"{self.root}: file path {rel!r} points outside the bundle")
        return p

    # -- files ----------------------------------------------------------------------------
    @property
    def files(self) -> dict[str, str]:
        """Relative path → sha256 of every file the bundle lists."""
        return schema.read_files(self._raw, self.where)

    def add_file(self, rel: str) -> str:
        """Record the sha256 of a file already placed inside the bundle; returns it."""
        digest = sha256_file(self.resolve(rel))
        self._raw.setdefault("files", {})[rel] = digest
        return digest

    def drop_file(self, rel: str, delete: bool = False) -> None:
        """Forget a listed file (and delete it from disk when ``delete``)."""
        self._raw.get("files", {}).pop(rel, None)
        if delete:
            p = self.resolve(rel)
            if p.is_file():
                p.unlink()

    # -- typed views ------------------------------------------------------------------
    @property
    def name(self) -> str:
        return schema.read_name(self._raw, self.where, self.root.name)

    @property
    def model(self) -> ModelSpec:
        return schema.read_model(self._raw, self.where)

    @property
    def model_path(self) -> Path:
        return self.resolve(self.model.file)

    @property
    def model_sha256(self) -> str:
        return self.files.get(self.model.file, "")

    @property
    def map_size(self) -> int:
        return self.model.map_size

    @property
    def preprocess(self) -> PreprocessSpec:
        return schema.read_preprocess(self._raw, self.where)

    @property
    def tiling_spec(self) -> TilingSpec:
        return schema.read_tiling(self._raw, self.where)

    @property
    def tiling(self) -> tuple[int | None, float]:
        """(window or None, overlap)."""
        t = self.tiling_spec
        return t.window, t.overlap

    @property
    def frame_hw(self) -> tuple[int, int] | None:
        """The camera frame size (height, width) the bundle was made for (``tiling.frame_hw``), if
        recorded: TensorRT profiles, selftest and the streaming demo size their frames with it."""
        return self.tiling_spec.frame_hw

    @property
    def binarize_config(self) -> BinarizeConfig:
        return schema.read_postprocess_binarize(self._raw, self.where)

    @property
    def morphology(self) -> MorphologySpec:
        return schema.read_morphology(self._raw, self.where)

    @property
    def map_scale(self) -> float | None:
        return schema.read_map_scale(self._raw, self.where)

    @property
    def verdict(self) -> VerdictSpec:
        return schema.read_verdict(self._raw, self.where, self.frame_hw)

    @property
    def calibration(self) -> Calibration | None:
        c = self._raw.get("calibration")
        return None if c is None else schema.read_calibration(c, self.where)

    @property
    def sam(self) -> SamRefineSpec | None:
        """``refine.sam`` (SAM-Finer), or None."""
        return schema.read_sam(self._raw, self.where)

    @property
    def ttt(self) -> TttRefineSpec | None:
        """``refine.ttt`` (TTT4AS), or None."""
        return schema.read_ttt(self._raw, self.where)

    @property
    def reference(self) -> ReferenceSpec | None:
        """The parity gate's reference tiles, or None."""
        return schema.read_reference(self._raw, self.where)

    @property
    def engines(self) -> list[EngineEntry]:
        return schema.read_engines(self._raw, self.where)

    @property
    def provenance(self) -> dict[str, Any]:
        return schema.read_provenance(self._raw, self.where)

    # -- writers (each leaves the bundle valid; ``save`` writes it) --------------------------
    def set_calibration(self, cal: Calibration) -> None:
        self._raw["calibration"] = cal.to_json()

    def set_frame_hw(self, frame_hw: tuple[int, int]) -> None:
        self._raw.setdefault("tiling", {})["frame_hw"] = [int(frame_hw[0]), int(frame_hw[1])]

    def set_verdict(self, **fields: Any) -> None:
        """Change verdict fields (``min_area_px``, ``score_threshold``, ``roi``)."""
        unknown = set(fields) - {"min_area_px", "score_threshold", "roi"}
        if unknown:
            raise BundleError(f"unknown verdict field(s) {sorted(unknown)}")
        section = self._raw.setdefault("verdict", {})
        section.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()})
        schema.read_verdict(self._raw, self.where, self.frame_hw)

    def update_provenance(self, **items: Any) -> None:
        self._raw.setdefault("provenance", {}).update(items)

    def set_section(self, key: str, value: Any) -> None:
        """Replace a top-level section (``reference``, ``engines``) and check it."""
        if key not in ("reference", "engines"):
            raise BundleError(f"set_section: {key!r} has its own writer or is not a section")
        old = self._raw.get(key)
        self._raw[key] = value
        try:
            schema.validate(self._raw, self.where)
        except BundleError:
            self._raw[key] = old
            raise

    def set_sam(self, section: dict[str, Any]) -> None:
        """Replace ``refine.sam`` (written by ``robis-edge export sam``) and check it."""
        refine = self._raw.setdefault("refine", {})
        old = refine.get("sam")
        refine["sam"] = section
        try:
            schema.read_sam(self._raw, self.where)
        except BundleError:
            refine["sam"] = old
            raise

    def set_ttt(self, section: dict[str, Any]) -> None:
        """Replace ``refine.ttt`` (TTT4AS parameters) and check it; the model must have features."""
        if self.model.features is None:
            raise BundleError(f"{self.root}: refine.ttt needs an anomaly model with a 'features' output "
                              "(`robis-edge export inpformer --features`)")
        refine = self._raw.setdefault("refine", {})
        old = refine.get("ttt")
        refine["ttt"] = section
        try:
            schema.read_ttt(self._raw, self.where)
        except BundleError:
            refine["ttt"] = old
            raise

    def set_model_fields(self, **fields: Any) -> None:
        """Set optional ``anomaly_model`` fields (``max_batch``, ``features``) and check them."""
        unknown = set(fields) - {"max_batch", "features"}
        if unknown:
            raise BundleError(f"unknown anomaly_model field(s) {sorted(unknown)}")
        section = self._raw["anomaly_model"]
        old = dict(section)
        section.update(fields)
        try:
            schema.read_model(self._raw, self.where)
        except BundleError:
            section.clear()
            section.update(old)
            raise

    def sam_section(self) -> dict[str, Any]:
        """A copy of the raw ``refine.sam`` object (empty when absent), for rewriting it."""
        sam = self._raw.get("refine", {}).get("sam")
        return json.loads(json.dumps(sam)) if isinstance(sam, dict) else {}


def create_bundle(root: str | os.PathLike, name: str, model_file: str, map_size: int, *,
                  preprocess: PreprocessSpec | None = None, window: int | None = 1024,
                  overlap: float = 0.1, binarize: BinarizeConfig | None = None,
                  verdict: VerdictSpec | None = None, morphology: MorphologySpec | None = None,
                  provenance: dict[str, Any] | None = None) -> Bundle:
    """Write a new bundle around a model file already copied into ``root``; returns it loaded."""
    root = Path(root)
    pre = preprocess or PreprocessSpec()
    ver = verdict or VerdictSpec()
    mor = morphology or MorphologySpec()
    raw: dict[str, Any] = {
        "format": FORMAT,
        "name": name,
        "anomaly_model": {"file": model_file, "map_size": int(map_size),
                          "input": "image", "output": "anomaly_map"},
        "preprocess": {"size": pre.size, "mean": list(pre.mean), "std": list(pre.std),
                       "channel_order": pre.channel_order, "resize": pre.resize},
        "tiling": {"window": window, "overlap": overlap},
        "postprocess": {"binarize": (binarize or BinarizeConfig()).to_json(),
                        "morphology": {"closing": mor.closing, "fill_holes": mor.fill_holes},
                        "map_scale": None},
        "verdict": {"min_area_px": ver.min_area_px, "score_threshold": ver.score_threshold,
                    "roi": None if ver.roi is None else list(ver.roi)},
        "files": {},
        "provenance": provenance or {},
    }
    bundle = Bundle(root, raw)
    bundle.add_file(model_file)
    bundle.save()
    return bundle
