"""The bundle: a directory with ``bundle.json`` and model files (docs/bundle.md).

Reading verifies the format version and the sha256 of every listed file. Unknown keys are
kept as they are on save, so tools of other versions can add their own sections.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BundleError
from .postprocess.binarize import BinarizeConfig
from .postprocess.stats import Calibration

FORMAT = "robis-bundle/1"
FORMAT_MAJOR = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_format(fmt: Any, where: Path) -> None:
    if not isinstance(fmt, str) or not fmt.startswith("robis-bundle/"):
        raise BundleError(f"{where}: 'format' is {fmt!r}, not a robis bundle ('{FORMAT}')")
    version = fmt.split("/", 1)[1]
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise BundleError(f"{where}: unreadable bundle format version {fmt!r}") from None
    if major != FORMAT_MAJOR:
        raise BundleError(f"{where}: bundle format {fmt!r} is not supported by this robis-edge "
                          f"(reads {FORMAT}); re-export the bundle with a matching robis-edge version")


@dataclass(frozen=True)
class PreprocessSpec:
    """Training-time preprocessing of a tile (``bundle.json`` ``preprocess``)."""

    size: int = 518
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    resize: str = "pil_bilinear_antialias"


@dataclass(frozen=True)
class VerdictSpec:
    """Pass/fail rule: fail on a region of ``min_area_px`` inside the ROI, or a high image score."""

    min_area_px: int = 0
    score_threshold: float | None = None
    roi: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in frame pixels, exclusive max


@dataclass(frozen=True)
class MorphologySpec:
    """Optional clean-up of the coarse mask (hybrid INP-Former/CPR framework); off by default."""

    closing: int = 0  # elliptical kernel size in mask pixels; 0 = off
    fill_holes: bool = False


@dataclass
class Bundle:
    """A loaded bundle. ``raw`` keeps the whole JSON; typed views are derived from it."""

    root: Path
    raw: dict[str, Any] = field(repr=False)

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
            raw = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{meta}: cannot be read as JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise BundleError(f"{meta}: top level must be a JSON object")
        _check_format(raw.get("format"), meta)
        bundle = cls(root, raw)
        bundle._validate()
        if verify:
            bundle.verify_files()
        return bundle

    def save(self) -> None:
        """Write ``bundle.json`` atomically (temporary file + rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".bundle.", suffix=".json", dir=self.root)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.raw, f, indent=2)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a bundle is meant to be shared
        os.replace(tmp, self.root / "bundle.json")

    def _validate(self) -> None:
        where = self.root / "bundle.json"
        model = self.raw.get("anomaly_model")
        if not isinstance(model, dict) or not isinstance(model.get("file"), str):
            raise BundleError(f"{where}: 'anomaly_model.file' is missing")
        if not isinstance(model.get("map_size"), int) or model["map_size"] <= 0:
            raise BundleError(f"{where}: 'anomaly_model.map_size' must be a positive integer")
        pre = self.raw.get("preprocess", {})
        if pre.get("channel_order", "RGB") not in ("RGB", "BGR"):
            raise BundleError(f"{where}: preprocess.channel_order must be 'RGB' or 'BGR'")
        for key in ("mean", "std"):
            if key in pre and (not isinstance(pre[key], list) or len(pre[key]) != 3):
                raise BundleError(f"{where}: preprocess.{key} must be a list of 3 numbers")
        if not isinstance(self.raw.get("files", {}), dict):
            raise BundleError(f"{where}: 'files' must map relative paths to sha256")
        try:
            self.binarize_config  # noqa: B018 - parse now so that errors surface at load time
            self.tiling  # noqa: B018
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{where}: invalid post-processing or tiling settings: {exc}") from exc

    def verify_files(self) -> None:
        """Check that every file listed under ``files`` exists and has its recorded sha256."""
        files = self.raw.get("files", {})
        if self.raw["anomaly_model"]["file"] not in files:
            raise BundleError(f"{self.root}: the anomaly model file is not listed under 'files'")
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

    def add_file(self, rel: str) -> str:
        """Record the sha256 of a file already placed inside the bundle; returns it."""
        digest = sha256_file(self.resolve(rel))
        self.raw.setdefault("files", {})[rel] = digest
        return digest

    # -- typed views ------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.raw.get("name", self.root.name))

    @property
    def model_path(self) -> Path:
        return self.resolve(self.raw["anomaly_model"]["file"])

    @property
    def model_sha256(self) -> str:
        return str(self.raw.get("files", {}).get(self.raw["anomaly_model"]["file"], ""))

    @property
    def map_size(self) -> int:
        return int(self.raw["anomaly_model"]["map_size"])

    @property
    def preprocess(self) -> PreprocessSpec:
        p = self.raw.get("preprocess", {})
        return PreprocessSpec(int(p.get("size", 518)), tuple(p.get("mean", IMAGENET_MEAN)),
                              tuple(p.get("std", IMAGENET_STD)), p.get("channel_order", "RGB"),
                              p.get("resize", "pil_bilinear_antialias"))

    @property
    def tiling(self) -> tuple[int | None, float]:
        t = self.raw.get("tiling", {})
        window = t.get("window", 1024)
        return (None if window is None else int(window)), float(t.get("overlap", 0.1))

    @property
    def frame_hw(self) -> tuple[int, int] | None:
        """The camera frame size (height, width) the bundle was made for (``tiling.frame_hw``), if
        recorded: TensorRT profiles, selftest and the streaming demo size their frames with it."""
        hw = self.raw.get("tiling", {}).get("frame_hw")
        return None if hw is None else (int(hw[0]), int(hw[1]))

    @property
    def postprocess(self) -> dict[str, Any]:
        return self.raw.get("postprocess", {})

    @property
    def binarize_config(self) -> BinarizeConfig:
        return BinarizeConfig.from_json(self.postprocess.get("binarize", {}))

    @property
    def morphology(self) -> MorphologySpec:
        m = self.postprocess.get("morphology", {})
        return MorphologySpec(int(m.get("closing", 0)), bool(m.get("fill_holes", False)))

    @property
    def map_scale(self) -> float | None:
        s = self.postprocess.get("map_scale")
        return None if s is None else float(s)

    @property
    def verdict(self) -> VerdictSpec:
        v = self.raw.get("verdict", {})
        roi = v.get("roi")
        thr = v.get("score_threshold")
        return VerdictSpec(int(v.get("min_area_px", 0)), None if thr is None else float(thr),
                           None if roi is None else tuple(int(x) for x in roi))

    @property
    def calibration(self) -> Calibration | None:
        c = self.raw.get("calibration")
        return None if c is None else Calibration.from_json(c)

    def set_calibration(self, cal: Calibration) -> None:
        self.raw["calibration"] = cal.to_json()


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
    bundle._validate()
    bundle.save()
    return bundle
