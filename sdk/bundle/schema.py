"""The whole ``bundle.json`` schema (docs/bundle.md): typed sections, read and validated in one place.

Every reader of a bundle goes through these functions; nothing else indexes the raw JSON. Each
function takes the raw JSON object and the file's path for messages, and returns frozen
dataclasses, or raises ``BundleError`` naming the key and the value it expects. Unknown keys are
ignored here and kept by ``Bundle.save``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BundleError
from ..postprocess.binarize import BinarizeConfig
from ..postprocess.mebin import MEBinParams
from ..postprocess.stats import BinStats, Calibration, NormStats
from ..vocabulary import (
    BINARIZE_METHODS,
    BINARIZE_PRECISIONS,
    BUILD_TARGETS,
    CHANNEL_ORDERS,
    CPU_ISAS,
    MODEL_ROLES,
    OPENVINO_DEVICES,
    OPENVINO_PRECISIONS,
    RESIZE_METHODS,
    SAM_BUNDLE_MODES,
    SAM_CHANNEL_ORDERS,
    TTT_CLASS_WEIGHTS,
    TTT_NORMALIZE,
    TTT_VERDICT_FROM,
)
from .fields import Section

FORMAT = "robis-bundle/1"
FORMAT_MAJOR = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REFERENCE_COLORS = ("gray", "rgb")
_SHA256 = re.compile(r"[0-9a-f]{64}")
MIN_WINDOW = 16  # tiling.window in frame pixels; smaller windows cut a frame into absurdly many tiles
MAX_OVERLAP = 0.9  # tiling.overlap; 0.9 already makes 100 times RoBiS' tiles (0.1)


# -- sections ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """The anomaly-map model (``anomaly_model``): ONNX file, map side M, tensor names."""

    file: str
    map_size: int
    input: str = "image"
    output: str = "anomaly_map"
    max_batch: int | None = None  # a model with a fixed batch (e.g. 1) runs that many tiles at a time
    features: str | None = None  # the optional second output (N×C×g×g patch features), for TTT


@dataclass(frozen=True)
class PreprocessSpec:
    """Training-time preprocessing of a tile (``bundle.json`` ``preprocess``)."""

    size: int = 518
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    resize: str = "pil_bilinear_antialias"


@dataclass(frozen=True)
class TilingSpec:
    """Swin-Cropping of frames (``tiling``): window (None: no tiling), overlap, camera frame size."""

    window: int | None = 1024
    overlap: float = 0.1
    frame_hw: tuple[int, int] | None = None


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


@dataclass(frozen=True)
class SamRefineSpec:
    """The ``refine.sam`` section (docs/refine.md)."""

    encoder_file: str
    decoder_file: str
    mode: str = "single"
    top_n: int = 3
    channel_order: str = "bgr_as_rgb"
    mask_threshold: float = 0.0
    fill_holes: bool = True
    external_data: tuple[str, ...] = ()  # the encoder's external weight files, if any


@dataclass(frozen=True)
class TttRefineSpec:
    """The ``refine.ttt`` section: TTT4AS test-time SVM refinement (docs/refine.md)."""

    enabled: bool = True
    percentile: float = 99.0  # peaks of the map above this percentile are anomalous pseudo-labels
    hard_radius: int = 1  # map pixels around each peak also labelled anomalous ("hard" points)
    nominal_stride: int = 8  # nominal pseudo-labels: a regular grid of this step, off the anomalous ones
    svm_c: float = 1.0  # soft-margin C of the linear SVM (hinge loss)
    class_weight: str = "balanced"
    max_iter: int = 1000
    normalize: str = "none"  # "l2": each feature vector (per tile cell) scaled to unit length first
    within_coarse: bool = False  # keep only pixels of the coarse mask (the paper classifies every pixel)
    verdict_from: str = "refined"  # "coarse": pass/fail as the coarse mask decided (min_area_px tuned on it)


@dataclass(frozen=True)
class ReferenceSpec:
    """The parity gate's reference tiles (``reference``)."""

    tiles: tuple[str, ...]
    color: str = "rgb"
    source: str = ""


@dataclass(frozen=True)
class EngineEntry:
    """One ``engines`` item: an engine built on a device for one ``target``, tied to its ONNX file.

    TensorRT (the default target, and every bundle written before targets existed): the engine
    file, TensorRT version and GPU. OpenVINO: the OpenVINO version, the CPU and the instruction set
    the engine relies on, the compile device; ``file`` (an IR .xml, its weights in
    ``weights_file``) only for int8, f32/bf16 being compile hints on the bundle's ONNX."""

    model: str  # anomaly_model | sam_encoder | sam_decoder
    file: str  # the engine, relative to the bundle ("" for OpenVINO f32/bf16: the ONNX is compiled)
    onnx_file: str  # the ONNX file it was built from
    onnx_sha256: str
    precision: str  # the ladder step that passed the parity gate
    tensorrt_version: str = ""
    gpu_name: str = ""
    compute_capability: str = ""
    profiles: int = 1  # optimisation profiles = concurrent execution contexts
    max_batch: int = 1  # the profile's largest first dimension (tiles, or SAM boxes)
    fp32_layers: int = 0  # layers pinned to fp32 (TensorRT) / kept in float (OpenVINO int8)
    parity: dict[str, Any] = field(default_factory=dict)  # the gate's measurements
    built: str = ""  # ISO time
    target: str = "tensorrt"  # BUILD_TARGETS
    openvino_version: str = ""
    cpu_name: str = ""
    isa: str = ""  # CPU_ISAS: what the engine relies on (amx, avx512, avx2...)
    device: str = ""  # OpenVINO device name (CPU, GPU, NPU)
    weights_file: str = ""  # OpenVINO IR weights (.bin) of an int8 engine

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        other = _OPENVINO_KEYS if self.target == "tensorrt" else _TENSORRT_KEYS
        return {k: v for k, v in d.items() if k not in other}


_TENSORRT_KEYS = ("tensorrt_version", "gpu_name", "compute_capability", "profiles")
_OPENVINO_KEYS = ("openvino_version", "cpu_name", "isa", "device", "weights_file")


# -- readers -------------------------------------------------------------------------------------
def check_format(fmt: Any, where: str) -> None:
    """Refuse anything but a ``robis-bundle/1[.minor]`` bundle, with what to do."""
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


def read_name(raw: dict, where: str, default: str) -> str:
    return Section(raw, "", where).text("name", default)


def read_files(raw: dict, where: str) -> dict[str, str]:
    """``files``: relative path inside the bundle → lowercase hex sha256."""
    files = raw.get("files", {})
    if not isinstance(files, dict):
        raise BundleError(f"{where}: 'files' must map relative paths to sha256 (a JSON object)")
    from .fields import is_inside_path

    for rel, digest in files.items():
        if not is_inside_path(rel):
            raise BundleError(f"{where}: files: {rel!r} points outside the bundle (use a relative path "
                              "inside it)")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise BundleError(f"{where}: files[{rel!r}] must be a sha256 (64 lowercase hex digits), "
                              f"got {digest!r}")
    return dict(files)


def read_model(raw: dict, where: str) -> ModelSpec:
    s = Section(raw.get("anomaly_model"), "anomaly_model", where, required=True)
    return ModelSpec(s.relative_path("file"), s.integer("map_size", minimum=1),
                     s.text("input", "image"), s.text("output", "anomaly_map"),
                     s.integer("max_batch", None, minimum=1, nullable=True),
                     s.text("features", None, nullable=True))


def read_preprocess(raw: dict, where: str) -> PreprocessSpec:
    s = Section(raw.get("preprocess"), "preprocess", where)
    mean = s.numbers("mean", 3, list(IMAGENET_MEAN))
    std = s.numbers("std", 3, list(IMAGENET_STD), above=0.0)
    return PreprocessSpec(s.integer("size", 518, minimum=1), mean, std,  # type: ignore[arg-type]
                          s.text("channel_order", "RGB", choices=CHANNEL_ORDERS),
                          s.text("resize", "pil_bilinear_antialias", choices=RESIZE_METHODS))


def read_tiling(raw: dict, where: str) -> TilingSpec:
    s = Section(raw.get("tiling"), "tiling", where)
    window = s.integer("window", 1024, minimum=MIN_WINDOW, nullable=True)
    overlap = s.number("overlap", 0.1, minimum=0.0, maximum=MAX_OVERLAP)
    hw = s.integers("frame_hw", 2, None, minimum=1, nullable=True)
    return TilingSpec(window, overlap, None if hw is None else (hw[0], hw[1]))


def read_binarize(raw: Any, where: str, path: str = "postprocess.binarize") -> BinarizeConfig:
    """A binarisation config from its JSON object (``BinarizeConfig.to_json``'s keys)."""
    s = Section(raw, path, where)
    method = s.text("method", "mebin+meanstd", choices=BINARIZE_METHODS)
    fixed = s.number("fixed_threshold", None, minimum=0.0, maximum=255.0, nullable=True)
    if method == "fixed" and fixed is None:
        raise s.fail("fixed_threshold", "a number on the 0..255 map scale when method is 'fixed'", None)
    mebin = MEBinParams(s.integer("sample_rate", 4, minimum=1, maximum=255),
                        s.integer("min_interval_len", 4, minimum=1),
                        s.integer("erode_kernel", 6, minimum=1, maximum=255))
    return BinarizeConfig(method, mebin, s.number("meanstd_k", 3.0, minimum=0.0), fixed,  # type: ignore[arg-type]
                          s.text("precision", "float16", choices=BINARIZE_PRECISIONS))


def read_morphology(raw: dict, where: str) -> MorphologySpec:
    s = Section(raw.get("postprocess"), "postprocess", where).section("morphology")
    return MorphologySpec(s.integer("closing", 0, minimum=0, maximum=255), s.boolean("fill_holes", False))


def read_map_scale(raw: dict, where: str) -> float | None:
    s = Section(raw.get("postprocess"), "postprocess", where)
    return s.number("map_scale", None, above=0.0, maximum=1.0, nullable=True)


def read_postprocess_binarize(raw: dict, where: str) -> BinarizeConfig:
    s = Section(raw.get("postprocess"), "postprocess", where)
    return read_binarize(s.raw.get("binarize"), where)


def read_verdict(raw: dict, where: str, frame_hw: tuple[int, int] | None = None) -> VerdictSpec:
    s = Section(raw.get("verdict"), "verdict", where)
    roi = s.integers("roi", 4, None, minimum=0, nullable=True)
    if roi is not None:
        x0, y0, x1, y1 = roi
        if x1 <= x0 or y1 <= y0:
            raise s.fail("roi", "[x0, y0, x1, y1] with x1 > x0 and y1 > y0 (frame pixels, exclusive max)",
                         list(roi))
        if frame_hw is not None and (x0 >= frame_hw[1] or y0 >= frame_hw[0]):
            frame = f"{frame_hw[1]}x{frame_hw[0]}"
            raise s.fail("roi", f"a box that overlaps the {frame} frame (tiling.frame_hw)", list(roi))
    return VerdictSpec(s.integer("min_area_px", 0, minimum=0),
                       s.number("score_threshold", None, minimum=0.0, maximum=255.0, nullable=True),
                       roi)  # type: ignore[arg-type]


def read_calibration(raw: Any, where: str, path: str = "calibration") -> Calibration:
    """The frozen statistics (``Calibration.to_json``'s keys), consistent in their order."""
    s = Section(raw, path, where, required=True)
    norm = None
    if "amap_min" in s.raw or "amap_max" in s.raw:
        lo, hi = s.number("amap_min"), s.number("amap_max")
        if hi < lo:
            raise s.fail("amap_max", f"at least amap_min ({lo:g})", hi)
        norm = NormStats(lo, hi)
    th_lo = s.number("mebin_min_th", minimum=0.0, maximum=255.0)
    th_hi = s.number("mebin_max_th", minimum=0.0, maximum=255.0)
    if th_hi < th_lo:
        raise s.fail("mebin_max_th", f"at least mebin_min_th ({th_lo:g})", th_hi)
    n_images = s.integer("n_images", 0, minimum=0)
    bins = BinStats(th_lo, th_hi, s.number("ms_mean", minimum=0.0), s.number("ms_std", minimum=0.0), n_images)
    s.text("scope", "calibrated", choices=("calibrated",))
    return Calibration(norm, bins, n_images, s.integer("n_defective", None, minimum=0, nullable=True),
                       s.text("source", ""), s.text("created", ""))


def read_sam(raw: dict, where: str) -> SamRefineSpec | None:
    """``refine.sam``, or None when the bundle has none."""
    refine = Section(raw.get("refine"), "refine", where)
    if refine.raw.get("sam") is None:
        return None
    s = refine.section("sam")
    enc, dec = s.section("encoder"), s.section("decoder")
    if s.raw.get("connectivity", 8) != 8:
        raise s.fail("connectivity", "8 (RoBiS; the only one supported)", s.raw.get("connectivity"))
    ext = enc.raw.get("external_data", [])
    if not isinstance(ext, list) or not all(isinstance(x, str) for x in ext):
        raise enc.fail("external_data", "a list of relative paths", ext)
    return SamRefineSpec(enc.relative_path("file"), dec.relative_path("file"),
                         s.text("mode", "single", choices=SAM_BUNDLE_MODES),
                         s.integer("top_n", 3, minimum=1),
                         s.text("channel_order", "bgr_as_rgb", choices=SAM_CHANNEL_ORDERS),
                         s.number("mask_threshold", 0.0), s.boolean("fill_holes", True), tuple(ext))


def read_ttt(raw: dict, where: str) -> TttRefineSpec | None:
    """``refine.ttt``, or None when the bundle has none."""
    refine = Section(raw.get("refine"), "refine", where)
    if refine.raw.get("ttt") is None:
        return None
    s = refine.section("ttt")
    d = TttRefineSpec()
    return TttRefineSpec(s.boolean("enabled", d.enabled),
                         s.number("percentile", d.percentile, minimum=50.0, below=100.0),
                         s.integer("hard_radius", d.hard_radius, minimum=0, maximum=64),
                         s.integer("nominal_stride", d.nominal_stride, minimum=1),
                         s.number("svm_c", d.svm_c, above=0.0),
                         s.text("class_weight", d.class_weight, choices=TTT_CLASS_WEIGHTS),
                         s.integer("max_iter", d.max_iter, minimum=1),
                         s.text("normalize", d.normalize, choices=TTT_NORMALIZE),
                         s.boolean("within_coarse", d.within_coarse),
                         s.text("verdict_from", d.verdict_from, choices=TTT_VERDICT_FROM))


def read_reference(raw: dict, where: str) -> ReferenceSpec | None:
    if raw.get("reference") is None:
        return None
    s = Section(raw.get("reference"), "reference", where)
    tiles = s.raw.get("tiles", [])
    from .fields import is_inside_path

    if not isinstance(tiles, list) or not all(is_inside_path(t) for t in tiles):
        raise s.fail("tiles", "a list of relative paths inside the bundle", tiles)
    return ReferenceSpec(tuple(tiles), s.text("color", "rgb", choices=REFERENCE_COLORS), s.text("source", ""))


def read_engines(raw: dict, where: str) -> list[EngineEntry]:
    items = raw.get("engines", [])
    if not isinstance(items, list):
        raise BundleError(f"{where}: 'engines' must be a list")
    out = []
    for i, d in enumerate(items):
        if isinstance(d, dict) and isinstance(d.get("model"), str) and d["model"] not in MODEL_ROLES:
            raise BundleError(f"{where}: engines[{i}] is for unknown model {d['model']!r} (known: "
                              f"{', '.join(MODEL_ROLES)})")
        try:
            out.append(_read_engine(Section(d, f"engines[{i}]", where, required=True)))
        except BundleError as exc:
            raise BundleError(f"malformed 'engines' item: {exc}; rebuild it with `robis-edge build`") \
                from None
    return out


def _read_engine(s: Section) -> EngineEntry:
    parity = s.raw.get("parity", {})
    if not isinstance(parity, dict):
        raise s.fail("parity", "a JSON object", parity)
    target = s.text("target", "tensorrt", choices=BUILD_TARGETS)
    common = dict(model=s.text("model", choices=MODEL_ROLES), onnx_file=s.relative_path("onnx_file"),
                  onnx_sha256=s.text("onnx_sha256"), max_batch=s.integer("max_batch", 1, minimum=1),
                  fp32_layers=s.integer("fp32_layers", 0, minimum=0), parity=dict(parity),
                  built=s.text("built", ""), target=target)
    if target == "tensorrt":
        return EngineEntry(file=s.relative_path("file"), precision=s.text("precision"),
                           tensorrt_version=s.text("tensorrt_version"), gpu_name=s.text("gpu_name"),
                           compute_capability=s.text("compute_capability"),
                           profiles=s.integer("profiles", 1, minimum=1), **common)
    precision = s.text("precision", choices=tuple(p for p in OPENVINO_PRECISIONS if p != "auto"))
    file = s.relative_path("file") if s.raw.get("file") else ""
    weights = s.relative_path("weights_file") if s.raw.get("weights_file") else ""
    if precision == "int8" and not (file and weights):
        raise s.fail("file", "an OpenVINO IR (.xml, with its weights_file .bin) for an int8 engine",
                     s.raw.get("file"))
    return EngineEntry(file=file, precision=precision, openvino_version=s.text("openvino_version"),
                       cpu_name=s.text("cpu_name"), isa=s.text("isa", choices=CPU_ISAS),
                       device=s.text("device", "CPU", choices=OPENVINO_DEVICES), weights_file=weights,
                       **common)


def read_provenance(raw: dict, where: str) -> dict[str, Any]:
    return dict(Section(raw.get("provenance"), "provenance", where).raw)


def validate(raw: Any, where: str) -> None:
    """Read every section once: a bundle that loads is a bundle every reader can use."""
    if not isinstance(raw, dict):
        raise BundleError(f"{where}: top level must be a JSON object")
    check_format(raw.get("format"), where)
    read_name(raw, where, "")
    read_files(raw, where)
    read_model(raw, where)
    read_preprocess(raw, where)
    tiling = read_tiling(raw, where)
    read_postprocess_binarize(raw, where)
    read_morphology(raw, where)
    read_map_scale(raw, where)
    read_verdict(raw, where, tiling.frame_hw)
    if raw.get("calibration") is not None:
        read_calibration(raw["calibration"], where)
    read_sam(raw, where)
    ttt = read_ttt(raw, where)
    if ttt is not None and read_model(raw, where).features is None:
        raise BundleError(f"{where}: refine.ttt needs 'anomaly_model.features' (a model exported with "
                          "`robis-edge export inpformer --features`)")
    read_reference(raw, where)
    read_engines(raw, where)
    read_provenance(raw, where)


def model_files(raw: dict, where: str) -> list[str]:
    """The bundle-relative files of every model and reference tile the bundle names."""
    out = [read_model(raw, where).file]
    sam = read_sam(raw, where)
    if sam is not None:
        out += [sam.encoder_file, sam.decoder_file]
    ref = read_reference(raw, where)
    if ref is not None:
        out += list(ref.tiles)
    return out
