"""The wire protocol, version 1 (docs/protocol.md): camera frames in, results out.

Pure functions over bytes and numpy arrays; no sockets. Every message is a ZeroMQ multipart
message of exactly three frames: topic, UTF-8 JSON header, payload.

Decoding never raises anything but :class:`ProtocolError`, whose ``code`` is one of
:data:`ERROR_CODES` and whose ``ident`` carries whatever of camera/seq/ts_ns could be read, so
that the service can still answer a malformed frame with an ``error`` result.
"""

from __future__ import annotations

import json
import math
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from sdk.errors import RobisError
from sdk.vocabulary import COLORS, is_valid_name

VERSION = 1
FRAME_PREFIX = b"frame."
RESULT_PREFIX = b"result."
ENCODINGS = ("raw", "png", "jpeg")
DTYPES = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2")}  # raw uint16 is little-endian
VERDICTS = ("pass", "fail", "error")
ERROR_CODES = ("bad_header", "unsupported_encoding", "size_mismatch", "decode_failed", "unknown_product",
               "overloaded", "internal")
MAX_HEADER_BYTES = 64 * 1024
MAX_TOPIC_BYTES = 256
DEFAULT_MAX_PAYLOAD = 128 * 1024 * 1024


class ProtocolError(RobisError):
    """A message that does not follow the protocol. ``code`` (one of :data:`ERROR_CODES`, given to
    each error) is the result's ``error.code``."""

    code = "bad_header"  # the class's own; every instance is given its code

    def __init__(self, code: str, message: str, ident: dict | None = None) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.ident = ident or {}


@dataclass(frozen=True)
class FrameHeader:
    """A validated frame header."""

    camera: str
    seq: int
    ts_ns: int
    encoding: str
    color: str
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    product: str | None = None
    extra: dict = field(default_factory=dict, compare=False)  # unknown keys, kept for logging

    def ident(self) -> dict:
        return {"camera": self.camera, "seq": self.seq, "ts_ns": self.ts_ns}

    def to_json(self) -> dict:
        d: dict[str, Any] = {"v": VERSION, "camera": self.camera, "seq": self.seq, "ts_ns": self.ts_ns,
                             "encoding": self.encoding, "color": self.color}
        if self.shape is not None:
            d["shape"] = list(self.shape)
        if self.dtype is not None:
            d["dtype"] = self.dtype
        if self.product is not None:
            d["product"] = self.product
        return d


# -- small helpers ---------------------------------------------------------------------------
def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def camera_from_topic(topic: bytes, prefix: bytes = FRAME_PREFIX) -> str | None:
    """``cam0`` from ``b"frame.cam0"``; None when the topic is not of that form."""
    if not isinstance(topic, (bytes, bytearray, memoryview)):
        return None
    topic = bytes(topic)
    if len(topic) > MAX_TOPIC_BYTES or not topic.startswith(prefix):
        return None
    try:
        name = topic[len(prefix):].decode("ascii")
    except UnicodeDecodeError:
        return None
    return name if is_valid_name(name) else None


def peek_ident(parts: list) -> dict:
    """Best-effort camera/seq/ts_ns of a message, without validating it (never raises)."""
    ident: dict[str, Any] = {}
    if not parts:
        return ident
    cam = camera_from_topic(parts[0])
    if cam is not None:
        ident["camera"] = cam
    if len(parts) >= 2:
        try:
            raw = bytes(parts[1])
            h = json.loads(raw) if len(raw) <= MAX_HEADER_BYTES else None
        except (ValueError, TypeError):
            h = None
        if isinstance(h, dict):
            if is_valid_name(h.get("camera")):
                ident["camera"] = h["camera"]
            for k in ("seq", "ts_ns"):
                if _is_int(h.get(k)):
                    ident[k] = h[k]
    return ident


# -- frames in --------------------------------------------------------------------------------
def parse_frame_header(parts: list, max_payload: int = DEFAULT_MAX_PAYLOAD) -> FrameHeader:
    """Validate the envelope and header of a frame message (not the pixels)."""
    if len(parts) != 3:
        raise ProtocolError("bad_header", f"a frame message has 3 parts (topic, header, payload), got "
                            f"{len(parts)}", peek_ident(parts))
    topic, raw_header = (bytes(p) for p in parts[:2])
    payload = parts[2]
    ident = peek_ident(parts)
    topic_cam = camera_from_topic(topic)
    if topic_cam is None:
        raise ProtocolError("bad_header", f"topic must be 'frame.<camera>' (printable ASCII), got "
                            f"{topic[:64]!r}", ident)
    if len(raw_header) > MAX_HEADER_BYTES:
        raise ProtocolError("bad_header", f"header is {len(raw_header)} bytes (at most {MAX_HEADER_BYTES})",
                            ident)
    try:
        h = json.loads(raw_header.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("bad_header", f"header is not UTF-8 JSON ({exc})", ident) from None
    if not isinstance(h, dict):
        raise ProtocolError("bad_header", f"header must be a JSON object, got {type(h).__name__}", ident)

    def bad(msg: str, code: str = "bad_header") -> ProtocolError:
        return ProtocolError(code, msg, ident)

    if h.get("v") != VERSION or not _is_int(h.get("v")):
        raise bad(f"unsupported protocol version v={h.get('v')!r} (this runtime speaks v={VERSION})")
    camera = h.get("camera")
    if not is_valid_name(camera):
        raise bad(f"'camera' must be a non-empty printable ASCII string without spaces, got {camera!r}")
    if camera != topic_cam:
        raise bad(f"topic camera {topic_cam!r} differs from header camera {camera!r}")
    for k in ("seq", "ts_ns"):
        if not _is_int(h.get(k)) or h[k] < 0:
            raise bad(f"'{k}' must be a non-negative integer, got {h.get(k)!r}")
    encoding = h.get("encoding")
    if not isinstance(encoding, str):
        raise bad(f"'encoding' must be a string ({', '.join(ENCODINGS)}), got {encoding!r}")
    if encoding not in ENCODINGS:
        raise bad(f"encoding {encoding[:32]!r} is not supported (use {', '.join(ENCODINGS)})",
                  "unsupported_encoding")
    color = h.get("color")
    if color not in COLORS:
        raise bad(f"'color' must be one of {', '.join(COLORS)}, got {color!r}")
    shape = h.get("shape")
    if shape is not None or encoding == "raw":
        if (not isinstance(shape, list) or len(shape) not in (2, 3)
                or not all(_is_int(d) and d > 0 for d in shape)):
            raise bad(f"'shape' must be [H, W] or [H, W, C] of positive integers"
                      f"{' (required for raw)' if encoding == 'raw' else ''}, got {shape!r}")
        channels = shape[2] if len(shape) == 3 else 1
        if channels not in (1, 3):
            raise bad(f"frames have 1 or 3 channels, shape {shape} has {channels}")
        if (color == "gray") != (channels == 1):
            raise bad(f"color {color!r} does not fit shape {shape} ({channels} channel(s))")
        shape = tuple(shape)
    dtype = h.get("dtype")
    if dtype is not None or encoding == "raw":
        if not isinstance(dtype, str):
            need = " (required for raw)" if encoding == "raw" else ""
            raise bad(f"'dtype' must be 'uint8' or 'uint16'{need}, got {dtype!r}")
        if dtype not in DTYPES:
            raise bad(f"dtype {dtype[:32]!r} is not supported (uint8 or uint16)", "unsupported_encoding")
    product = h.get("product")
    if product is not None and not is_valid_name(product):
        raise bad(f"'product' must be a non-empty printable ASCII string without spaces, got {product!r}")
    n = len(payload) if not isinstance(payload, memoryview) else payload.nbytes
    if n > max_payload:
        raise bad(f"payload of {n} bytes exceeds the limit of {max_payload} bytes (--max-payload-mb)",
                  "size_mismatch")
    if n == 0:
        raise bad("empty payload", "size_mismatch")
    known = {"v", "camera", "seq", "ts_ns", "encoding", "shape", "dtype", "color", "product"}
    return FrameHeader(camera, h["seq"], h["ts_ns"], encoding, color, shape, dtype, product,
                       {k: v for k, v in h.items() if k not in known})


def _encoded_dims(data: bytes, encoding: str) -> tuple[int, int] | None:
    """(width, height) from a PNG IHDR or a JPEG SOF marker, without decoding; None if not found."""
    if encoding == "png":
        if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        return None
    i = 2 if data[:2] == b"\xff\xd8" else len(data)
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + seg
    return None


def decode_pixels(header: FrameHeader, payload, max_payload: int = DEFAULT_MAX_PAYLOAD) -> np.ndarray:
    """The frame as an array: H×W or H×W×3, uint8/uint16. For raw frames a read-only view of the
    payload (no copy). PNG/JPEG files are decoded as OpenCV does (colour → BGR order)."""
    ident = header.ident()
    buf = memoryview(payload).cast("B") if not isinstance(payload, bytes) else payload
    if header.encoding == "raw":
        dt = DTYPES[header.dtype]
        expected = math.prod(header.shape) * dt.itemsize
        if len(buf) != expected:
            raise ProtocolError("size_mismatch", f"raw payload is {len(buf)} bytes, shape "
                                f"{list(header.shape)} {header.dtype} needs {expected}", ident)
        img = np.frombuffer(buf, dtype=dt).reshape(header.shape)
        return img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img
    data = bytes(buf)
    dims = _encoded_dims(data, header.encoding)
    if dims is None:
        raise ProtocolError("decode_failed", f"payload is not a {header.encoding.upper()} file", ident)
    w, h = dims
    if w * h > max_payload:  # a bound on the decoded size before decoding: no decompression bombs
        raise ProtocolError("size_mismatch", f"{header.encoding} image of {w}x{h} pixels exceeds the "
                            f"limit of {max_payload} pixels (--max-payload-mb)", ident)
    if header.shape is not None and (h, w) != tuple(header.shape[:2]):
        raise ProtocolError("size_mismatch", f"{header.encoding} image is {h}x{w}, header shape is "
                            f"{list(header.shape)}", ident)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ProtocolError("decode_failed", f"{header.encoding} payload cannot be decoded: {exc}",
                            ident) from None
    if img is None or img.size == 0:
        raise ProtocolError("decode_failed", f"{header.encoding} payload is corrupt or truncated", ident)
    if img.dtype not in (np.uint8, np.uint16):
        raise ProtocolError("decode_failed", f"{header.encoding} decodes to {img.dtype} (8/16-bit only)",
                            ident)
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif img.ndim == 3 and img.shape[2] in (1, 2):  # gray, gray + alpha
        img = img[:, :, 0]
    channels = 1 if img.ndim == 2 else img.shape[2]
    if header.shape is not None:
        want = header.shape[2] if len(header.shape) == 3 else 1
        if want != channels:
            raise ProtocolError("size_mismatch", f"{header.encoding} image has {channels} channel(s), header "
                                f"shape is {list(header.shape)}", ident)
    if (header.color == "gray") != (channels == 1):
        raise ProtocolError("size_mismatch", f"{header.encoding} image has {channels} channel(s) but color "
                            f"is {header.color!r}", ident)
    if header.dtype is not None and img.dtype != DTYPES[header.dtype]:
        raise ProtocolError("size_mismatch", f"{header.encoding} image is {img.dtype}, header dtype is "
                            f"{header.dtype}", ident)
    return img


def pipeline_color(header: FrameHeader) -> str:
    """The colour order to hand the pipeline: raw frames are as the header says; decoded colour
    PNG/JPEG files are in OpenCV's BGR order (the files themselves hold RGB, as the formats say)."""
    if header.encoding == "raw" or header.color == "gray":
        return header.color
    return "bgr"


def encode_frame(camera: str, seq: int, image: np.ndarray, *, color: str | None = None,
                 encoding: str = "raw", ts_ns: int | None = None, product: str | None = None,
                 jpeg_quality: int = 95, png_compression: int = 1) -> list[bytes]:
    """A frame message. ``image`` is H×W (gray) or H×W×3 in ``color`` order (default: gray for one
    channel, bgr for three); for png/jpeg an rgb image is written as a standard colour file."""
    if not is_valid_name(camera):
        raise ValueError(f"invalid camera name {camera!r}")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}")
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    channels = 1 if img.ndim == 2 else img.shape[2]
    color = color or ("gray" if channels == 1 else "bgr")
    if img.dtype.name not in DTYPES:
        raise ValueError(f"frames are uint8 or uint16, got {img.dtype}")
    header = {"v": VERSION, "camera": camera, "seq": int(seq),
              "ts_ns": int(time.time_ns() if ts_ns is None else ts_ns), "encoding": encoding,
              "shape": list(img.shape), "dtype": img.dtype.name, "color": color}
    if product is not None:
        header["product"] = product
    if encoding == "raw":
        payload = np.ascontiguousarray(img, dtype=DTYPES[img.dtype.name]).tobytes()
    else:
        out = img[:, :, ::-1] if color == "rgb" and channels == 3 else img  # files hold standard RGB
        if encoding == "jpeg":
            if img.dtype != np.uint8:
                raise ValueError("JPEG frames must be uint8")
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        else:
            ok, buf = cv2.imencode(".png", out, [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)])
        if not ok:
            raise ValueError(f"cannot encode the frame as {encoding}")
        payload = buf.tobytes()
    return [FRAME_PREFIX + camera.encode("ascii"), json.dumps(header).encode("utf-8"), payload]


# -- results out ------------------------------------------------------------------------------
def encode_mask_png(mask: np.ndarray) -> bytes:
    """A 0/255 mask as a PNG (fast compression: masks are mostly zeros)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(mask, dtype=np.uint8),
                           [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("cannot encode the mask as PNG")
    return buf.tobytes()


def result_header(ident: dict, *, verdict: str, score: float | None = None, regions: list | None = None,
                  mask: dict | None = None, timings_ms: dict | None = None, model: dict | None = None,
                  error: dict | None = None) -> dict:
    """The JSON header of a result, with exactly the fields of the protocol."""
    assert verdict in VERDICTS, verdict
    return {"v": VERSION, "camera": ident.get("camera"), "seq": ident.get("seq"), "ts_ns": ident.get("ts_ns"),
            "verdict": verdict, "score": None if score is None else round(float(score), 4),
            "regions": regions or [], "mask": mask,
            "timings_ms": {k: round(float(v), 3) for k, v in (timings_ms or {}).items()},
            "model": model, "error": error}


def error_result(ident: dict, code: str, message: str, *, timings_ms: dict | None = None,
                 model: dict | None = None) -> list[bytes]:
    """An ``error`` result message."""
    assert code in ERROR_CODES, code
    h = result_header(ident, verdict="error", timings_ms=timings_ms, model=model,
                      error={"code": code, "message": message[:1000]})
    return encode_result(h, b"")


def result_topic(camera: str | None) -> bytes:
    """``result.<camera>``; ``result.`` when the camera could not be read."""
    return RESULT_PREFIX + (camera.encode("ascii") if camera else b"")


def encode_result(header: dict, mask_png: bytes = b"") -> list[bytes]:
    return [result_topic(header.get("camera")), json.dumps(header, separators=(",", ":")).encode("utf-8"),
            mask_png]


def decode_result(parts: list) -> tuple[dict, np.ndarray | None]:
    """(header, mask or None) of a result message; raises ProtocolError on a malformed one."""
    if len(parts) != 3:
        raise ProtocolError("bad_header", f"a result message has 3 parts, got {len(parts)}")
    try:
        h = json.loads(bytes(parts[1]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("bad_header", f"result header is not UTF-8 JSON ({exc})") from None
    if not isinstance(h, dict) or h.get("v") != VERSION or h.get("verdict") not in VERDICTS:
        raise ProtocolError("bad_header", "not a v1 result header")
    payload = bytes(parts[2])
    if not payload:
        return h, None
    mask = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ProtocolError("decode_failed", "result mask is not a PNG")
    return h, mask
