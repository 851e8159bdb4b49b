"""The wire protocol (edge_runtime/protocol.py) and the overload queue, without sockets."""

from __future__ import annotations

import json
import struct

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime import protocol as P
from edge_runtime.work_queue import CLOSED, WorkQueue

RESULT_KEYS = {"v", "camera", "seq", "ts_ns", "verdict", "score", "regions", "mask", "timings_ms", "model",
               "error"}


def _img(shape, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == np.uint8 else 65535
    return rng.integers(0, hi, shape, endpoint=True).astype(dtype)


def _roundtrip(parts):
    h = P.parse_frame_header(parts)
    return h, P.decode_pixels(h, parts[2])


@pytest.mark.parametrize("shape,dtype,color", [((30, 40), np.uint8, "gray"), ((30, 40), np.uint16, "gray"),
                                               ((30, 40, 3), np.uint8, "bgr"),
                                               ((30, 40, 3), np.uint16, "rgb")])
def test_raw_roundtrip_is_exact(shape, dtype, color):
    img = _img(shape, dtype)
    parts = P.encode_frame("cam0", 7, img, color=color, ts_ns=123, product="p1")
    assert parts[0] == b"frame.cam0"
    assert len(parts[2]) == img.nbytes
    h, out = _roundtrip(parts)
    assert (h.camera, h.seq, h.ts_ns, h.encoding, h.color, h.product) == ("cam0", 7, 123, "raw", color, "p1")
    assert h.shape == shape and h.dtype == np.dtype(dtype).name
    np.testing.assert_array_equal(out, img)
    assert P.pipeline_color(h) == color


def test_raw_uint16_is_little_endian_and_single_channel_is_squeezed():
    img = np.array([[1, 256]], np.uint16)
    parts = P.encode_frame("c", 0, img)
    assert parts[2] == b"\x01\x00\x00\x01"
    hdr = json.loads(parts[1])
    hdr["shape"] = [1, 2, 1]
    h, out = _roundtrip([parts[0], json.dumps(hdr).encode(), parts[2]])
    assert out.shape == (1, 2)


@pytest.mark.parametrize("shape,dtype", [((30, 40), np.uint8), ((30, 40), np.uint16),
                                         ((30, 40, 3), np.uint8)])
def test_png_roundtrip_is_exact(shape, dtype):
    img = _img(shape, dtype)
    h, out = _roundtrip(P.encode_frame("cam0", 1, img, encoding="png"))
    np.testing.assert_array_equal(out, img)
    assert out.dtype == dtype


def test_rgb_frames_become_standard_colour_files():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red
    parts = P.encode_frame("cam0", 1, rgb, color="rgb", encoding="png")
    on_disk = cv2.imdecode(np.frombuffer(parts[2], np.uint8), cv2.IMREAD_UNCHANGED)  # BGR
    assert on_disk[0, 0].tolist() == [0, 0, 200]
    h, out = _roundtrip(parts)
    assert P.pipeline_color(h) == "bgr"  # decoded files are in OpenCV's order, whatever 'color' said
    np.testing.assert_array_equal(out[..., ::-1], rgb)


def test_jpeg_decodes_close_to_the_original():
    img = np.full((40, 48), 120, np.uint8)
    h, out = _roundtrip(P.encode_frame("cam0", 1, img, encoding="jpeg"))
    assert out.shape == img.shape and np.abs(out.astype(int) - 120).max() <= 2
    assert P._encoded_dims(P.encode_frame("c", 1, _img((33, 57, 3)), encoding="jpeg")[2], "jpeg") == (57, 33)


def _mutate(header: dict | None = None, *, topic=b"frame.cam0", payload=None, drop=(), raw_header=None,
            base_encoding="raw", shape=(10, 12)):
    parts = P.encode_frame("cam0", 5, _img(shape), encoding=base_encoding, ts_ns=99)
    h = json.loads(parts[1])
    for k in drop:
        h.pop(k)
    h.update(header or {})
    return [topic, raw_header if raw_header is not None else json.dumps(h).encode(),
            parts[2] if payload is None else payload]


CASES = {
    "not json": (_mutate(raw_header=b"{nope"), "bad_header"),
    "not utf-8": (_mutate(raw_header=b"\xff\xfe"), "bad_header"),
    "json list": (_mutate(raw_header=b"[1, 2]"), "bad_header"),
    "wrong version": (_mutate({"v": 2}), "bad_header"),
    "version as bool": (_mutate({"v": True}), "bad_header"),
    "no camera": (_mutate(drop=["camera"]), "bad_header"),
    "camera not str": (_mutate({"camera": 5}), "bad_header"),
    "camera differs from topic": (_mutate({"camera": "cam1"}), "bad_header"),
    "bad topic": (_mutate(topic=b"frames/cam0"), "bad_header"),
    "non-ascii topic": (_mutate(topic=b"frame.\xc3\xa9"), "bad_header"),
    "seq missing": (_mutate(drop=["seq"]), "bad_header"),
    "seq string": (_mutate({"seq": "5"}), "bad_header"),
    "seq negative": (_mutate({"seq": -1}), "bad_header"),
    "ts float": (_mutate({"ts_ns": 1.5}), "bad_header"),
    "encoding number": (_mutate({"encoding": 3}), "bad_header"),
    "encoding unknown": (_mutate({"encoding": "webp"}), "unsupported_encoding"),
    "dtype unknown": (_mutate({"dtype": "float32"}), "unsupported_encoding"),
    "dtype missing for raw": (_mutate(drop=["dtype"]), "bad_header"),
    "shape missing for raw": (_mutate(drop=["shape"]), "bad_header"),
    "shape wrong type": (_mutate({"shape": "10x12"}), "bad_header"),
    "shape zero": (_mutate({"shape": [0, 12]}), "bad_header"),
    "shape 4 channels": (_mutate({"shape": [10, 3, 4]}), "bad_header"),
    "color unknown": (_mutate({"color": "yuv"}), "bad_header"),
    "color does not fit shape": (_mutate({"color": "bgr"}), "bad_header"),
    "product not str": (_mutate({"product": 3}), "bad_header"),
    "empty payload": (_mutate(payload=b""), "size_mismatch"),
    "truncated raw": (_mutate(payload=b"\0" * 119), "size_mismatch"),
    "oversized raw": (_mutate(payload=b"\0" * 121), "size_mismatch"),
    "shape/colour mismatch raw": (_mutate({"shape": [12, 10, 3]}), "bad_header"),
    "shape mismatch raw": (_mutate({"shape": [12, 11]}), "size_mismatch"),
    "uint16 declared for uint8 bytes": (_mutate({"dtype": "uint16"}), "size_mismatch"),
    "corrupt png": (_mutate({"encoding": "png"}, payload=b"\x89PNG\r\n\x1a\n" + b"\0" * 40), "decode_failed"),
    "not a png": (_mutate({"encoding": "png"}, payload=b"hello world"), "decode_failed"),
    "corrupt jpeg": (_mutate({"encoding": "jpeg"}, payload=b"\xff\xd8\xff\xe0garbage"), "decode_failed"),
    "png shape mismatch": (_mutate({"shape": [11, 12]}, base_encoding="png"), "size_mismatch"),
    "png dtype mismatch": (_mutate({"dtype": "uint16"}, base_encoding="png"), "size_mismatch"),
    "png colour but gray header": (_mutate({"shape": [10, 12, 3], "color": "bgr"}, base_encoding="png"),
                                   "size_mismatch"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_malformed_frame_has_its_code(name):
    parts, code = CASES[name]
    with pytest.raises(P.ProtocolError) as exc:
        _roundtrip(parts)
    assert exc.value.code == code, exc.value.message
    assert exc.value.message


def test_truncated_png_and_ident_of_errors():
    parts = P.encode_frame("cam3", 42, _img((64, 64)), encoding="png", ts_ns=7)
    with pytest.raises(P.ProtocolError) as exc:
        _roundtrip([parts[0], parts[1], parts[2][: len(parts[2]) // 2]])
    assert exc.value.code == "decode_failed"
    assert exc.value.ident == {"camera": "cam3", "seq": 42, "ts_ns": 7}
    with pytest.raises(P.ProtocolError) as exc:  # wrong part count: still what can be read
        P.parse_frame_header(parts[:2])
    assert exc.value.code == "bad_header" and exc.value.ident["seq"] == 42
    with pytest.raises(P.ProtocolError) as exc:
        P.parse_frame_header(parts + [b"x"])
    assert exc.value.code == "bad_header"


def test_payload_limit_and_decompression_bomb():
    parts = P.encode_frame("c", 1, _img((10, 12)))
    with pytest.raises(P.ProtocolError, match="exceeds") as exc:
        P.parse_frame_header(parts, max_payload=100)
    assert exc.value.code == "size_mismatch"
    # A PNG whose IHDR claims 100000×100000 pixels is refused before decoding.
    png = P.encode_frame("c", 1, _img((4, 4)), encoding="png")
    data = bytearray(png[2])
    data[16:24] = struct.pack(">II", 100000, 100000)
    hdr = json.loads(png[1])
    hdr.pop("shape")
    h = P.parse_frame_header([png[0], json.dumps(hdr).encode(), bytes(data)])
    with pytest.raises(P.ProtocolError) as exc:
        P.decode_pixels(h, bytes(data), max_payload=1 << 20)
    assert exc.value.code == "size_mismatch"


def test_png_without_shape_and_alpha_channel():
    bgra = np.dstack([_img((9, 7, 3)), np.full((9, 7), 255, np.uint8)])
    ok, buf = cv2.imencode(".png", bgra)
    hdr = {"v": 1, "camera": "c", "seq": 0, "ts_ns": 0, "encoding": "png", "color": "bgr"}
    h = P.parse_frame_header([b"frame.c", json.dumps(hdr).encode(), buf.tobytes()])
    np.testing.assert_array_equal(P.decode_pixels(h, buf.tobytes()), bgra[..., :3])


def test_result_header_has_exactly_the_protocol_fields_and_mask_roundtrips():
    mask = np.zeros((20, 30), np.uint8)
    mask[5:9, 3:12] = 255
    h = P.result_header({"camera": "cam0", "seq": 3, "ts_ns": 9}, verdict="fail", score=np.float32(12.34567),
                        regions=[{"bbox": [1, 2, 3, 4], "area_px": 5, "max": 1.0, "mean": 0.5}],
                        mask={"shape": [20, 30], "encoding": "png", "scale": 0.25},
                        timings_ms={"infer": np.float64(1.23456)}, model={"bundle": "b", "hash": "abc"})
    parts = P.encode_result(h, P.encode_mask_png(mask))
    assert parts[0] == b"result.cam0"
    got, m = P.decode_result(parts)
    assert set(got) == RESULT_KEYS
    assert got["score"] == 12.3457 and got["timings_ms"] == {"infer": 1.235} and got["error"] is None
    np.testing.assert_array_equal(m, mask)
    err, m = P.decode_result(P.error_result({}, "internal", "boom"))
    assert set(err) == RESULT_KEYS and m is None
    assert err["verdict"] == "error" and err["error"] == {"code": "internal", "message": "boom"}
    assert P.error_result({}, "internal", "x")[0] == b"result."


def test_peek_ident_never_raises():
    assert P.peek_ident([]) == {}
    assert P.peek_ident([b"frame.a"]) == {"camera": "a"}
    assert P.peek_ident([b"x", b'{"camera": "b", "seq": 4, "ts_ns": "no"}']) == {"camera": "b", "seq": 4}
    assert P.peek_ident([b"frame.a", b"\xff"]) == {"camera": "a"}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=5),
       st.dictionaries(st.sampled_from(["v", "camera", "seq", "ts_ns", "encoding", "shape", "dtype", "color",
                                        "product"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-3, 70), st.text(max_size=8),
                                 st.lists(st.integers(-1, 9), max_size=4)), max_size=9))
def test_fuzzed_messages_only_raise_protocol_errors(parts, header):
    for msg in (parts, [b"frame.cam0", json.dumps(header).encode(), b"\0" * 12]):
        try:
            h = P.parse_frame_header(msg, max_payload=1 << 16)
            P.decode_pixels(h, msg[2], max_payload=1 << 16)
        except P.ProtocolError as exc:
            assert exc.code in P.ERROR_CODES


# -- the overload queue ------------------------------------------------------------------------
def test_queue_policy_drops_the_oldest():
    q = WorkQueue(3, "queue")
    assert [q.put(i, key="a") for i in range(3)] == [[], [], []]
    assert q.put(3, key="b") == [0]
    assert [q.get(0) for _ in range(3)] == [1, 2, 3]
    assert q.get(0.01) is None


def test_latest_policy_keeps_the_newest_frame_of_each_camera():
    q = WorkQueue(4, "latest")
    assert q.put("a0", key="a") == []
    assert q.put("b0", key="b") == []
    assert q.put("a1", key="a") == ["a0"]
    assert q.put("a2", key="a") == ["a1"]
    assert len(q) == 2
    assert [q.get(0), q.get(0)] == ["b0", "a2"]
    small = WorkQueue(1, "latest")
    small.put("a", key="a")
    assert small.put("b", key="b") == ["a"]  # still bounded across cameras


def test_closed_queue_drains_then_reports_closed():
    q = WorkQueue(2, "queue")
    q.put(1)
    q.close()
    assert q.put(2) == [2]  # refused after close: the caller answers it
    assert q.get(0) == 1
    assert q.get(0) is CLOSED
    with pytest.raises(ValueError):
        WorkQueue(0, "queue")
    with pytest.raises(ValueError):
        WorkQueue(1, "lifo")
